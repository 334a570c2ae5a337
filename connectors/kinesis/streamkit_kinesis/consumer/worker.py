"""The Kinesis consumer worker: leases, shard sync and one task per held shard.

Several workers (processes, machines) with the same ``app_name`` share a stream: each
takes leases from the lease table (table name = ``app_name``) and reads only the shards it
holds. Delivery is at least once and in order per shard; a child shard is read only after
its parents were read to SHARD_END, so per partition key order holds across reshards.
"""

from __future__ import annotations

import asyncio
import logging
import time
from enum import StrEnum
from functools import partial
from typing import TYPE_CHECKING

from streamkit.config import AwsEndpoint
from streamkit_kinesis.client import endpoint_url, kinesis_client, parse_timestamp
from streamkit_kinesis.leases import (
    DynamoDBLeaseStore,
    LeaseCoordinator,
    LeaseEventKind,
    LeaseStoreUnavailableError,
)
from streamkit_kinesis.leases.cleanup import LeaseCleaner
from streamkit_kinesis.leases.metrics import CallTimings

from .batches import BatchChannel, ChannelProcessor, ConsumedBatch
from .errors import ConsumerError, ConsumerStateError
from .events import ConsumerEvent, ConsumerEventKind, ConsumerListener
from .loops import PeriodicStep
from .metrics import ConsumerMetrics, ShardTotals
from .shard_task import ShardCheckpointer, ShardOutcome, ShardTask
from .shards import StreamShards, retry_later

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from types import TracebackType

    from streamkit_kinesis.client import KinesisApi
    from streamkit_kinesis.leases import Lease, LeaseEvent, LeaseStore
    from streamkit_kinesis.retrieval.fetcher import FetcherFactory
    from streamkit_kinesis.types import ShardInfo

    from .config import ConsumerConfig
    from .processor import ProcessorFactory

log = logging.getLogger(__name__)

DROP_WAIT = 10.0
"""Seconds a shard task may take to end once cancelled at shutdown (a stop never waits
for ever)."""

_EVENT_KINDS = {
    LeaseEventKind.GAINED: ConsumerEventKind.LEASE_GAINED,
    LeaseEventKind.LOST: ConsumerEventKind.LEASE_LOST,
    LeaseEventKind.RELEASED: ConsumerEventKind.LEASE_RELEASED,
}


