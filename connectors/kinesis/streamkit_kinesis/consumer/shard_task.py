"""One task per held shard: wait for parents, read, hand batches to the processor.

The shard is read through a :class:`~streamkit_kinesis.retrieval.fetcher.RecordFetcher`
built by the host's factory (polling by default), closed when the task stops.

A :class:`ShardTask` runs its work in an inner asyncio task so that it can stop it at once:

- lease lost: the in-flight read or ``process_records`` is cancelled on the spot, nothing
  is checkpointed, then ``lease_lost`` is called;
- graceful shutdown: a read in flight is abandoned (its records were never delivered), a
  ``process_records`` in flight is allowed to finish, then ``shutdown_requested`` is called;
  past the grace period the consumer :meth:`ShardTask.drop` s it instead (no callback);
- SHARD_END: the children's leases are created first (KCL order: a crash after the
  checkpoint cannot lose them), then ``shard_ended`` is called, and SHARD_END is
  checkpointed if the processor did not do it, before the worker releases the lease;
- a vanished shard (ResourceNotFound while the stream exists: trimmed after retention, or
  not listed) is ended the same way, as KCL does, instead of stopping the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from streamkit.errors import ConfigError
from streamkit_kinesis.kpl import position
from streamkit_kinesis.leases import Checkpointer, Lease
from streamkit_kinesis.retrieval.fetcher import ReaderMetrics
from streamkit_kinesis.types import AT_TIMESTAMP, SHARD_END, RecordBatch

from .processor import InitializationInput

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from datetime import datetime

    from streamkit_kinesis.leases import HeldLeases, LeaseStore
    from streamkit_kinesis.retrieval.fetcher import FetcherFactory, RecordFetcher
    from streamkit_kinesis.types import ExtendedSequenceNumber, ShardInfo

    from .config import ConsumerConfig
    from .processor import ProcessorFactory, RecordProcessor

log = logging.getLogger(__name__)


class ShardOutcome(StrEnum):
    """How a shard task ended."""

    ENDED = "ended"
    """Read to SHARD_END and checkpointed there."""
    SHUTDOWN = "shutdown"
    """Stopped gracefully; ``shutdown_requested`` was called (unless it never started)."""
    LOST = "lost"
    """Lease lost: stopped at once, ``lease_lost`` called, nothing checkpointed."""
    DROPPED = "dropped"
    """Cancelled after the shutdown grace period; no callback, nothing checkpointed."""


class ShardHost(Protocol):
    """What a shard task needs from its worker."""

    config: ConsumerConfig

    @property
    def fetchers(self) -> FetcherFactory:
        """Builds the :class:`~streamkit_kinesis.retrieval.fetcher.RecordFetcher` of a shard."""
        ...

    async def shard_info(self, shard_id: str) -> ShardInfo:
        """The shard's description (ListShards), refreshed if unknown."""
        ...

    async def parents_done(self, lease: Lease) -> bool:
        """True when every parent of ``lease`` is checkpointed at SHARD_END (or gone)."""
        ...

    async def wait_for_parent_progress(self, stop: asyncio.Event) -> None:
        """Sleep up to ``parent_poll_interval``, or less if a shard ends here or ``stop``."""
        ...

    def shard_started(self, shard_id: str, start: ExtendedSequenceNumber) -> None:
        """The processor was initialized; reading starts after ``start``."""
        ...

    async def shard_vanished(self, shard_id: str, error: BaseException) -> bool:
        """True when ``error`` means the shard is gone but the stream is not (end it)."""
        ...

    async def shard_ending(
        self,
        shard_id: str,
        child_shard_ids: tuple[str, ...],
        child_shards: tuple[ShardInfo, ...] = (),
    ) -> None:
        """The shard reached its end: create the children's leases (before the checkpoint);
        ``child_shards``: those the server described (``ChildShards``)."""
        ...

    async def shard_finished(self, shard_id: str, child_shard_ids: tuple[str, ...]) -> None:
        """The shard is checkpointed at SHARD_END: release the lease."""
        ...


class VanishedShard:
    """The fetcher of a shard that is no longer in the stream: it has ended, with nothing
    more to read and no known children (the shard list names them, if any)."""

    def __init__(self, shard_id: str) -> None:
        self.shard_id = shard_id

    async def next_batch(self) -> RecordBatch:
        """An empty ``shard_ended`` batch, every time."""
        return RecordBatch(self.shard_id, (), None, shard_ended=True)

    def metrics(self) -> ReaderMetrics:
        """All zero."""
        return ReaderMetrics(self.shard_id, 0, 0, 0, 0, 0, None)

    async def close(self) -> None:
        """Nothing to release."""


