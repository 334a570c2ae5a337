"""One fleet member on Kinesis: two :class:`~streamkit_kinesis.consumer.KinesisConsumer`s in
one process (FLEET.md decisions 1-3, 8).

- source tasks: leases of the source stream in the app's lease table ``<app>``
  (:mod:`.source_task`); for a join of two streams, the left stream's there and the right
  stream's in ``<app>-right`` (a third consumer), each task running its side's plan;
- aggregation tasks (stateful plans only): leases of the exchange stream
  ``<app>-exchange`` in the table ``<app>-exchange`` (:mod:`.aggregation_task`); the
  exchange stream is created by the first worker (:func:`.exchange.ensure_exchange`).

Each kind is balanced on its own by the existing taker; a worker joining, leaving or dying
moves leases as for any KCL application. Transient faults (throttling, an unreachable
endpoint) stall the affected shard and resume by themselves (the consumers retry). A
graceful stop (:meth:`KinesisFleetWorker.request_stop`, SIGTERM/SIGINT through the member)
stops the source consumer first (the batch in flight finishes and is checkpointed), then the
aggregation consumer, each releasing its leases.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, TypeVar

from streamkit.streaming.checkpoint_store import open_checkpoint_store
from streamkit_kinesis.consumer import InitialPosition
from streamkit_kinesis.fleet.aggregation_task import AggregationTask
from streamkit_kinesis.fleet.fleet_view import publish, unpublish
from streamkit_kinesis.fleet.metrics import track
from streamkit_kinesis.fleet.refusals import RefusedClaims
from streamkit_kinesis.fleet.source_task import SourceContext, SourceTask
from streamkit_kinesis.leases import LEADER_LEASE_KEY
from streamkit_kinesis.source.session import build_consumer
from streamkit_kinesis.source.tasks import first_of

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from streamkit.fleet.member import FleetSpec
    from streamkit.streaming.contracts import CheckpointStore
    from streamkit_kinesis.client import KinesisApi
    from streamkit_kinesis.consumer import ConsumerEvent, KinesisConsumer
    from streamkit_kinesis.consumer.config import ConsumerConfig
    from streamkit_kinesis.fleet.endpoint import Advertiser, WorkerReport
    from streamkit_kinesis.fleet.writer import ExchangeWriter
    from streamkit_kinesis.source.session import ConsumerParts
    from streamkit_kinesis.source.stream_source import KinesisStreamSource

log = logging.getLogger(__name__)
events_log = logging.getLogger("streamkit_kinesis.fleet.events")
"""Every consumer event of the member's consumers at DEBUG, as ``<lease table> <kind>
<shard or -> <detail>`` (e.g. each take cycle of each table, for a test counting cycles)."""

T = TypeVar("T")

SHUTDOWN_GRACE = 60.0
"""How long a batch in flight may run on at a graceful stop (it is checkpointed then)."""
GATHER_RECORDS = 50_000
"""Records (or 32 MiB, one read more at most) a source task gathers into one batch while
its shard is polled behind the tip (the consumer's ``gather_records``, unless the source
sets it; 1 turns it off): on a backlog read 10,000 records a call, a fifth of the
batches, so of the exchange puts and lease writes, and pre-aggregation folds more
records into each group."""
WITHDRAW_TIMEOUT = 10.0
"""Seconds a graceful stop waits to delete the worker's UI advertisement."""


def _log_events(consumer: KinesisConsumer, table: str) -> None:
    """Log ``consumer``'s events to :data:`events_log` (at DEBUG: free when it is off)."""

    def on_event(event: ConsumerEvent) -> None:
        if events_log.isEnabledFor(logging.DEBUG):
            shard = event.shard_id or "-"
            events_log.debug("%s %s %s %s", table, event.kind.value, shard, event.detail)

    consumer.add_listener(on_event)


def _lag(consumer: KinesisConsumer) -> Callable[[str], int | None]:
    """MillisBehindLatest of a shard read by ``consumer`` (None before its first read)."""

    def lag(shard_id: str) -> int | None:
        return consumer.metrics().shard(shard_id).millis_behind_latest

    return lag


