"""Aggregation tasks of a fleet: one record processor per exchange shard lease (table
``<app>-exchange``), each a micro-batch query of its own.

A batch is the chunks of one delivery. In this order (the engine's commit protocol):
``offsets/N`` (the exchange shard's last sequence number) in the task's checkpoint log
``<root>/exchange/<shard id>/``; :meth:`AggregationStage.apply` (chunks already applied are
dropped by the dedup map); the sink writes batch N under task-unique names
(``part-<shard id>-<N>-...``); ``state/N`` (store, dedup map, per-source maxima);
``commits/N``; only then the exchange lease checkpoint. A task that takes the lease over
restores the last committed state, so chunks re-delivered after that commit are dropped as
duplicates and a batch that never committed runs again under its id (the file sink replaces
its first attempt's files). Between deliveries a ticker runs a batch without input when the
stage owes one (the fleet watermark moved, e.g. a silent source shard went idle).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from streamkit.streaming.checkpoint import CheckpointLog
from streamkit.streaming.checkpoint_store import open_checkpoint_store
from streamkit_kinesis.consumer import BaseRecordProcessor
from streamkit_kinesis.fleet.reader import from_batch
from streamkit_kinesis.fleet.status import TaskStatus, ticks_to_ms, write_status
from streamkit_kinesis.leases import LeaseLostError

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Sequence

    from streamkit.fleet.aggregation_stage import AggregationStage
    from streamkit.fleet.member import FleetSpec
    from streamkit.streaming.contracts import CheckpointStore, Sink
    from streamkit.streaming.incremental import BatchResult
    from streamkit_kinesis.leases import Checkpointer
    from streamkit_kinesis.types import ExtendedSequenceNumber, RecordBatch

log = logging.getLogger(__name__)


class AggregationTask(BaseRecordProcessor):
    """The aggregation task of one exchange shard (see the module docstring)."""

    def __init__(
        self,
        spec: FleetSpec,
        store: CheckpointStore,
        lag: Callable[[str], int | None],
        sources: Callable[[], Collection[str]],
        clock: Callable[[], float] = time.monotonic,
        *,
        unsettled: Callable[[], Collection[str]] = frozenset,
    ) -> None:
        self.spec, self.root, self._lag, self._clock = spec, store, lag, clock
        self._sources = sources
        """The source shards the fleet watermark waits for (the unfinished source leases)."""
        self._unsettled = unsettled
        """Source shards whose lease is changing hands: never taken for idle."""
        self.shard = ""
        self.stage: AggregationStage | None = None
        self.log: CheckpointLog | None = None
        self.sink: Sink | None = None
        self.next_id = 0
        self.offset: str | None = None
        """The exchange position of the last committed batch."""
        self._read: str | None = None
        """The last exchange record delivered to this task (order check)."""
        self._lock = asyncio.Lock()
        self.lost = False
        """The lease was lost: nothing more is done here."""
        self._failure: Exception | None = None
        """What stopped the no-data ticker (re-raised by the next delivery)."""
        self._ticker: asyncio.Task[None] | None = None

    async def initialize(self, shard_id: str, start: ExtendedSequenceNumber) -> None:
        """Restore the task's last committed batch and start the no-data ticker."""
        self.shard = shard_id
        await asyncio.to_thread(self._restore)
        self._ticker = asyncio.create_task(self._tick(), name=f"fleet-tick-{shard_id}")

    def _restore(self) -> None:
        from streamkit.fleet.aggregation_stage import AggregationStage

        spec = self.spec
        where = f"{spec.checkpoint.rstrip('/')}/exchange/{self.shard}"
        log = self.log = CheckpointLog(open_checkpoint_store(where))
        stage = self.stage = AggregationStage(
            spec.fleet_plan, idle_timeout=spec.options.idle_timeout, query=spec.name
        )
        last = log.latest()
        if last is not None:
            stage.restore(log, last.batch_id)
            self.next_id = last.batch_id + 1
            self.offset = last.offsets.get(self.shard)
        self.sink = spec.sink(self.shard)

    async def process_records(self, batch: RecordBatch, checkpointer: Checkpointer) -> None:
        """One micro-batch of the delivered chunks; the lease checkpoint after its commit."""
        if self.lost:
            return
        if self._failure is not None:
            raise self._failure
        records = from_batch(batch, self._read)  # in order, none KPL-aggregated
        last = self._read = records[-1].sequence_number
        try:
            async with self._lock:
                await self._batch([r.data for r in records], last)
                await checkpointer.checkpoint(last)
                await self._owed()
        except LeaseLostError as e:  # the next owner restores from the last commit
            self.lost = True
            log.info("aggregation task %s: lease lost (%s)", self.shard, e)

    async def _batch(self, chunks: Sequence[bytes] | None, last: str | None) -> None:
        """Batch N: offsets, apply (or a batch without input), sink, state, commit."""
        stage, log, sink = self.stage, self.log, self.sink
        assert stage is not None
        assert log is not None
        assert sink is not None
        bid = self.next_id
        offset = last or self.offset
        offsets = {self.shard: offset} if offset is not None else {}
        await asyncio.to_thread(log.write_offsets, bid, offsets)
        now = self._clock()
        stage.expect_sources(self._sources())
        stage.hold_sources(self._unsettled())
        if chunks is None:
            result: BatchResult = await asyncio.to_thread(stage.run_no_data, now)
        else:
            result = await asyncio.to_thread(stage.apply, chunks, now)
        await sink.add_batch(bid, result.output.to_arrow())
        await asyncio.to_thread(stage.checkpoint_state, log, bid)
        await asyncio.to_thread(log.write_commit, bid, offsets, {"watermark": result.watermark})
        self.next_id, self.offset = bid + 1, offset
        status = TaskStatus(
            "aggregation", self.shard, self.spec.worker_id, bid,
            self._watermark_ms(), self._lag(self.shard), result.output.height,
            stage.duplicates_dropped,
        )  # fmt: skip
        await asyncio.to_thread(write_status, self.root, status)

    async def _owed(self) -> None:
        """Run batches without input while the stage owes one (Spark's no-data batch)."""
        stage = self.stage
        assert stage is not None
        while stage.owes_batch:
            await self._batch(None, None)

    async def _tick(self) -> None:
        """Between deliveries, run the batch a moved fleet watermark owes."""
        period = max(self.spec.interval, 1.0)
        try:
            while True:
                await asyncio.sleep(period)
                async with self._lock:
                    stage = self.stage
                    if stage is not None:
                        stage.expect_sources(self._sources())
                        stage.hold_sources(self._unsettled())
                        stage.refresh(self._clock())
                    await self._owed()
        except Exception as e:  # raised by the next delivery: the consumer stops loudly
            self._failure = e

    def _watermark_ms(self) -> int | None:
        """The fleet watermark this task uses, in ms."""
        stage = self.stage
        return ticks_to_ms(self.spec.fleet_plan, stage.fleet_watermark if stage else None)

    async def _stop_ticker(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None

    async def lease_lost(self, shard_id: str) -> None:
        """Stop the ticker; the next owner restores from the last commit."""
        await self._stop_ticker()

    async def shutdown_requested(self, shard_id: str, checkpointer: Checkpointer) -> None:
        """Stop the ticker (every batch was checkpointed when it committed)."""
        await self._stop_ticker()

    async def shard_ended(self, shard_id: str, checkpointer: Checkpointer) -> None:
        """The exchange stream is never resharded; checkpoint SHARD_END if it was."""
        await self._stop_ticker()
        await checkpointer.checkpoint()