class ConsumerState(StrEnum):
    """Lifecycle of a :class:`KinesisConsumer`."""

    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class KinesisConsumer:
    """A KCL-style consumer worker for one stream (see the module docstring).

    Two ways to use it::

        await consumer.run(MyProcessor)                 # record-processor contract

        async with KinesisConsumer(config, endpoint) as consumer:
            async for batch in consumer:                # ConsumedBatch, see .batches
                handle(batch.records)                   # checkpointed when you ask for the next

    Each shard is read by a fetcher from ``fetcher_factory`` (default:
    :meth:`ConsumerConfig.fetchers`: polling or, with ``retrieval="fanout"``, Enhanced
    Fan-Out, both de-aggregating KPL records as KCL does; see
    :mod:`streamkit_kinesis.retrieval`).

    Errors of background work (a processor raising, a shard read failing for good, the
    lease table failing) stop the worker gracefully and are re-raised by :meth:`run`,
    :meth:`join` and the ``async for`` loop; nothing dies silently.
    """

    def __init__(
        self,
        config: ConsumerConfig,
        endpoint: AwsEndpoint | None = None,
        *,
        kinesis: KinesisApi | None = None,
        lease_store: LeaseStore | None = None,
        clock: Callable[[], float] = time.monotonic,
        fetcher_factory: FetcherFactory | None = None,
        call_timings: CallTimings | None = None,
    ) -> None:
        if endpoint is None and (kinesis is None or lease_store is None):
            endpoint = AwsEndpoint.from_env()
        self.config = config
        self._owns_client = kinesis is None
        self.client: KinesisApi = kinesis or kinesis_client(
            _need(endpoint), timestamp_parser=parse_timestamp
        )
        """The (blocking) Kinesis client of shard listing and the default (polling) fetchers."""
        self.store: LeaseStore = lease_store or DynamoDBLeaseStore(
            _need(endpoint), config.app_name, call_timeout=config.lease_call_timeout
        )
        """The lease table (DynamoDB table ``app_name`` unless another store was given)."""
        self.call_timings = call_timings or CallTimings()
        """Per-call ``Time`` / ``Success`` of lease operations and of the default fetchers'
        Kinesis calls (the KCL's per-call metrics; off until a reporter turns them on)."""
        self.coordinator = _coordinator(config, self.store, clock, self.call_timings)
        """Takes and renews this worker's leases (driven by the worker's own loops)."""
        url = (endpoint.url if endpoint else None) or endpoint_url(self.client)
        fetchers = fetcher_factory or config.fetchers(self.client, clock, self.call_timings)
        cleaner = LeaseCleaner(self.store, grace=config.garbage_lease_grace, clock=clock)
        self.shards = StreamShards(
            config, self.client, self.coordinator, fetchers, url=url, emit=self._emit,
            cleaner=cleaner,
        )  # fmt: skip
        """Shard descriptions, shard sync and the parent rule (the host of shard tasks)."""
        self._state = ConsumerState.NEW
        self._tasks: dict[str, ShardTask] = {}
        """The latest task of each shard."""
        self._live: set[ShardTask] = set()
        """Every shard task not finished yet (a superseded one included)."""
        self._releases: set[asyncio.Task[None]] = set()
        self._totals = ShardTotals()
        self._stopped = asyncio.Event()
        self._listeners: list[ConsumerListener] = []
        self._factory: ProcessorFactory | None = None
        self._channel: BatchChannel | None = None
        self._loops: list[PeriodicStep] = []
        self._shutdown: asyncio.Task[None] | None = None
        self._stop_requested = False
        self._error: BaseException | None = None

    # -- lifecycle -------------------------------------------------------------------

    @property
    def state(self) -> ConsumerState:
        """Where the consumer is in its lifecycle."""
        return self._state

    @property
    def worker_id(self) -> str:
        """This worker's id (``leaseOwner`` in the lease table)."""
        return self.config.worker_id

    async def start(
        self,
        processor_factory: ProcessorFactory | None = None,
        *,
        listed: list[ShardInfo] | None = None,
    ) -> None:
        """Check the stream, create the lease table if absent, sync shards, start the loops.

        Without ``processor_factory`` the consumer is consumed with ``async for``.
        ``listed``: the shards as the caller just listed them through
        ``self.shards.list_shards()``; the check and the first sync use that listing
        instead of one ListShards each (a later reshard is found as always: by the
        parents' SHARD_END and the periodic audit). Raises
        :class:`StreamNotFoundError` for a missing stream (before anything is created),
        :class:`EndpointUnreachableError` / :class:`CredentialsError` after bounded retries,
        :class:`ConsumerError` if the lease table cannot be reached.
        """
        if self._state is not ConsumerState.NEW:
            raise ConsumerStateError(f"consumer already {self._state}; create a new one")
        self._state = ConsumerState.STARTING
        if processor_factory is None:
            channel = self._channel = BatchChannel()
            processor_factory = partial(ChannelProcessor, channel)
        self._factory = processor_factory
        try:
            if listed is None:
                listed = await self.shards.list_shards()
            await self._start_leases()
            await self.shards.sync(listed)
        except BaseException:
            self._finish_stop()
            raise
        self.coordinator.add_listener(self._on_lease_event)
        cfg, coordinator = self.config, self.coordinator
        self._loops = [
            PeriodicStep("take", coordinator.take_interval, self._take_cycle,
                         on_error=self._fail, is_transient=retry_later),
            PeriodicStep("renew", coordinator.renew_interval, coordinator.renew_once,
                         on_error=self._fail, is_transient=retry_later, run_first_at_once=False,
                         fixed_rate=True),
            PeriodicStep("shard-audit", cfg.shard_sync_interval, self.shards.periodic_sync,
                         on_error=self._fail, is_transient=retry_later, run_first_at_once=False),
            PeriodicStep("lease-cleanup", cfg.lease_cleanup_interval, self.shards.cleanup,
                         on_error=self._fail, is_transient=retry_later, run_first_at_once=False),
        ]  # fmt: skip
        for loop in self._loops:
            loop.start()
        self.shards.wake_sync = self._loops[2].wake
        self._state = ConsumerState.RUNNING
        if self._stop_requested:
            self.request_stop()

    async def run(self, processor_factory: ProcessorFactory) -> None:
        """Start with ``processor_factory`` and run until stopped (:meth:`stop`, SIGTERM via
        :func:`install_signal_handlers`) or failed; re-raises the error that stopped it.
        Cancelling ``run`` shuts down gracefully first."""
        await self.start(processor_factory)
        try:
            await self.join()
        except asyncio.CancelledError:
            await self.stop()
            raise

    def request_stop(self) -> None:
        """Begin a graceful shutdown without waiting (safe in a signal handler)."""
        self._stop_requested = True
        if self._state is ConsumerState.RUNNING and self._shutdown is None:
            self._shutdown = asyncio.create_task(self._graceful_shutdown(), name="shutdown")

    async def stop(self) -> None:
        """Graceful shutdown; returns once every lease is released. Idempotent.

        Order: stop taking leases and syncing; abandon reads in flight (never delivered);
        let each ``process_records`` in flight finish (up to ``shutdown_grace``, then it
        is cancelled and that shard gets no more callbacks); call ``shutdown_requested``
        (the processor checkpoints there); stop renewing; release every lease (owner
        cleared), so other workers take them on their next take cycle without waiting for
        ``failover_time``. With default settings a take cycle runs every ``2 *
        failover_time`` = 20 s, so the hand-off completes within 20 s; with
        ``take_interval=0.5`` on the other workers it takes well under 2 s (measured in
        ``streamkit_kinesis_tests/consumer/test_failover.py``).
        """
        self.request_stop()
        if self._shutdown is None and self._state is ConsumerState.STARTING:
            await self._stopped.wait()  # start() ends by honouring the stop asked meanwhile
        if self._shutdown is not None:
            await asyncio.shield(self._shutdown)

    async def join(self) -> None:
        """Wait until the consumer stopped; re-raise the error that stopped it, if any."""
        if self._state is ConsumerState.NEW:
            raise ConsumerStateError("the consumer was not started; call start() or run()")
        await self._stopped.wait()
        if self._error is not None:
            raise self._error

    async def __aenter__(self) -> KinesisConsumer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- consuming with async for ----------------------------------------------------

    def batches(self, *, auto_checkpoint: bool = True) -> AsyncIterator[ConsumedBatch]:
        """Batches of every held shard, each shard in order (see :mod:`.batches` for when
        checkpoints happen). Ends when the consumer stops; raises its error if it failed."""
        if self._channel is None:
            raise ConsumerStateError(
                "iterate a consumer started without a processor factory "
                "(`async with KinesisConsumer(...) as c: async for batch in c`)"
            )
        self._channel.auto_checkpoint = auto_checkpoint
        return self._iterate(self._channel)

    def __aiter__(self) -> AsyncIterator[ConsumedBatch]:
        return self.batches()

    async def _iterate(self, channel: BatchChannel) -> AsyncIterator[ConsumedBatch]:
        while (item := await channel.next(self._stopped.wait)) is not None:
            yield item
        if self._error is not None:
            raise self._error

    # -- observing -------------------------------------------------------------------

    def add_listener(self, listener: ConsumerListener) -> None:
        """Call ``listener`` for every :class:`ConsumerEvent` from now on."""
        self._listeners.append(listener)

    def held_shard_ids(self) -> frozenset[str]:
        """Shards whose lease this worker holds right now."""
        return self.coordinator.held.shard_ids()

    def metrics(self) -> ConsumerMetrics:
        """A snapshot: per shard lag, records, bytes, throttles; lease and DynamoDB counts."""
        leases = self.coordinator.metrics()
        live = [
            (t.reader_metrics(), t.shard_id, t.checkpointer.writes) for t in self._tasks.values()
        ]
        return ConsumerMetrics(
            worker_id=self.worker_id,
            shards=self._totals.snapshot(live, self.held_shard_ids()),
            leases=leases,
            dynamodb_calls=leases.store_calls,
            dynamodb_calls_by_operation=leases.store_calls_by_operation,
            shard_syncs=self.shards.syncs,
        )

    def _emit(self, kind: ConsumerEventKind, shard_id: str | None = None, detail: str = "") -> None:
        event = ConsumerEvent(kind, shard_id, detail, held=len(self.coordinator.held))
        for listener in list(self._listeners):
            listener(event)

    # -- leases and shard tasks ------------------------------------------------------

    async def _start_leases(self) -> None:
        try:
            await self.coordinator.start(background=False)
        except LeaseStoreUnavailableError as e:
            raise ConsumerError(
                f"cannot reach the lease table {self.config.app_name!r} of this consumer: "
                f"{e}. Check the DynamoDB endpoint and credentials."
            ) from e

    async def _take_cycle(self) -> None:
        was_leader = self.coordinator.is_leader
        decision = await self.coordinator.take_once()
        if decision.announce:  # look again soon (see decide_takes)
            take_loop = self._loops[0]
            asyncio.get_running_loop().call_later(self.coordinator.next_take_delay, take_loop.wake)
        self._reconcile()
        held = sorted(self.coordinator.held.shard_ids())
        self._emit(ConsumerEventKind.TAKE_CYCLE, detail=f"target={decision.target} held={held}")
        if self.coordinator.is_leader != was_leader:
            role = "leader" if self.coordinator.is_leader else "follower"
            self._emit(ConsumerEventKind.LEADER_CHANGED, detail=role)

    def _on_lease_event(self, event: LeaseEvent) -> None:
        # The task starts before anything else runs: emitting re-enters the held view
        # (``held=len(...)`` expires stale leases), which may report THIS lease lost at
        # once (a take that outlasted failover_time); the loss must find its task.
        if event.kind is LeaseEventKind.GAINED and self._state is ConsumerState.RUNNING:
            self._start_task(event.lease)
        elif event.kind is LeaseEventKind.LOST and (task := self._tasks.get(event.shard_id)):
            task.lose(event.reason)
        self._emit(_EVENT_KINDS[event.kind], event.shard_id, event.reason)

    def _start_task(self, lease: Lease) -> None:
        assert self._factory is not None
        previous = self._tasks.get(lease.lease_key)
        after = previous.task if previous is not None and not previous.task.done() else None
        if previous is not None and after is not None:
            # gained again, so the lease was not held in between: the old task is done for
            previous.lose("superseded: the lease was lost and taken again")
        checkpointer = ShardCheckpointer(self.store, self.coordinator.held, lease.lease_key)
        task = ShardTask(self.shards, lease, checkpointer, self._factory, after)
        self._tasks[lease.lease_key] = task
        self._live.add(task)
        task.task.add_done_callback(partial(self._task_done, task))

    def _task_done(self, task: ShardTask, fut: asyncio.Task[ShardOutcome]) -> None:
        self._live.discard(task)
        reader = task.reader_metrics()
        if reader is not None:
            self._totals.fold(reader, task.checkpointer.writes)
        if self._tasks.get(task.shard_id) is task:
            del self._tasks[task.shard_id]
        if not fut.cancelled() and (error := fut.exception()) is not None:
            self._fail(error)

    def _reconcile(self) -> None:
        """The watchdog of every take cycle: a held lease is read, or released.

        A task whose lease is no longer held, or that a newer task of its shard superseded
        (and was not told), is stopped as lost; a held
        lease without a live task (which nothing should cause) is released with a warning,
        so that a take cycle (this worker's or another's) starts it afresh, instead of being
        renewed for ever while nobody reads it."""
        if self._state is not ConsumerState.RUNNING:
            return
        held = self.coordinator.held.shard_ids()
        for task in list(self._live):
            current = task.shard_id in held and self._tasks.get(task.shard_id) is task
            if not current and not task.is_lost() and not task.task.done():
                log.warning("shard %s: task running without its lease; stopping it", task.shard_id)
                task.lose("the lease is no longer held by this worker for this task")
        for shard_id in sorted(held):
            latest = self._tasks.get(shard_id)
            if latest is None or latest.task.done() or latest.is_lost():
                log.warning("shard %s: lease held but no task reads it; releasing it", shard_id)
                release = asyncio.create_task(self._release_unread(shard_id))
                self._releases.add(release)
                release.add_done_callback(self._releases.discard)

    async def _release_unread(self, shard_id: str) -> None:
        try:
            await self.coordinator.release(shard_id)
        except Exception as e:  # it expires instead (failover_time)
            log.warning("shard %s: could not release the unread lease: %r", shard_id, e)

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            log.error("consumer %s stopping after an error: %r", self.worker_id, error)
            self._error = error
        self.request_stop()

    # -- shutdown --------------------------------------------------------------------

    async def _graceful_shutdown(self) -> None:
        try:
            await self._hand_off()
        finally:
            self._finish_stop()

    async def _hand_off(self) -> None:
        self._state = ConsumerState.STOPPING
        self._emit(ConsumerEventKind.STOPPING)
        if self._channel is not None:
            self._channel.close()
        take, renew, sync, cleanup = self._loops
        await asyncio.gather(take.stop(), sync.stop(), cleanup.stop())
        if self._releases:
            await asyncio.wait(self._releases, timeout=self.config.lease_call_timeout * 4)
        await self._stop_tasks()
        await renew.stop()
        try:
            await self.coordinator.release_all()
        except Exception as e:
            log.error("consumer %s could not release its leases: %r", self.worker_id, e)
            await self.coordinator.stop()
            if self._error is None:
                self._error = e

    async def _stop_tasks(self) -> None:
        """Stop every live shard task (a superseded one too): batches in flight finish
        within ``shutdown_grace``, then are dropped; a task that does not end even then
        (it should not happen) is left behind after a bounded wait, logged, so that the
        leases are released anyway."""
        tasks = list(self._live)
        held = self.coordinator.held.shard_ids()
        for task in tasks:
            if task.shard_id in held:
                task.request_shutdown()
            else:
                task.lose("the consumer is stopping and no longer holds this lease")
        if not tasks:
            return
        await asyncio.wait([t.task for t in tasks], timeout=self.config.shutdown_grace)
        for task in tasks:
            if not task.task.done():
                log.warning("shard %s: in-flight batch dropped at shutdown", task.shard_id)
                task.drop()
        _, stuck = await asyncio.wait([t.task for t in tasks], timeout=DROP_WAIT)
        for fut in stuck:
            log.error("consumer %s: a shard task did not end %.0fs after it was cancelled; "
                      "releasing its lease anyway: %r", self.worker_id, DROP_WAIT, fut)  # fmt: skip

    def _finish_stop(self) -> None:
        if self._owns_client:
            closer = getattr(self.client, "close", None)
            if callable(closer):
                closer()
        self._state = ConsumerState.STOPPED
        self._stopped.set()
        self._emit(ConsumerEventKind.STOPPED)


def _need(endpoint: AwsEndpoint | None) -> AwsEndpoint:
    if endpoint is None:  # pragma: no cover - __init__ fills it in from the environment
        raise ConsumerStateError("an AwsEndpoint is needed to build the missing clients")
    return endpoint


def _coordinator(
    config: ConsumerConfig,
    store: LeaseStore,
    clock: Callable[[], float],
    timings: CallTimings | None = None,
) -> LeaseCoordinator:
    return LeaseCoordinator(
        store,
        config.worker_id,
        failover_time=config.failover_time,
        renew_interval=config.renew_interval,
        take_interval=config.take_interval,
        clock=clock,
        max_steal=config.max_steal,
        max_leases=config.max_leases,
        elect_leader=config.elect_leader,
        timings=timings,
        announce=config.announce,
    )
