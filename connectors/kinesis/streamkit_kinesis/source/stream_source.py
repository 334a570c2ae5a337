"""A Kinesis stream as a :class:`~streamkit.streaming.contracts.ReplayableSource`.

The KCL-style consumer (:class:`~streamkit_kinesis.consumer.KinesisConsumer`: DynamoDB
leases in the table ``app_name``, parents before children, expired iterators, throttling)
runs with a record processor that queues each shard's records for the engine; a
micro-batch is decoded with one decoder call. Offsets: per shard id, the sequence number of
the last record included, or ``SHARD_END``. Exactly-once, step by step:

1. ``open(offsets)``: the query's checkpoint is authoritative. Before the consumer starts,
   each shard in ``offsets`` gets its lease checkpoint set to its offset
   (:func:`~.alignment.align_leases`), so the consumer resumes right AFTER it. Other
   shards start from their lease checkpoint, or the initial position for a new lease.
2. ``next_batch``: records in shard order; a re-read (after a lease was re-taken) at or
   before what was already handed out is dropped.
3. ``commit(offsets)`` (after the engine's commit log): only now may lease checkpoints
   advance, and at most once per shard per ``checkpoint_interval`` (default 60 s, counted
   from the shard's start, where lease and query agree): the lease checkpoint lags the
   query's by up to that, which loses nothing, because step 1 moves it forward to the
   query's offsets at the next start (a crash, a kill -9). A graceful stop writes every
   shard's last committed offset before its lease is released. A closed shard is
   checkpointed at SHARD_END only once all its records are committed (not coalesced), so
   its children never start ahead of the query.

``end_offsets`` (``available_now``, ``process_all_available``) returns, per shard, an end
that the consumer's own polling readers find as they read (:mod:`.tip_watch`: the record
before the first one that arrived after the call's cut time, or the last one before a
read sent after the call that comes back empty and caught up), so the backlog is read
once; ``reached`` compares with it once found. ``stop_at`` (the query ends there) drops
what comes after the ends. With Enhanced Fan-Out the same rules apply, the empty read
being a tip probe of the fan-out reader (:mod:`~streamkit_kinesis.retrieval.fanout`).

``initial_position="LATEST"`` means: records put after :meth:`KinesisStreamSource.open`
began (see :func:`~.options.pin_latest`).

One streaming query per ``app_name``: the lease table mirrors that query's checkpoint.
A query takes the source's owner leases at start (:mod:`.query_owner`): a second live
query on the app name with another checkpoint folder, or a second live process with the
same worker id, is refused before anything is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from streamkit.config import AwsEndpoint
from streamkit.errors import ConfigError, PlanError
from streamkit.streaming.contracts import Offsets, PartitionProgress, SourceBatch
from streamkit.streaming.decode import Decoder, JsonDecoder, OnBadRecord, read_only
from streamkit.streaming.sources.base import SourceBase
from streamkit.streaming.watermarks import rows_by_partition
from streamkit_kinesis.consumer import InitialPosition, KinesisConsumer
from streamkit_kinesis.consumer.config import default_worker_id
from streamkit_kinesis.source.alignment import Alignment
from streamkit_kinesis.source.batch import batch_progress, declared_shards, decode_taken, stalled
from streamkit_kinesis.source.buffers import ShardBuffers
from streamkit_kinesis.source.cut_time import SKEW
from streamkit_kinesis.source.errors import KinesisSourceError
from streamkit_kinesis.source.health import TrackedFetchers
from streamkit_kinesis.source.lease_checkpoints import CHECKPOINT_INTERVAL, LeaseCheckpoints
from streamkit_kinesis.source.options import consumer_config, pin_latest, with_retrieval
from streamkit_kinesis.source.positions import END, at_or_past, up_to
from streamkit_kinesis.source.processor import ShardProcessor, check_start
from streamkit_kinesis.source.sampling import stream_schema
from streamkit_kinesis.source.session import build_consumer, start_consumer
from streamkit_kinesis.source.tip_watch import PENDING, TipWatches, Unresolved
from streamkit_kinesis.source.tips import watched_tips
from streamkit_kinesis.source.unheld import UnheldShards

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

    from streamkit.fleet.member import FleetSpec
    from streamkit.streaming.owner import OwnerLease, QueryIdentity
    from streamkit_kinesis.client import KinesisApi
    from streamkit_kinesis.consumer import ConsumerConfig
    from streamkit_kinesis.fleet.worker import KinesisFleetWorker
    from streamkit_kinesis.retry import Health
    from streamkit_kinesis.types import ExtendedSequenceNumber, KinesisRecord, RecordBatch

log = logging.getLogger(__name__)

__all__ = ["CHECKPOINT_INTERVAL", "KinesisSourceError", "KinesisStreamSource"]


class KinesisStreamSource(SourceBase[dict[str, str]]):
    """Records of a Kinesis stream, read by a KCL-style consumer (see the module docstring).

    ``decoder`` turns payloads into rows (default :class:`JsonDecoder` under ``schema``,
    inferred from the oldest records when None); bad records become dead letters with
    partition = shard id and position = sequence number. ``worker_id`` is this process's
    ``leaseOwner``: unique among live processes; reuse it when a job restarts so the new
    process takes its predecessor's leases at once (default: a fresh ``host:pid:random``,
    which waits ``failover_time`` for them). ``checkpoint_interval``: least time between two
    lease checkpoints of a shard (0: after every micro-batch); the query's checkpoint stays
    authoritative (see step 3). ``max_records_per_batch`` caps a micro-batch;
    at most ``max_buffered_records`` wait in memory (default ``max(2 * cap, 10_000)``).
    ``consumer_options`` are further :class:`ConsumerConfig` fields (``idle_time``,
    ``take_interval``, ``max_records`` per GetRecords, ...). ``lease_endpoint`` serves the
    lease table when it is not ``endpoint`` (default: ``endpoint``). ``wall_clock`` gives
    the moment a LATEST source opens (see the module docstring). ``retrieval``:
    ``"polling"`` (default) or ``"fanout"`` (Enhanced Fan-Out through a stream consumer
    named ``app_name``; see :class:`ConsumerConfig`).
    """

    def __init__(
        self,
        stream: str,
        app_name: str,
        endpoint: AwsEndpoint | None = None,
        decoder: Decoder | None = None,
        *,
        schema: pa.Schema | None = None,
        initial_position: InitialPosition | str | datetime = "TRIM_HORIZON",
        worker_id: str | None = None,
        failover_time: float = 10.0,
        max_records_per_batch: int = 10_000,
        max_buffered_records: int | None = None,
        on_bad_record: OnBadRecord = "dead_letter",
        consumer_options: Mapping[str, Any] | None = None,
        checkpoint_interval: float = CHECKPOINT_INTERVAL,
        lease_endpoint: AwsEndpoint | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        retrieval: str | None = None,
        clock_skew: float = SKEW,
    ) -> None:
        super().__init__()
        consumer_options = with_retrieval(consumer_options, retrieval)
        if max_records_per_batch < 1:
            raise ConfigError(f"max_records_per_batch must be >= 1, got {max_records_per_batch}")
        if checkpoint_interval < 0:
            raise ConfigError(f"checkpoint_interval must be >= 0, got {checkpoint_interval}")
        self.checkpoint_interval = checkpoint_interval
        """Least time between two lease checkpoints of one shard (seconds)."""
        if decoder is not None and schema is not None and decoder.schema not in (None, schema):
            raise ConfigError("schema= differs from the decoder's schema; pass only one of them")
        if endpoint is None:
            from streamkit.config import current_endpoint

            endpoint = current_endpoint()
        self.stream, self.app_name, self.endpoint = stream, app_name, endpoint
        self.lease_endpoint = lease_endpoint or endpoint
        """Where the DynamoDB lease table lives (e.g. LocalStack when Kinesis is kinesalite)."""
        self.worker_id = worker_id or default_worker_id()
        """This worker's ``leaseOwner``."""
        self._decoder: Decoder = decoder or JsonDecoder(schema, on_bad_record=on_bad_record)
        self.config = consumer_config(
            stream, app_name, self.worker_id, initial_position, failover_time, consumer_options
        )
        self._cap = max_records_per_batch
        self._capacity = max_buffered_records or max(2 * self._cap, 10_000)
        self._clock, self._wall_clock = clock, wall_clock
        if clock_skew < 0:
            raise ConfigError(f"clock_skew must be >= 0, got {clock_skew}")
        self.clock_skew = clock_skew
        """Seconds added to the server's time to make a target's cut time (:mod:`.cut_time`)."""
        self._new_session()
        self.alignment: Alignment | None = None
        """What ``open`` changed in the lease table to follow the query's checkpoint."""
        self._bound: dict[str, str] | None = None
        """While set (exact replay after a restart), no batch goes past these offsets."""

    def _new_session(self) -> None:
        """Fresh state for the next open (each query runs its own event loop)."""
        self._buffers = ShardBuffers(self._capacity)
        self._checkpoints = LeaseCheckpoints(
            self._buffers, self.checkpoint_interval, self._clock, self.app_name
        )
        give_up = self.config.failover_time + 2 * self.config.effective_take_interval + 1
        self._unheld = UnheldShards(give_up)
        self._session = self.config
        self._consumer: KinesisConsumer | None = None
        self._client: KinesisApi | None = None
        self._tips = TipWatches()
        self._readers = TrackedFetchers(None, self._tips)
        self._opened = asyncio.Event()
        self._committed = asyncio.Event()
        self.clear_failure()
        self._watcher: asyncio.Task[None] | None = None
        self._final: dict[str, str] | None = None

    # -- ReplayableSource ----------------------------------------------------------------------

    @property
    def schema(self) -> pa.Schema:
        """The decoder's schema; for a JSON decoder without one, inferred (once, blocking)
        from up to 200 of the oldest records in the stream."""
        return stream_schema(self._decoder, self.endpoint, self.stream)

    def owner_leases(self, query: QueryIdentity) -> list[OwnerLease]:
        """One live query per app name, one live process per worker id, judged on the
        ``failover_time`` (:mod:`.query_owner`); taken by ``query`` at start."""
        from streamkit_kinesis.source.query_owner import query_owner_leases

        return query_owner_leases(
            self.lease_endpoint, self.app_name, self.worker_id, query,
            lease_seconds=self.config.failover_time,
            call_timeout=self.config.lease_call_timeout,
        )  # fmt: skip

    def read_only(self, columns: Collection[str] | None) -> bool:
        """Decode only ``columns`` (projection pushdown, see :meth:`JsonDecoder.read_only`);
        False, changing nothing, with a decoder other than :class:`JsonDecoder`."""
        return read_only(self._decoder, columns)

    @property
    def decoder(self) -> Decoder:
        """The decoder of the records' payloads (rows and dead letters)."""
        return self._decoder

    def fleet_worker(self, spec: FleetSpec, right: object = None) -> KinesisFleetWorker:
        """This process's member of the fleet that runs ``spec``'s query on this stream
        (``STREAMKIT_FLEET=1``; see :mod:`streamkit_kinesis.fleet.worker`); ``right``: the
        right stream of a join of two streams, this one being the left (a
        :class:`KinesisStreamSource`, else :class:`~streamkit.errors.PlanError`)."""
        from streamkit_kinesis.fleet.worker import KinesisFleetWorker

        if right is not None and not isinstance(right, KinesisStreamSource):
            raise PlanError(
                "a fleet joins two Kinesis streams, but the right side reads "
                f"{type(right).__name__}: read both with sk.read_stream.kinesis(...), or run "
                "this query as one process (streamkit run)"
            )
        return KinesisFleetWorker(self, spec, right)

    @property
    def consumer(self) -> KinesisConsumer | None:
        """The running consumer (None before :meth:`open`)."""
        return self._consumer

    async def open(self, offsets: Offsets | None) -> None:
        """Align the lease table with ``offsets``, start the consumer and wait for its first
        take cycle (so every free lease is held when this returns).

        A lease at SHARD_END is final and left alone (the source writes SHARD_END only
        after every record of the shard was committed by the query).
        """
        if self._consumer is not None:
            raise ConfigError(
                "this KinesisStreamSource is open already: one query at a time reads a source"
            )
        offsets = dict(offsets or {})
        self._buffers.resume(offsets)
        self._session = self._pinned(self.config)
        parts = build_consumer(
            self._session, self.endpoint, self.lease_endpoint, self._clock, self._tips
        )
        consumer = self._consumer = parts.consumer
        self._client, self._readers = parts.client, parts.readers

        def started() -> None:
            watch = self._watch_consumer(consumer)
            self._watcher = asyncio.create_task(watch, name="kinesis-watch")

        try:
            self.alignment = await start_consumer(
                parts, offsets, lambda: ShardProcessor(self), self._clock, started
            )
        except BaseException:
            await self.close()
            raise
        self.raise_if_failed()
        self._opened.set()

    async def next_batch(self, max_wait: float) -> SourceBatch | None:
        """Records delivered so far (at most ``max_records_per_batch``, shared fairly
        between shards, each in shard order), waiting up to ``max_wait`` s for some.
        ``row_partitions`` names each row's shard, ``open_partitions`` the shards held
        here not at SHARD_END, ``ended_partitions`` those whose SHARD_END was handed over
        (for per-partition watermarks)."""
        await self._opened.wait()
        t0 = time.perf_counter()
        self._tick()
        if not self._buffers.data.is_set() and max_wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._buffers.data.wait(), max_wait)
        self.raise_if_failed()
        taken = self._buffers.take(self._cap, self._bound)
        self._tick()
        if not taken.changed:
            return None
        t1 = time.perf_counter()
        rows, dead = await decode_taken(self._decoder, taken.records)
        counts = [(shard_id, len(records)) for shard_id, records in taken.records.items()]
        consumer = self._need_consumer()
        open_shards, ended = declared_shards(
            consumer.held_shard_ids(), self._buffers, consumer.metrics()
        )
        return SourceBatch(
            rows=rows,
            dead_letters=dead,
            end_offsets=self._buffers.offsets(),
            partitions=batch_progress(
                self._need_consumer(), self._buffers, self._readers, self.worker_id, taken.records
            ),
            fetch_seconds=t1 - t0,
            decode_seconds=time.perf_counter() - t1,
            row_partitions=rows_by_partition(
                counts, dead.column("partition").to_pylist(), rows.num_rows
            ),
            open_partitions=open_shards,
            ended_partitions=ended,
        )

    def bound(self, target: Offsets | None) -> None:
        """No batch goes past ``target`` until ``bound(None)`` (exact replay of a batch that
        ran before a restart): later records stay buffered for the next batches."""
        self._bound = dict(target) if target is not None else None
        if target is None and self._buffers.count:
            self._buffers.data.set()  # records held back by the bound are takeable now

    async def end_offsets(self) -> Offsets:
        """The current end of every shard this worker holds or may take (an unfinished
        lease), for ``available_now`` / ``process_all_available``: per shard, the record
        before the first one its reader returns that arrived after this call's cut time
        (the server's time now plus ``clock_skew``, :mod:`.cut_time`), or the last record
        returned before a read sent after this call that came back empty and caught up,
        or the last record of a closed shard (:mod:`.tip_watch`). Until found, a shard's end
        is pending (``?<n>``, see :meth:`found_ends`) and :meth:`reached` is false. Reading
        starts from the furthest position this source knows (else the lease checkpoint,
        else the initial position); shards with nothing to wait for resolve to nothing.
        With Enhanced Fan-Out the empty read is the fan-out reader's tip probe (one
        GetRecords of at most one record, :mod:`~streamkit_kinesis.retrieval.fanout`).

        Guarantee: every record acknowledged before this call, in those shards, is
        included when :meth:`reached` is true; the shards are those held, those with an
        unfinished lease, and listed shards without a lease that descend from them. Not
        covered: shards another live worker reads (left out by :meth:`reached`). Cost:
        one ListShards, one extra GetRecords per idle shard (with fan-out, at most one per
        caught-up event while the end is pending, each reading at most one record twice).
        An endpoint outage stalls this call (retried for ever), never fails it.
        """
        await self._opened.wait()
        consumer = self._need_consumer()
        initial = self._session.initial_position
        lineage: dict[str, tuple[str, ...]] = {}
        target = await watched_tips(
            consumer, self.endpoint.url, initial, self._buffers, self._readers,
            skew=self.clock_skew, lineage=lineage,
        )  # fmt: skip
        log.debug("kinesis source %s: end offsets %s", self.app_name, target)
        self._watch(target, lineage)
        return target

    def stop_at(self, target: Offsets) -> None:
        """The query ends at ``target`` (from :meth:`end_offsets`; ``available_now``): from
        now on a record past its shard's end (once found), or of a shard outside
        ``target``, is dropped when delivered: never handed out, never accepted, so never
        checkpointed, and read again by the next run. Such a shard never hands out or
        checkpoints SHARD_END. So the run holds exactly the records up to the ends."""
        self._final = dict(target)

    def _kept(self, shard_id: str, records: Sequence[KinesisRecord]) -> Sequence[KinesisRecord]:
        """``records`` of ``shard_id`` up to its end in the final target (see :meth:`stop_at`)."""
        final = self._final
        if final is None or not records:
            return records
        value = final.get(shard_id)
        end = self._tips.end(value, shard_id) if value and value.startswith(PENDING) else value
        if isinstance(end, Unresolved) or end == END:
            return records
        kept = records[: up_to(records, end)]
        if len(kept) < len(records):
            self._buffers.state(shard_id).truncated = True
        return kept

    def found_ends(self, target: Offsets) -> dict[str, str] | None:
        """``target`` (from :meth:`end_offsets`) with its pending ends as found (shards with
        nothing to wait for left out), or None while some is still pending."""
        return self._tips.resolved(target)

    def reached(self, offsets: Offsets, target: Offsets) -> bool:
        """True when, on every shard of ``target``, its end is found and ``offsets`` is at
        or past it (sequence numbers compared as integers; SHARD_END is past everything).
        A shard this worker has not held for ``failover_time + 2 * take_interval + 1`` s
        (another live worker reads it) is left out, else the query would wait forever; a
        shard waiting for a parent that this worker holds is never left out
        (:mod:`.unheld`). Safe to call from any thread."""
        unheld = self._unheld
        for shard_id, value in target.items():
            if unheld.left_out(shard_id):
                continue
            end = self._tips.end(value, shard_id) if value.startswith(PENDING) else value
            if isinstance(end, Unresolved) or not at_or_past(offsets.get(shard_id), end):
                return False
        return True

    async def commit(self, offsets: Offsets) -> None:
        """The engine committed a batch ending at ``offsets``: advance the lease checkpoint
        of each held shard to it (durable on return) unless that shard's lease was
        checkpointed (or the shard started) less than ``checkpoint_interval`` ago (then
        it stays pending: written by a later commit, or by the graceful stop), and let
        shards that reached SHARD_END with everything committed finish. A checkpoint that
        cannot be written (lease lost, store unavailable) is logged and skipped. Either way
        the query's checkpoint stays authoritative: a restart moves the leases forward to
        it (step 1), so a lagging lease checkpoint loses nothing and repeats nothing."""
        self.record_commit(dict(offsets))
        await self._checkpoints.commit(self._need_consumer(), offsets)
        self._committed.set()
        self._committed = asyncio.Event()

    async def close(self) -> None:
        """Graceful shutdown of the consumer: deliveries in flight are dropped (they were
        never handed out), each held shard's last committed offset is written to its
        lease if a coalesced checkpoint was pending (nothing uncommitted is), then every
        lease is released. The source may be opened again afterwards (by the next query
        on it)."""
        self._buffers.close()
        self._opened.set()
        consumer = self._consumer
        if consumer is not None:
            await self._checkpoints.flush_all(consumer)
            try:
                await consumer.stop()
            except Exception as e:
                log.warning("kinesis source %s: consumer stop failed: %r", self.app_name, e)
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        closer = getattr(self._client, "close", None)
        if callable(closer):
            closer()
        self._new_session()

    # -- internals -------------------------------------------------------------------------

    def _need_consumer(self) -> KinesisConsumer:
        if self._consumer is None:
            raise KinesisSourceError("the source is not open; call open() first")
        return self._consumer

    async def _flush(self, shard_id: str) -> None:
        """Write the shard's pending lease checkpoint (see :mod:`.lease_checkpoints`)."""
        await self._checkpoints.flush(self._need_consumer(), shard_id)

    def health(self) -> dict[str, Health]:
        """Per shard read here: "reading", or "backing off" through an outage (retried
        for ever: the query stalls and resumes by itself), with the failures in a row
        and the last error."""
        return self._readers.all_health()

    def stalled_partitions(self) -> tuple[PartitionProgress, ...]:
        """The shards backing off now, as progress entries (the query reports them in an
        idle ``last_progress`` while no batch runs)."""
        held = self._consumer.held_shard_ids() if self._consumer is not None else set()
        return stalled(self.health(), held, self.worker_id)

    def _pinned(self, config: ConsumerConfig) -> ConsumerConfig:
        """``config`` with LATEST pinned to AT_TIMESTAMP of now (see the module docstring)."""
        return pin_latest(config, self._wall_clock())

    def _watch(
        self, shard_ids: Iterable[str], parents: Mapping[str, tuple[str, ...]] | None = None
    ) -> None:
        self._unheld.watch(shard_ids, parents)
        self._tick()

    def _tick(self) -> None:
        """Track how long each shard of a target has not been held by this worker."""
        consumer = self._consumer
        if consumer is None or not self._unheld.watched or self.failure is not None:
            return
        self._unheld.tick(consumer.held_shard_ids(), self._clock())

    async def _watch_consumer(self, consumer: KinesisConsumer) -> None:
        try:
            await consumer.join()
            if not self._buffers.closing:
                raise KinesisSourceError(f"the consumer of {self.app_name!r} stopped by itself")
        except Exception as e:
            self.fail(e)
        finally:
            self._buffers.data.set()

    def describe(self) -> str:
        """``Kinesis source 'stream' (app 'app')``, for messages."""
        return f"Kinesis source {self.stream!r} (app {self.app_name!r})"

    def failed_error(self, error: BaseException) -> Exception:
        """A stored background error is raised as :class:`KinesisSourceError`."""
        return KinesisSourceError(f"{self.describe()} failed: {error}")

    # -- called by the shard processors -----------------------------------------------------

    def _started(self, shard_id: str, start: ExtendedSequenceNumber) -> None:
        check_start(self._buffers, shard_id, start)
        self._checkpoints.started(shard_id)

    async def _delivered(self, batch: RecordBatch) -> None:
        records = self._kept(batch.shard_id, batch.records)
        await self._buffers.accept(batch.shard_id, records, batch.millis_behind_latest)

    async def _shard_ended(self, shard_id: str) -> None:
        """Return (letting the consumer checkpoint SHARD_END) once every record of the
        shard is committed; while closing, never (the consumer drops the shard after its
        shutdown grace, writing nothing)."""
        self._buffers.end(shard_id)
        state = self._buffers.state(shard_id)
        while not state.drained or self._buffers.closing:
            await self._committed.wait()