class ShardCheckpointer(Checkpointer):
    """The checkpointer handed to processors: the lease checkpointer, counting its writes.

    Same guarantees as :class:`~streamkit_kinesis.leases.Checkpointer`: durable on
    return; conditional on still owning the lease (else LeaseLostError, nothing written);
    only forward.
    """

    def __init__(self, store: LeaseStore, held: HeldLeases, shard_id: str) -> None:
        super().__init__(store, held, shard_id)
        self.writes = 0
        """Checkpoints written through this checkpointer."""

    async def checkpoint(self, position: ExtendedSequenceNumber | str | None = None) -> Lease:
        """See :meth:`Checkpointer.checkpoint`."""
        wrote = position is not None or self.last_delivered is not None
        lease = await super().checkpoint(position)
        self.writes += wrote
        return lease


class ShardTask:
    """Runs one shard for as long as this worker holds its lease (see module docstring)."""

    def __init__(
        self,
        host: ShardHost,
        lease: Lease,
        checkpointer: ShardCheckpointer,
        factory: ProcessorFactory,
        after: asyncio.Task[ShardOutcome] | None = None,
    ) -> None:
        self.shard_id = lease.lease_key
        self.checkpointer = checkpointer
        self._host = host
        self._lease = lease
        self._factory = factory
        self._stop = asyncio.Event()
        self._lost_reason: str | None = None
        self._fetcher: RecordFetcher | None = None
        self._processor: RecordProcessor | None = None
        self._work: asyncio.Task[ShardOutcome] | None = None
        self.started_at: ExtendedSequenceNumber | None = None
        """The checkpoint reading started from (None while waiting for parents)."""
        self.task: asyncio.Task[ShardOutcome] = asyncio.create_task(
            self._run(after), name=f"shard-{self.shard_id}"
        )

    def reader_metrics(self) -> ReaderMetrics | None:
        """The live fetcher's counters (None before reading started)."""
        return None if self._fetcher is None else self._fetcher.metrics()

    def is_lost(self) -> bool:
        """True once the lease was reported lost."""
        return self._lost_reason is not None

    def request_shutdown(self) -> None:
        """Graceful stop: abandon a read in flight, finish a batch in flight, then stop."""
        self._stop.set()

    def lose(self, reason: str) -> None:
        """The lease is gone: cancel the read / processing in flight at once."""
        if self._lost_reason is None:
            self._lost_reason = reason
            self._stop.set()  # also ends a wait for the previous task (nothing started)
            if self._work is not None:
                self._work.cancel()

    async def _wait_for(self, previous: asyncio.Task[ShardOutcome]) -> None:
        """Until ``previous`` ends, or this task is stopped or lost before starting."""
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait([previous, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()

    def drop(self) -> None:
        """Cancel whatever runs now (shutdown grace exceeded); no callback follows."""
        self._stop.set()
        if self._work is not None:
            self._work.cancel()
        elif not self.task.done():
            self.task.cancel()  # still waiting for its predecessor: nothing started

    async def _run(self, after: asyncio.Task[ShardOutcome] | None) -> ShardOutcome:
        if after is not None:  # the previous task for this shard finishes first
            await self._wait_for(after)
        if self.is_lost():
            return ShardOutcome.LOST
        if self._stop.is_set():
            return ShardOutcome.SHUTDOWN
        work = self._work = asyncio.create_task(self._body(), name=f"shard-{self.shard_id}-work")
        try:
            await asyncio.wait([work])
        finally:
            if not work.done():  # this task itself was cancelled: take the work with it
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
        failed = work.cancelled() or work.exception() is not None
        if failed and self.is_lost():
            log.info("shard %s stopped: lease lost (%s)", self.shard_id, self._lost_reason)
            if self._processor is not None and self.started_at is not None:
                await self._processor.lease_lost(self.shard_id)
            return ShardOutcome.LOST
        if work.cancelled():
            return ShardOutcome.DROPPED
        error = work.exception()
        if error is not None:
            error.add_note(f"while consuming shard {self.shard_id}")
            raise error
        return work.result()

    async def _body(self) -> ShardOutcome:
        while not await self._host.parents_done(self._lease):
            if self._stop.is_set():
                return ShardOutcome.SHUTDOWN
            await self._host.wait_for_parent_progress(self._stop)
        if self._stop.is_set():
            return ShardOutcome.SHUTDOWN
        lease = self.checkpointer.last_checkpoint or self._lease.checkpoint
        self._fetcher = fetcher = await self._open_fetcher(lease)
        try:
            return await self._read(fetcher, lease)
        finally:
            await fetcher.close()

    async def _read(self, fetcher: RecordFetcher, lease: ExtendedSequenceNumber) -> ShardOutcome:
        self._processor = processor = self._factory()
        await self._initialize(processor, lease)
        self.started_at = lease
        self._host.shard_started(self.shard_id, lease)
        hook = getattr(processor, "at_tip", None)
        tip = functools.partial(hook, self.shard_id) if callable(hook) else None
        while (batch := await self._next(fetcher, tip)) is not None:
            if batch.records:
                self.checkpointer.mark_delivered(position(batch.records[-1]))
                await processor.process_records(batch, self.checkpointer)
            if batch.shard_ended:
                await self._end(processor, batch)
                return ShardOutcome.ENDED
            if self._stop.is_set():
                break
        await processor.shutdown_requested(self.shard_id, self.checkpointer)
        return ShardOutcome.SHUTDOWN

    async def _initialize(self, processor: RecordProcessor, start: ExtendedSequenceNumber) -> None:
        """``initialize_with`` (with the lease's pending checkpoint) if the processor has
        it, else ``initialize(shard_id, start)``."""
        initialize_with = getattr(processor, "initialize_with", None)
        if not callable(initialize_with):
            await processor.initialize(self.shard_id, start)
            return
        held = self.checkpointer.pending_checkpoint
        pending = held if held is not None else self._lease.pending_checkpoint
        counter = self.checkpointer.lease_counter
        await initialize_with(InitializationInput(self.shard_id, start, pending, counter))

    async def _open_fetcher(self, checkpoint: ExtendedSequenceNumber) -> RecordFetcher:
        config = self._host.config
        start: ExtendedSequenceNumber | datetime = checkpoint
        if checkpoint == AT_TIMESTAMP:
            timestamp = config.initial_position.timestamp
            if timestamp is None:
                raise ConfigError(
                    f"lease {self.shard_id} starts AT_TIMESTAMP but this worker's "
                    "initial_position has no timestamp; use the same ConsumerConfig."
                    "initial_position on every worker of the application"
                )
            start = timestamp
        try:
            info = await self._host.shard_info(self.shard_id)
        except Exception as error:
            if await self._host.shard_vanished(self.shard_id, error):
                return VanishedShard(self.shard_id)
            raise
        return self._host.fetchers(info, start)

    async def _next(
        self, fetcher: RecordFetcher, tip: Callable[[], Awaitable[None]] | None = None
    ) -> RecordBatch | None:
        """The next non-empty (or SHARD_END) batch; None once shutdown was requested.
        ``tip`` is awaited after each read that found nothing at the shard's tip (no
        records, ``MillisBehindLatest`` 0)."""
        while not self._stop.is_set():
            read = asyncio.ensure_future(fetcher.next_batch())
            stop = asyncio.ensure_future(self._stop.wait())
            try:
                await asyncio.wait([read, stop], return_when=asyncio.FIRST_COMPLETED)
            finally:
                for fut in (read, stop):
                    fut.cancel()
            if read.cancelled() or not read.done():
                return None  # abandoned: what this read returns is never delivered
            if self._stop.is_set():
                read.exception()  # retrieved (and ignored): nothing was delivered
                return None
            error = read.exception()
            if error is not None:
                if await self._host.shard_vanished(self.shard_id, error):
                    return RecordBatch(self.shard_id, (), None, shard_ended=True)
                raise error
            batch = read.result()
            if batch.records or batch.shard_ended:
                return batch
            if tip is not None and batch.millis_behind_latest == 0:
                await tip()
        return None

    async def _end(self, processor: RecordProcessor, batch: RecordBatch) -> None:
        await self._host.shard_ending(self.shard_id, batch.child_shard_ids, batch.child_shards)
        self.checkpointer.mark_delivered(SHARD_END)
        await processor.shard_ended(self.shard_id, self.checkpointer)
        if self.checkpointer.last_checkpoint != SHARD_END:
            log.info("shard %s: processor did not checkpoint SHARD_END; doing it", self.shard_id)
            await self.checkpointer.checkpoint(SHARD_END)
        await self._host.shard_finished(self.shard_id, batch.child_shard_ids)