class SourceShards:
    """The source shards the fleet watermark waits for: every lease of the source table
    that is not finished (SHARD_END), as of the source consumer's last take cycle (one
    scan per cycle, no call of its own). A shard that never reported holds the watermark
    back until it does."""

    def __init__(
        self, consumer: KinesisConsumer, settle: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._consumer, self._settle, self._clock = consumer, settle, clock
        self._owners: dict[str, tuple[str | None, float]] = {}

    def __call__(self) -> frozenset[str]:
        leases = self._consumer.coordinator.table_snapshot().values()
        return frozenset(
            x.lease_key for x in leases if x.lease_key != LEADER_LEASE_KEY and not x.is_finished
        )

    def unsettled(self) -> frozenset[str]:
        """The unfinished source shards whose lease is changing hands, as of the last take
        cycle: no owner, an owner that stopped renewing (counter still for
        ``failover_time``: it died), or an owner seen for less than ``settle`` seconds (it
        may not have read yet). Their silence is not idleness (:meth:`hold_sources`)."""
        coordinator = self._consumer.coordinator
        changes, now = coordinator.counter_changes(), self._clock()
        out = set()
        for x in coordinator.table_snapshot().values():
            if x.lease_key == LEADER_LEASE_KEY or x.is_finished:
                continue
            owner, since = self._owners.get(x.lease_key, (None, now))
            if owner != x.lease_owner or x.lease_key not in self._owners:
                self._owners[x.lease_key] = (x.lease_owner, now)
                since = now
            changed = changes.get(x.lease_key, now)
            dead = now - changed > coordinator.failover_time
            if x.lease_owner is None or dead or now - since < self._settle:
                out.add(x.lease_key)
        return frozenset(out)


async def first_of_value(stop: asyncio.Event, work: Awaitable[T]) -> T | None:
    """``work``'s result (its error raised), or None once ``stop`` is set first: ``work``
    is then cancelled (the cancellation takes effect at its next step, after this
    returns)."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([task, stopped], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not task.done():
            task.cancel()
    return task.result() if task.done() and not task.cancelled() else None


class JoinShards:
    """The source shards of both streams of a join, each named ``stream/shard``
    (``left/shardId-...``, ``right/shardId-...``), as the join's aggregation tasks know
    them: the union of the two tables' :class:`SourceShards`."""

    def __init__(self, left: SourceShards, right: SourceShards) -> None:
        self._sides = (("left", left), ("right", right))

    def __call__(self) -> frozenset[str]:
        return frozenset(f"{name}/{s}" for name, side in self._sides for s in side())

    def unsettled(self) -> frozenset[str]:
        """:meth:`SourceShards.unsettled` of both, named ``stream/shard``."""
        return frozenset(f"{name}/{s}" for name, side in self._sides for s in side.unsettled())


async def _source_shards(consumer: KinesisConsumer, settle: float) -> SourceShards:
    """The source shard set of ``consumer``, once its first take cycle scanned the table."""
    shards = SourceShards(consumer, settle)
    while not shards():
        await consumer.coordinator.wait_for_change(1.0)
    return shards


async def _join_shards(left: KinesisConsumer, right: KinesisConsumer, settle: float) -> JoinShards:
    """Both streams' shard sets, once each consumer's first take cycle scanned its table."""
    return JoinShards(await _source_shards(left, settle), await _source_shards(right, settle))


class KinesisFleetWorker:
    """The tasks of one fleet member reading a Kinesis source (see the module docstring)."""

    def __init__(
        self, source: KinesisStreamSource, spec: FleetSpec, right: KinesisStreamSource | None = None
    ) -> None:
        self.source, self.spec, self.right = source, spec, right
        self.config = self._member_config(source)
        self._stop = asyncio.Event()
        """Set by :meth:`request_stop`, whenever it comes (before :meth:`run` too)."""
        self.parts: list[ConsumerParts] = []
        self._clients: list[KinesisApi] = []
        self._published: tuple[WorkerReport, Advertiser] | None = None
        """This worker's UI endpoint, when the process serves the UI."""
        self._failed: asyncio.Future[None] | None = None
        """Set to the error that fails this worker (a claim refused for good)."""
        self.refusals = RefusedClaims(self._fail, 2 * self.config.failover_time)
        track(self)  # its consumers in the Prometheus metrics, when served

    def _member_config(self, source: KinesisStreamSource, app: str | None = None) -> ConsumerConfig:
        """``source``'s consumer settings as this member runs them (lease table ``app``:
        None, the source's own)."""
        return replace(
            source.config,
            app_name=app or source.config.app_name,
            worker_id=self.spec.worker_id,
            shutdown_grace=max(source.config.shutdown_grace, SHUTDOWN_GRACE),
            announce=True,  # workers start together: announce, then split (decide_takes)
            gather_records=source.config.gather_records or GATHER_RECORDS,
        )

    def _fail(self, error: Exception) -> None:
        """Stop this worker (gracefully: its leases are released) and raise ``error``
        from :meth:`run`."""
        if self._failed is not None and not self._failed.done():
            self._failed.set_exception(error)

    def request_stop(self) -> None:
        """Begin a graceful stop (call on the worker's event loop); honoured in any state:
        before :meth:`run`, while it starts the consumers, or while they run."""
        self._stop.set()

    async def run(self) -> None:
        """Start the aggregation tasks (stateful plans) and the source tasks; run until
        stopped; stop gracefully; re-raise what stopped a consumer."""
        spec, source, clock = self.spec, self.source, time.monotonic
        root = await asyncio.to_thread(open_checkpoint_store, spec.checkpoint)
        decoder = source.decoder
        _ = source.schema  # infer it now (a JSON decoder without a schema), not per task
        writer: ExchangeWriter | None = None
        parts = build_consumer(self.config, source.endpoint, source.lease_endpoint, clock)
        self.parts.append(parts)
        consumer = parts.consumer
        self._failed = asyncio.get_running_loop().create_future()
        try:
            if not spec.fleet_plan.stateless:
                writer = await self._exchange_writer()
            partitions = writer.layout.partitions if writer is not None else 0
            stream = "left" if self.right is not None else ""
            ctx = SourceContext(spec, decoder, root, writer, partitions, _lag(consumer),
                                refusals=self.refusals, stream=stream)  # fmt: skip
            await parts.store.create_table_if_not_exists()
            if self._stop.is_set():
                return
            _log_events(consumer, self.config.app_name)
            await consumer.start(lambda: SourceTask(ctx))
            right = await self._start_right(root, writer) if self.right is not None else None
            self._published = await publish(spec.worker_id, source.app_name, root,
                                            source.lease_endpoint)  # fmt: skip
            if self._published is not None:
                self._published[0].source, self._published[0].right = consumer, right
            if writer is not None:
                settle = spec.options.idle_timeout
                found: SourceShards | JoinShards | None = await first_of_value(
                    self._stop,
                    _source_shards(consumer, settle)
                    if right is None
                    else _join_shards(consumer, right, settle),
                )
                if found is None:
                    return
                await self._start_aggregation(root, writer, found)
            joins = [p.consumer.join() for p in self.parts]
            await first_of(self._stop.wait(), self._failed, *joins)
        finally:
            await self._shutdown()

    async def _start_right(
        self, root: CheckpointStore, writer: ExchangeWriter | None
    ) -> KinesisConsumer:
        """Start the source consumer of a join's right stream (table ``<app>-right``):
        its tasks run the right side's plan and put to the same exchange."""
        right = self.right
        assert right is not None
        assert writer is not None  # a join always goes through the exchange
        _ = right.schema  # inferred now, not per task
        config = self._member_config(right, f"{self.source.app_name}-right")
        parts = build_consumer(config, right.endpoint, right.lease_endpoint, time.monotonic)
        self.parts.append(parts)  # stopped before the left stream's consumer
        consumer = parts.consumer
        own = writer.another()  # shard ids repeat across streams: its own in-flight set
        ctx = SourceContext(self.spec, right.decoder, root, own, writer.layout.partitions,
                            _lag(consumer), refusals=self.refusals, stream="right")  # fmt: skip
        await parts.store.create_table_if_not_exists()
        _log_events(consumer, config.app_name)
        await consumer.start(lambda: SourceTask(ctx))
        return consumer

    async def _exchange_writer(self) -> ExchangeWriter:
        """Create (or find) the exchange stream; the source tasks' writer to it."""
        from streamkit_kinesis.client import kinesis_client
        from streamkit_kinesis.fleet.exchange import ensure_exchange
        from streamkit_kinesis.fleet.writer import ExchangeWriter

        client = kinesis_client(self.source.endpoint)
        self._clients.append(client)
        shards = self.spec.options.exchange_shards
        return ExchangeWriter(client, await ensure_exchange(client, self.source.app_name, shards))

    async def _start_aggregation(
        self, root: CheckpointStore, writer: ExchangeWriter, sources: SourceShards | JoinShards
    ) -> None:
        """Start the aggregation consumer on the exchange stream (table ``<app>-exchange``)."""
        spec, source = self.spec, self.source
        config = replace(
            self.config,
            app_name=f"{source.app_name}-exchange",
            stream=writer.layout.stream,
            initial_position=InitialPosition.trim_horizon(),
            gather_records=0,  # a batch per exchange read (coalescing them: no gain measured)
        )
        parts = build_consumer(config, source.endpoint, source.lease_endpoint, time.monotonic)
        self.parts.insert(0, parts)  # stopped after the source consumer
        consumer = parts.consumer
        lag = _lag(consumer)
        await parts.store.create_table_if_not_exists()
        _log_events(consumer, config.app_name)
        await consumer.start(
            lambda: AggregationTask(
                spec, root, lag, sources, unsettled=sources.unsettled, refusals=self.refusals
            )
        )
        if self._published is not None:
            self._published[0].aggregation = consumer

    async def _shutdown(self) -> None:
        """Stop the source consumer first (its batches in flight finish and are
        checkpointed), then the aggregation consumer; each releases its leases. Then the
        UI endpoint's advertisement is withdrawn (at most :data:`WITHDRAW_TIMEOUT` s: one
        left behind goes stale)."""
        for parts in reversed(self.parts):
            try:
                await parts.consumer.stop()
            except Exception as e:
                log.warning("fleet worker %s: stopping %s failed: %r",
                            self.spec.worker_id, parts.consumer.config.app_name, e)  # fmt: skip
        self.refusals.close()  # every lease released: no refusal is left to confirm
        try:
            await asyncio.wait_for(unpublish(self._published), WITHDRAW_TIMEOUT)
        except Exception as e:
            log.warning("fleet worker %s: withdrawing its UI endpoint failed: %r",
                        self.spec.worker_id, e)  # fmt: skip
        for client in [p.client for p in self.parts] + self._clients:
            closer = getattr(client, "close", None)
            if callable(closer):
                closer()
