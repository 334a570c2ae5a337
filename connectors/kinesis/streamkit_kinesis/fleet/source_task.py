"""Source tasks of a fleet: one record processor per source shard lease (table ``<app>``).

Each delivered batch of records is one source batch: decoded with the source's decoder
(bad records go to dead-letter files under ``<root>/fleet/dead_letters/``), run through
the :class:`~streamkit.fleet.source_stage.SourceStage` (filter, project, pre-aggregate),
then

- with an exchange (a stateful plan): one chunk per exchange partition, emitted by the
  two-phase checkpoint (:func:`~streamkit_kinesis.fleet.two_phase.emit_exactly_once`:
  pending checkpoint, put, checkpoint). A task that starts on a lease carrying a pending
  checkpoint first re-reads exactly ``(checkpoint, pending]`` as one batch, so the chunks
  it emits again carry the range end of the first attempt and are dropped downstream;
- without one (a stateless plan): the rows go straight to the sink under the shard's own
  checkpoint log ``<root>/source/<shard id>/`` (offsets, sink, commit, then the lease
  checkpoint). A batch logged but not committed is re-run with exactly its records; records
  at or before the committed offset (committed, lease checkpoint not yet written) are
  skipped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import polars as pl

from streamkit.streaming.checkpoint import CheckpointLog
from streamkit.streaming.checkpoint_store import open_checkpoint_store
from streamkit_kinesis.consumer import BaseRecordProcessor
from streamkit_kinesis.fleet.status import TaskStatus, source_watermark_ms, write_status
from streamkit_kinesis.fleet.two_phase import ReplayRange, emit_exactly_once, replay_range
from streamkit_kinesis.leases import LeaseLostError
from streamkit_kinesis.source.batch import decode_taken
from streamkit_kinesis.types import ExtendedSequenceNumber

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import pyarrow as pa

    from streamkit.fleet.member import FleetSpec
    from streamkit.fleet.source_stage import SourceOutput
    from streamkit.streaming.contracts import CheckpointStore, Sink
    from streamkit.streaming.decode import Decoder
    from streamkit_kinesis.consumer import InitializationInput
    from streamkit_kinesis.fleet.writer import ExchangeWriter
    from streamkit_kinesis.leases import Checkpointer
    from streamkit_kinesis.types import KinesisRecord, RecordBatch

log = logging.getLogger(__name__)

FAULT_ENV = "STREAMKIT_FLEET_FAULT"
"""Fault injection for tests: ``kill_before_checkpoint:<n>`` SIGKILLs this process after the
put of its ``n``-th exchange batch, before that batch's checkpoint (issue 14, test 4)."""


def _fault_after() -> int | None:
    kind, _, n = os.environ.get(FAULT_ENV, "").partition(":")
    return int(n) if kind == "kill_before_checkpoint" and n.isdigit() else None


@dataclass
class SourceContext:
    """What every source task of one worker shares."""

    spec: FleetSpec
    decoder: Decoder
    store: CheckpointStore
    """The checkpoint root."""
    writer: ExchangeWriter | None
    """The exchange writer (None: a stateless plan, no exchange)."""
    partitions: int
    """Exchange partitions (0 for a stateless plan)."""
    lag: Callable[[str], int | None]
    """MillisBehindLatest of a shard."""
    emitted: int = 0
    """Exchange batches emitted by this worker (the fault hook counts them)."""
    fault_after: int | None = field(default_factory=_fault_after)


async def _sigkill() -> None:
    """The fault hook: die as a SIGKILL does, between the put and the checkpoint."""
    os.kill(os.getpid(), signal.SIGKILL)


