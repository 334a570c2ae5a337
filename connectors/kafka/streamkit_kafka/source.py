"""Kafka topics as a :class:`~streamkit.streaming.contracts.ReplayableSource` (aiokafka).

Partitions play the role of shards: offsets are, per ``"topic-partition"`` id, the next
offset to read (a decimal string). The consumer joins ``group_id`` (subscribe), so several
sources in one group share the partitions. Exactly-once for one query, step by step:

1. ``open(offsets)``: the query's checkpoint is authoritative. When a partition is
   assigned, it is sought to the query's position for it (the checkpoint, or what this
   source has already handed out), or to the group's committed offset if that is further
   (another member of the group processed those records). Partitions the query never
   read start at the group's committed offset, else at ``starting``.
2. ``next_batch``: ``getmany``; records of partitions revoked meanwhile are dropped, and a
   revoked partition yields nothing after the revocation. One decoder call per batch.
3. ``commit(offsets)`` (after the engine's commit log): only now are offsets committed to
   the group, for the partitions still assigned. A failed group commit is logged, not
   raised: the query's checkpoint stays authoritative, a restart only re-reads less.

4. ``end_offsets`` (the target of ``available_now`` and ``process_all_available``) covers
   every partition of the topics, assigned or not; :meth:`~KafkaStreamSource.reached`
   counts a partition another member holds as done once the group's committed offset for
   it reaches the target. A partition held by a member that died (still in the group until
   its session times out) is therefore waited for, then read, never skipped.

Across members of a group, a partition that moves while its batch is in flight is read
again by its new owner (at-least-once between members). An error in the rebalance
callback (which aiokafka would only log) is stored and raised, as
:class:`~.errors.KafkaSourceError`, on the engine's next call (:class:`SourceBase`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection, Mapping
from typing import Any, Literal

import pyarrow as pa
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from streamkit.errors import ConfigError, SchemaError
from streamkit.streaming.contracts import Offsets, PartitionProgress, SourceBatch
from streamkit.streaming.decode import (
    Decoder,
    JsonDecoder,
    OnBadRecord,
    RawRecords,
    decode_off_loop,
    read_only,
)
from streamkit.streaming.sources.base import SourceBase
from streamkit.streaming.watermarks import rows_by_partition

from .errors import KafkaSourceError, TopicNotFoundError
from .support import partition_id, sample_values, start_client

log = logging.getLogger(__name__)

Starting = Literal["earliest", "latest"]

__all__ = ["KafkaStreamSource"]


class KafkaStreamSource(SourceBase[dict[str, str]]):
    """Records of Kafka ``topics`` read in consumer group ``group_id`` (module docstring).

    ``decoder`` turns record values into rows (default :class:`JsonDecoder` under
    ``schema``); bad records become dead letters with partition = ``"topic-partition"``
    and position = offset. ``max_records_per_batch`` caps a micro-batch. The consumer
    defaults (``session_timeout_ms=10000``, within every broker's default bounds;
    ``heartbeat_interval_ms=1000``) are overridden by ``consumer_options`` (any
    :class:`AIOKafkaConsumer` keyword).
    Start: ``connect_attempts`` tries with doubling ``connect_backoff`` s, then
    :class:`~.errors.BrokerUnreachableError`; a missing topic raises
    :class:`~.errors.TopicNotFoundError`. :attr:`commits` holds the last 16 offsets
    mappings passed to :meth:`commit`.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: str | list[str],
        group_id: str,
        decoder: Decoder | None = None,
        *,
        schema: pa.Schema | None = None,
        starting: Starting = "earliest",
        max_records_per_batch: int = 10_000,
        on_bad_record: OnBadRecord = "dead_letter",
        consumer_options: Mapping[str, Any] | None = None,
        connect_attempts: int = 3,
        connect_backoff: float = 0.5,
        assignment_timeout: float = 30.0,
    ) -> None:
        super().__init__()
        if max_records_per_batch < 1:
            raise ConfigError(f"max_records_per_batch must be >= 1, got {max_records_per_batch}")
        if starting not in ("earliest", "latest"):
            raise ConfigError(f"starting must be 'earliest' or 'latest', got {starting!r}")
        if decoder is not None and schema is not None and decoder.schema not in (None, schema):
            raise ConfigError("schema= differs from the decoder's schema; pass only one of them")
        self.bootstrap, self.group_id = bootstrap, group_id
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        if not self.topics:
            raise ConfigError("KafkaStreamSource needs at least one topic")
        self._decoder: Decoder = decoder or JsonDecoder(schema, on_bad_record=on_bad_record)
        self._cap = max_records_per_batch
        self._bound: dict[str, int] | None = None
        self._final: dict[str, int] | None = None
        self._options: dict[str, Any] = {
            "session_timeout_ms": 10_000,  # >= a broker's group.min.session.timeout.ms (6 s)
            "heartbeat_interval_ms": 1000,
            "auto_offset_reset": starting,
            **(consumer_options or {}),
            "bootstrap_servers": bootstrap,
            "group_id": group_id,
            "enable_auto_commit": False,
        }
        self._attempts, self._backoff = connect_attempts, connect_backoff
        self._assignment_timeout = assignment_timeout
        self._consumer: Any = None
        self._positions: dict[str, int] = {}
        """Next offset to read per partition, as far as this query knows (handed out)."""
        self._reported: dict[str, int] = {}
        self._committed: dict[str, int] = {}
        self._assigned: set[TopicPartition] = set()
        self._first_assignment = asyncio.Event()
        self._peer_committed: dict[str, int] = {}
        """Group-committed offsets of partitions other members hold (see :meth:`reached`)."""
        self._peer_checked = float("-inf")

    # -- ReplayableSource -------------------------------------------------------------------

    @property
    def schema(self) -> pa.Schema:
        """The decoder's schema; for a JSON decoder without one, inferred (once, blocking)
        from up to 200 of the oldest records of the topics."""
        schema = self._decoder.schema
        if schema is None and isinstance(self._decoder, JsonDecoder):
            schema = self._decoder.infer_schema(sample_values(self.bootstrap, self.topics))
        if schema is None:
            raise SchemaError(
                f"cannot infer a schema: topics {self.topics} hold no valid JSON record yet; "
                "pass schema=... (or a decoder with one, e.g. RawDecoder)"
            )
        return schema

    @property
    def assignment(self) -> set[str]:
        """``"topic-partition"`` ids assigned to this source now."""
        return {partition_id(tp.topic, tp.partition) for tp in self._assigned}

    def read_only(self, columns: Collection[str] | None) -> bool:
        """Decode only ``columns`` (projection pushdown, see :meth:`JsonDecoder.read_only`);
        False, changing nothing, with a decoder other than :class:`JsonDecoder`."""
        return read_only(self._decoder, columns)

    async def open(self, offsets: Offsets | None) -> None:
        """Connect (bounded retries), check the topics exist, join the group and wait for
        the first assignment; partitions in ``offsets`` resume there (module docstring)."""
        if self._consumer is not None:
            raise KafkaSourceError("this KafkaStreamSource was opened already; create a new one")
        self.clear_failure()
        self._positions = {pid: int(v) for pid, v in (offsets or {}).items()}
        self._reported = dict(self._positions)
        consumer = self._consumer = await start_client(
            lambda: AIOKafkaConsumer(**self._options),
            self.bootstrap,
            attempts=self._attempts,
            backoff=self._backoff,
        )
        try:
            known = await consumer.topics()
            missing = [t for t in self.topics if t not in known]
            if missing:
                raise TopicNotFoundError(missing, self.bootstrap)
            consumer.subscribe(self.topics, listener=_Listener(self))
            await self._await_assignment()
            self.raise_if_failed()
        except BaseException:
            await self.close()
            raise

    async def next_batch(self, max_wait: float) -> SourceBatch | None:
        """The records fetched within ``max_wait`` s (at most ``max_records_per_batch``),
        in partition order, from partitions assigned now; None when nothing changed."""
        self.raise_if_failed()
        consumer = self._need_consumer()
        t0 = time.perf_counter()
        data = await consumer.getmany(timeout_ms=int(max_wait * 1000), max_records=self._cap)
        taken = {tp: records for tp, records in data.items() if tp in self._assigned and records}
        if (limits := self._limits()) is not None:
            taken = self._within_bound(consumer, taken, limits)
        for tp, records in taken.items():  # before any await: a rebalance seeks from here
            self._positions[partition_id(tp.topic, tp.partition)] = records[-1].offset + 1
        await self._learn_positions()
        await self._refresh_peer_committed(consumer)
        changed = {p: n for p, n in self._positions.items() if self._reported.get(p) != n}
        if not changed and not taken:
            return None
        t1 = time.perf_counter()
        rows, dead = await self._decode(taken)
        self._reported.update(changed)
        counts = [(partition_id(tp.topic, tp.partition), len(taken[tp])) for tp in sorted(taken)]
        return SourceBatch(
            rows=rows,
            dead_letters=dead,
            end_offsets={p: str(n) for p, n in self._positions.items()},
            partitions=self._progress(taken),
            fetch_seconds=t1 - t0,
            decode_seconds=time.perf_counter() - t1,
            row_partitions=rows_by_partition(
                counts, dead.column("partition").to_pylist(), rows.num_rows
            ),
            open_partitions=self._may_deliver(consumer),
        )

    def bound(self, target: Offsets | None) -> None:
        """No batch goes past ``target`` until ``bound(None)`` (exact replay of a batch
        that ran before a restart): records beyond it are dropped from the fetch and the
        partition is sought back to ``target``, to be read again by later batches."""
        self._bound = {pid: int(v) for pid, v in target.items()} if target is not None else None

    def stop_at(self, target: Offsets) -> None:
        """The query ends at ``target`` (its :meth:`end_offsets` at the start of an
        ``available_now`` run): from now on no batch goes past it, as under :meth:`bound`
        (records written after the start are left for the next run)."""
        self._final = {pid: int(v) for pid, v in target.items()}

    def _limits(self) -> dict[str, int] | None:
        """The offsets no batch may pass: the replay bound, else the final target."""
        return self._bound if self._bound is not None else self._final

    @staticmethod
    def _within_bound(
        consumer: Any, taken: dict[TopicPartition, list[Any]], bound: dict[str, int]
    ) -> dict[TopicPartition, list[Any]]:
        kept: dict[TopicPartition, list[Any]] = {}
        for tp, records in taken.items():
            limit = bound.get(partition_id(tp.topic, tp.partition), records[0].offset)
            inside = [r for r in records if r.offset < limit]
            if len(inside) < len(records):
                consumer.seek(tp, max(limit, records[0].offset))
            if inside:
                kept[tp] = inside
        return kept

    async def end_offsets(self) -> Offsets:
        """The end offsets of every partition of the topics now, whichever member of the
        group holds it (``consumer.end_offsets``)."""
        self.raise_if_failed()
        consumer = self._need_consumer()
        tps = sorted(self._all_partitions(consumer))
        if not tps:
            return {}
        ends = await consumer.end_offsets(tps)
        return {partition_id(tp.topic, tp.partition): str(ends[tp]) for tp in tps}

    def reached(self, offsets: Offsets, target: Offsets) -> bool:
        """True when, on every partition of ``target``, ``offsets`` is at or past it
        (numerically), or the partition is held by another member of the group and the
        group's committed offset for it is (refreshed by :meth:`next_batch`, at most once
        a second, while such partitions exist)."""
        mine = self.assignment
        for pid, value in target.items():
            if int(offsets.get(pid, "0")) >= int(value):
                continue
            if pid not in mine and self._peer_committed.get(pid, -1) >= int(value):
                continue
            return False
        return True

    async def commit(self, offsets: Offsets) -> None:
        """The engine committed a batch ending at ``offsets``: commit them to the group for
        the partitions assigned now (durable on return). Failures are logged and skipped."""
        self.raise_if_failed()
        self.record_commit(dict(offsets))
        consumer = self._need_consumer()
        todo: dict[TopicPartition, int] = {}
        for tp in self._assigned:
            pid = partition_id(tp.topic, tp.partition)
            if pid in offsets and self._committed.get(pid) != int(offsets[pid]):
                todo[tp] = int(offsets[pid])
        if not todo:
            return
        try:
            await consumer.commit(todo)
        except KafkaError as exc:
            log.warning("kafka group %s: commit %s skipped: %r", self.group_id, todo, exc)
            return
        self._committed.update({partition_id(tp.topic, tp.partition): n for tp, n in todo.items()})

    async def close(self) -> None:
        """Leave the group and close the connections (nothing more is committed)."""
        consumer, self._consumer = self._consumer, None
        self._assigned.clear()
        if consumer is not None:
            try:
                await consumer.stop()
            except Exception as exc:
                log.warning("kafka source %s: consumer stop failed: %r", self.group_id, exc)

    # -- internals -------------------------------------------------------------------------

    def describe(self) -> str:
        """``Kafka source [topics] (group g)``, for messages."""
        return f"Kafka source {self.topics} (group {self.group_id!r})"

    def failed_error(self, error: BaseException) -> Exception:
        """A stored background error is raised as :class:`KafkaSourceError`."""
        return KafkaSourceError(f"{self.describe()} failed: {error}; restart the query")

    def _need_consumer(self) -> Any:
        if self._consumer is None:
            raise KafkaSourceError("the Kafka source is not open; call open() first")
        return self._consumer

    async def _await_assignment(self) -> None:
        try:
            await asyncio.wait_for(self._first_assignment.wait(), self._assignment_timeout)
        except TimeoutError:
            raise KafkaSourceError(
                f"group {self.group_id!r} assigned no partition of {self.topics} within "
                f"{self._assignment_timeout} s; is the broker overloaded, or do more members "
                "than partitions share the group?"
            ) from None

    def _all_partitions(self, consumer: Any) -> set[TopicPartition]:
        """Every partition of the topics in the consumer's metadata (kept for subscribed
        topics), and every partition assigned to this source."""
        found = set(self._assigned)
        for topic in self.topics:
            found |= {TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()}
        return found

    async def _refresh_peer_committed(self, consumer: Any) -> None:
        """The group's committed offsets of the partitions other members hold (what
        :meth:`reached` counts as done for them); at most once a second."""
        now = time.monotonic()
        if now - self._peer_checked < 1.0:
            return
        self._peer_checked = now
        others = self._all_partitions(consumer) - self._assigned
        committed: dict[str, int] = {}
        for tp in others:
            with contextlib.suppress(KafkaError, AssertionError):
                offset = await consumer.committed(tp)
                if offset is not None:
                    committed[partition_id(tp.topic, tp.partition)] = int(offset)
        self._peer_committed = committed

    def _may_deliver(self, consumer: AIOKafkaConsumer) -> frozenset[str]:
        """Assigned partitions declared to the per-partition watermarks: all but those whose
        position reached the high watermark (their next records are new). Positions come
        from the consumer, past commit/abort markers and aborted records, so a partition
        read to its end with markers last is not declared. Under ``read_committed`` the
        position stops at the last stable offset while a transaction is open: records
        that may still commit keep the partition declared. O(partitions)."""
        out = set()
        for tp in self._assigned:
            pid = partition_id(tp.topic, tp.partition)
            end, at = consumer.highwater(tp), self._positions.get(pid)
            if end is None or at is None or at < end:
                out.add(pid)
        return frozenset(out)

    async def _learn_positions(self) -> None:
        """Take the consumer's position of each assigned partition: where a partition this
        query has not read yet starts, and past the transaction markers and aborted records
        after the last record handed out (they take offsets but are never returned).
        Positions never go back; under :meth:`bound` they stop at the bound (a partition
        outside it does not move), so a replayed batch ends where it ended before."""
        consumer = self._need_consumer()
        for tp in list(self._assigned):
            pid = partition_id(tp.topic, tp.partition)
            with contextlib.suppress(KafkaError, AssertionError):
                at = int(await consumer.position(tp))
                if tp not in self._assigned:
                    continue
                known = self._positions.get(pid)
                limits = self._limits()
                limit = None if limits is None else limits.get(pid, known)
                if limit is not None:
                    at = min(at, limit)
                self._positions[pid] = at if known is None else max(known, at)

    async def _decode(self, taken: dict[Any, list[Any]]) -> tuple[pa.Table, pa.Table]:
        payloads: list[bytes] = []
        partitions: list[str] = []
        positions: list[str] = []
        for tp in sorted(taken):
            records = taken[tp]
            payloads += [r.value if r.value is not None else b"" for r in records]
            partitions += [partition_id(tp.topic, tp.partition)] * len(records)
            positions += [str(r.offset) for r in records]
        decoded = await decode_off_loop(self._decoder, RawRecords(payloads, partitions, positions))
        return decoded.rows, decoded.dead_letters

    def _progress(self, taken: dict[Any, list[Any]]) -> tuple[PartitionProgress, ...]:
        counts = {partition_id(tp.topic, tp.partition): len(rs) for tp, rs in taken.items()}
        pids = sorted(self.assignment | set(counts))
        return tuple(PartitionProgress(p, counts.get(p, 0), owner=self.group_id) for p in pids)

    # -- called by the rebalance listener ----------------------------------------------------

    def _revoked(self, revoked: set[TopicPartition]) -> None:
        self._assigned -= revoked
        for tp in revoked:
            self._committed.pop(partition_id(tp.topic, tp.partition), None)

    async def _assigned_now(self, assigned: set[TopicPartition]) -> None:
        """Seek newly assigned partitions to the query's position. An error is stored for
        the engine's next call (aiokafka would only log it, and the partitions would be
        skipped silently); the first assignment is signalled either way."""
        try:
            await self._seek_assigned(assigned)
        except Exception as exc:
            self.fail(exc)
        finally:
            self._first_assignment.set()

    async def _seek_assigned(self, assigned: set[TopicPartition]) -> None:
        consumer = self._need_consumer()
        for tp in assigned:
            pid = partition_id(tp.topic, tp.partition)
            own = self._positions.get(pid)
            if own is None:
                continue
            group = await consumer.committed(tp)
            consumer.seek(tp, max(own, group or 0))
            self._positions[pid] = max(own, group or 0)
        self._assigned = set(assigned)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Forwards rebalances to the source: revoked partitions stop at once, assigned ones
    are sought to the query's position."""

    def __init__(self, source: KafkaStreamSource) -> None:
        self._source = source

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self._source._revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._source._assigned_now(set(assigned))