class SourceTask(BaseRecordProcessor):
    """The source task of one shard (see the module docstring)."""

    def __init__(self, ctx: SourceContext) -> None:
        from streamkit.fleet.source_stage import SourceStage
        from streamkit.streaming.incremental import IncrementalQuery

        self.ctx = ctx
        fleet = ctx.spec.fleet_plan
        self.stage = None if fleet.stateless else SourceStage(fleet)
        self.engine = IncrementalQuery(fleet.plan, fleet.mode) if fleet.stateless else None
        self.shard = ""
        self.first: str | None = None
        """The checkpoint the next batch starts after (None: the shard's start)."""
        self.replay: ReplayRange | None = None
        """While set, records up to its end are held and run as one batch (exact re-read)."""
        self.skip_to: int | None = None
        """Records at or before it were committed already (stateless plans)."""
        self.held: list[KinesisRecord] = []
        self.max_event: int | None = None
        self.batches = 0
        self.log: CheckpointLog | None = None
        self.sink: Sink | None = None
        self.next_id = 0
        self.lost = False
        """The lease was lost: nothing more is done here."""

    async def initialize_with(self, init: InitializationInput) -> None:
        """Find where this task resumes: a pending checkpoint (exchange) or a logged batch
        that never committed (stateless) is re-read exactly before anything else."""
        self.shard = init.shard_id
        self.first = None if init.start.is_sentinel else init.start.sequence_number
        if self.ctx.writer is not None:
            self.replay = replay_range(init.start, init.pending_checkpoint)
            return
        await asyncio.to_thread(self._open_log, init.start)

    def _open_log(self, start: ExtendedSequenceNumber) -> None:
        store = open_checkpoint_store(f"{self.ctx.spec.checkpoint.rstrip('/')}/source/{self.shard}")
        log = self.log = CheckpointLog(store)
        last = log.latest()
        if last is not None:
            self.next_id = last.batch_id + 1
            done = last.offsets.get(self.shard)
            if done is not None:
                self.skip_to = int(done)
                self.first = done
        pending = log.pending(last.batch_id if last is not None else None)
        if pending is not None and self.shard in pending[1]:
            through = ExtendedSequenceNumber(pending[1][self.shard])
            self.replay = replay_range(start, through)
        self.sink = self.ctx.spec.sink(f"source-{self.shard}")

    async def process_records(self, batch: RecordBatch, checkpointer: Checkpointer) -> None:
        """Run the batches these records complete (see :meth:`split`). A lease lost on the
        way (a step of the two-phase checkpoint refused) ends this task quietly: the next
        owner re-reads from the lease's checkpoint or pending checkpoint."""
        if self.lost:
            return
        try:
            for records in self.split(batch.records):
                await self._run(records, batch, checkpointer)
        except LeaseLostError as e:
            self.lost = True
            log.info("source task %s: lease lost (%s); the next owner takes over", self.shard, e)

    async def shard_ended(self, shard_id: str, checkpointer: Checkpointer) -> None:
        """Run what an exact re-read still holds, then checkpoint SHARD_END."""
        if self.lost:
            return
        if self.held:
            records, self.held, self.replay = self.held, [], None
            await self._run(records, None, checkpointer)
        await checkpointer.checkpoint()

    async def shutdown_requested(self, shard_id: str, checkpointer: Checkpointer) -> None:
        """Nothing: every batch run here was checkpointed when it ran (records held for
        an exact re-read are read again by the next owner)."""

    def split(self, records: Sequence[KinesisRecord]) -> list[list[KinesisRecord]]:
        """The source batches ``records`` complete: records committed already are
        dropped; while an exact re-read is due, records up to its end are held until the
        end is reached, then run as one batch; the rest as a batch of its own."""
        skip = self.skip_to
        fresh = [r for r in records if skip is None or int(r.sequence_number) > skip]
        replay = self.replay
        if replay is None:
            return [fresh] if fresh else []
        inside, tail = replay.split(fresh)
        self.held += inside
        if not tail and not replay.reached(self.held):
            return []
        out = [self.held] if self.held else []
        self.held, self.replay = [], None
        return [*out, tail] if tail else out

    async def _run(
        self, records: list[KinesisRecord], batch: RecordBatch | None, checkpointer: Checkpointer
    ) -> None:
        last = records[-1].sequence_number
        rows, dead = await decode_taken(self.ctx.decoder, {self.shard: records})
        if dead.num_rows:
            await asyncio.to_thread(self._dead_letters, dead, last)
        frame = pl.from_arrow(rows)
        assert isinstance(frame, pl.DataFrame)
        if self.stage is None:
            await self._direct(frame, last, checkpointer)
        else:
            out = await asyncio.to_thread(self.stage.run, frame)
            await self._exchange(out, last, bool(batch and batch.shard_ended), checkpointer)
        self.first = last
        self.batches += 1
        status = TaskStatus(
            "source", self.shard, self.ctx.spec.worker_id, self.batches,
            self._watermark_ms(), self.ctx.lag(self.shard), len(records), 0,
        )  # fmt: skip
        await asyncio.to_thread(write_status, self.ctx.store, status)

    async def _exchange(
        self, out: SourceOutput, last: str, ended: bool, checkpointer: Checkpointer
    ) -> None:
        """Chunks to every exchange partition, by the two-phase checkpoint."""
        ctx, batch_max = self.ctx, out.max_event
        assert self.stage is not None
        if batch_max is not None:
            self.max_event = batch_max if self.max_event is None else max(self.max_event, batch_max)
        parts = self.stage.chunks(
            out, self.shard, self.first, last, self.max_event, ended, ctx.partitions, ctx.spec.name
        )
        assert ctx.writer is not None
        ctx.emitted += 1
        die = ctx.fault_after is not None and ctx.emitted >= ctx.fault_after
        await emit_exactly_once(
            checkpointer, last, ctx.writer, parts, after_put=_sigkill if die else None
        )

    async def _direct(self, rows: pl.DataFrame, last: str, checkpointer: Checkpointer) -> None:
        """A stateless batch straight to the sink under the shard's checkpoint log."""
        log, sink, engine = self.log, self.sink, self.engine
        assert log is not None
        assert sink is not None
        assert engine is not None
        bid, offsets = self.next_id, {self.shard: last}
        await asyncio.to_thread(log.write_offsets, bid, offsets)
        result = await asyncio.to_thread(engine.run, rows)
        await sink.add_batch(bid, result.output.to_arrow())
        await asyncio.to_thread(log.write_commit, bid, offsets, {})
        self.next_id = bid + 1
        self.skip_to = int(last)
        await checkpointer.checkpoint(last)

    def _watermark_ms(self) -> int | None:
        """The shard's max event time minus the watermark delay, in ms."""
        return source_watermark_ms(self.ctx.spec.fleet_plan, self.max_event)

    def _dead_letters(self, dead: pa.Table, last: str) -> None:
        import io

        import pyarrow.parquet as pq

        buf = io.BytesIO()
        pq.write_table(dead, buf)
        self.ctx.store.write_bytes(
            f"fleet/dead_letters/{self.shard}/{last}.parquet", buf.getvalue()
        )
