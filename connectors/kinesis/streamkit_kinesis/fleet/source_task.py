"""Source tasks of a fleet: one record processor per source shard lease (table ``<app>``;
for a join of two streams, the right stream's in ``<app>-right``, each task running its
side's :class:`~streamkit.fleet.join_source.SideStage` and known as ``<stream>/<shard id>``
in its status file, dead letters and refusals).

Each delivered batch of records is one source batch: decoded with the source's decoder
(bad records go to dead-letter files under ``<root>/fleet/dead_letters/``), run through
the :class:`~streamkit.fleet.source_stage.SourceStage` (filter, project, pre-aggregate),
then

- with an exchange (a stateful plan): one chunk per exchange partition, emitted by the
  two-phase checkpoint (:func:`~streamkit_kinesis.fleet.two_phase.emit_exactly_once`:
  pending checkpoint, put, checkpoint). A task that starts on a lease carrying a pending
  checkpoint first re-reads exactly ``(checkpoint, pending]`` as one batch, so the chunks
  it emits again carry the range end of the first attempt and are dropped downstream.
  Before reading, its start markers go to every partition, so every aggregation task
  has heard of the shard and waits for it. Only the reader can tell a quiet shard from
  a slow or stalled read: once its reads have found nothing new at the shard's tip for
  ``idle_timeout`` (since the task started or its last records), its idle markers go to
  every partition, and again every ``idle_timeout`` while it stays quiet; the shard then
  stops holding the fleet watermark back until its next chunk. A shard whose reader is
  slow, stalled or dead is silent, never idle: it holds the watermark.
  At the shard's end (a split or merged parent) its end markers go to every partition
  before the SHARD_END checkpoint, so the ended shard stops holding the fleet watermark
  (its children are read only after that checkpoint, by the consumer's parent rule);
- without one (a stateless plan): the rows go straight to the sink under the shard's own
  fenced log ``<root>/source/<shard id>/`` (:mod:`streamkit.fleet.direct_log`: claimed
  with the source lease's counter as epoch; per batch offsets and commit in the owner's
  epoch folder, the fence's compare-and-swap, the sink, then the lease checkpoint). A
  batch committed whose lease checkpoint was not written is re-read exactly and written
  to the sink again (same rows); records at or before the committed offset are skipped.
  An owner refused by the fence (another claimed the task) stops quietly, before
  writing anything of the refused batch to the sink; a claim refused while this worker
  keeps the lease is escalated (:mod:`.refusals`: the worker fails naming the fix unless
  the lease is reported lost within ``confirm_after``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import polars as pl

from streamkit.fleet.fence import TaskFencedError, quiesced
from streamkit_kinesis.consumer import BaseRecordProcessor
from streamkit_kinesis.fleet import record_split as cut
from streamkit_kinesis.fleet.status import TaskStatus, claims, source_watermark_ms, write_status
from streamkit_kinesis.fleet.two_phase import ReplayRange, emit_exactly_once, replay_range
from streamkit_kinesis.leases import LeaseLostError
from streamkit_kinesis.retrieval.record_columns import RecordColumns
from streamkit_kinesis.source.batch import decode_taken
from streamkit_kinesis.types import SHARD_END, ExtendedSequenceNumber

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import pyarrow as pa

    from streamkit.fleet.direct_log import DirectTaskLog
    from streamkit.fleet.member import FleetSpec
    from streamkit.fleet.source_stage import SourceOutput
    from streamkit.streaming.contracts import CheckpointStore, Sink
    from streamkit.streaming.decode import Decoder
    from streamkit_kinesis.consumer import InitializationInput
    from streamkit_kinesis.fleet.refusals import RefusedClaims
    from streamkit_kinesis.fleet.writer import ExchangeWriter
    from streamkit_kinesis.leases import Checkpointer
    from streamkit_kinesis.types import KinesisRecord, RecordBatch

log = logging.getLogger(__name__)

FAULT_ENV = "STREAMKIT_FLEET_FAULT"
"""Fault injection for tests: ``kill_before_checkpoint:<n>`` SIGKILLs this process after the
put of its ``n``-th exchange batch, before that batch's checkpoint (issue 14, test 4);
``stop_before_source_commit``: see :func:`_fault_stop`; ``kill_after_source_commit``: see
:func:`_fault_kill_committed`; ``stall_first_batch:<s>``: see :func:`_fault_stall`."""


_STOPPED: set[str] = set()
"""Non-empty once the stop hook stopped this process (it stops it once)."""

_STALLED: set[str] = set()
"""The shard the stall hook stalled (it stalls one batch per process)."""

_EMITTED = [0]
"""Exchange batches this process emitted, over both streams of a join (the fault hook
counts them)."""


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
    fault_after: int | None = field(default_factory=_fault_after)
    refusals: RefusedClaims | None = None
    """Where a claim refused while the lease is held goes (None: only logged)."""
    stream: str = ""
    """The join side these tasks read (``left``/``right``; empty: the fleet's one stream)."""
    clock: Callable[[], float] = time.monotonic
    """Seconds, for idleness (``idle_timeout`` of the fleet options)."""


def _fault_stop(shard: str, batch_id: int) -> None:
    """``STREAMKIT_FLEET_FAULT=stop_before_source_commit``: SIGSTOP this process once, in
    the first stateless batch after a committed one (batch id 1 or more), just before the
    fence's commit (printing ``fault: stopped <shard id> <batch id>`` first): a zombie
    owner for SIGCONT (never inside a fence's swap)."""
    if _STOPPED or batch_id < 1 or os.environ.get(FAULT_ENV) != "stop_before_source_commit":
        return
    _STOPPED.add(shard)
    print(f"fault: stopped {shard} {batch_id}", flush=True)
    quiesced(_stop_self)
    print(f"fault: resumed {shard} {batch_id}", flush=True)


async def _fault_stall(shard: str) -> None:
    """``STREAMKIT_FLEET_FAULT=stall_first_batch:<s>``: the first batch of records this
    process delivers to a source task waits ``s`` seconds before it runs (printing
    ``fault: stalled <shard id>`` and ``fault: unstalled <shard id>``): a reader that holds
    its lease and renews it but emits nothing for long (a starved or throttled worker)."""
    kind, _, n = os.environ.get(FAULT_ENV, "").partition(":")
    if kind != "stall_first_batch" or _STALLED or not n.isdigit():
        return
    _STALLED.add(shard)
    print(f"fault: stalled {shard}", flush=True)
    await asyncio.sleep(int(n))
    print(f"fault: unstalled {shard}", flush=True)


def _fault_kill_committed(batch_id: int) -> None:
    """``STREAMKIT_FLEET_FAULT=kill_after_source_commit``: SIGKILL this process in the first
    stateless batch with id 1 or more, after the fence's commit and before the sink
    (printing ``fault: killed committed <batch id>`` first)."""
    if batch_id >= 1 and os.environ.get(FAULT_ENV) == "kill_after_source_commit":
        print(f"fault: killed committed {batch_id}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


def _stop_self() -> None:
    """SIGSTOP directed at the calling thread (see ``aggregation_task._stop_self``)."""
    signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)
    time.sleep(1.0)


def _retrieve(done: asyncio.Future[None]) -> None:
    """Mark a fence commit's error retrieved (raised to its batch, or logged by the fence)."""
    if not done.cancelled():
        done.exception()


async def _sigkill() -> None:
    """The fault hook: die as a SIGKILL does, between the put and the checkpoint."""
    os.kill(os.getpid(), signal.SIGKILL)


class SourceTask(BaseRecordProcessor):
    """The source task of one shard (see the module docstring)."""

    def __init__(self, ctx: SourceContext) -> None:
        from streamkit.fleet.join_source import SideStage
        from streamkit.fleet.source_stage import SourceStage
        from streamkit.streaming.incremental import IncrementalQuery

        self.ctx = ctx
        fleet = ctx.spec.fleet_plan
        self.stage: SourceStage | SideStage | None = None
        if fleet.joined is not None:
            self.stage = SideStage(fleet, ctx.stream)
        elif not fleet.stateless:
            self.stage = SourceStage(fleet)
        self.engine = IncrementalQuery(fleet.plan, fleet.mode) if fleet.stateless else None
        self.shard = ""
        self.name = ""
        """The shard as the fleet knows it: ``<stream>/<shard id>`` for a join, else the id
        (status file, dead letters, fence folder, refusals)."""
        self.first: str | None = None
        """The checkpoint the next batch starts after (None: the shard's start)."""
        self.replay: ReplayRange | None = None
        """While set, records up to its end are held and run as one batch (exact re-read)."""
        self.skip_to: int | None = None
        """Records at or before it were committed already (stateless plans)."""
        self.held: list[RecordColumns] = []
        """Records of an exact re-read not run yet (its range end not reached)."""
        self.max_event: int | None = None
        self.batches = 0
        self.log: DirectTaskLog | None = None
        self.sink: Sink | None = None
        self.next_id = 0
        self.republish: int | None = None
        """The replayed batch is this committed batch: to the sink only (stateless plans)."""
        self.lost = False
        """The lease was lost: nothing more is done here."""
        self.end_sent = False
        """A chunk carrying the shard's end was put (exchange plans)."""
        self.refused: TaskFencedError | None = None
        """The refusal of this task's claim (stateless plans), while the lease is held."""
        self.quiet_since = ctx.clock()
        """Clock reading of this task's start or its last records (idleness counts from)."""
        self.idle_said: float | None = None
        """Clock reading of the last idle markers put since then (None: none)."""

    async def initialize_with(self, init: InitializationInput) -> None:
        """Find where this task resumes: a pending checkpoint (exchange) or a logged batch
        that never committed (stateless) is re-read exactly before anything else."""
        self.shard = init.shard_id
        self.name = f"{self.ctx.stream}/{self.shard}" if self.ctx.stream else self.shard
        self.first = None if init.start.is_sentinel else init.start.sequence_number
        if self.ctx.writer is not None:
            self.replay = replay_range(init.start, init.pending_checkpoint)
            if init.start != SHARD_END:
                await self._send_start()
            return
        if init.lease_counter is None or init.start == SHARD_END:
            self.lost = init.lease_counter is None  # (an ended shard: nothing to read)
            return
        try:
            await asyncio.to_thread(self._open_log, init.start, init.lease_counter)
        except TaskFencedError as e:
            self._lose(e)
            self.refused = e
            if self.ctx.refusals is not None:
                self.ctx.refusals.claim_refused(f"source/{self.name}", e)

    def _gone(self) -> None:
        """The lease is lost or given up: a refused claim was not a fence ahead of it."""
        if self.ctx.refusals is not None:
            self.ctx.refusals.lease_gone(f"source/{self.name}")

    async def lease_lost(self, shard_id: str) -> None:
        """Nothing to stop (a batch in flight is cancelled by the consumer)."""
        self.refused = None
        self._gone()

    def _open_log(self, start: ExtendedSequenceNumber, epoch: int) -> None:
        """Claim ``<root>/source/<shard>/`` with ``epoch``; where to resume and what to
        re-read first (:meth:`DirectTaskLog.claim`)."""
        from streamkit.fleet.direct_log import DirectTaskLog

        where = f"{self.ctx.spec.checkpoint.rstrip('/')}/source/{self.name}"
        task_log = DirectTaskLog(where, self.ctx.spec.worker_id, self.shard)
        checkpoint = None if start.is_sentinel else start.sequence_number
        resume = task_log.claim(epoch, checkpoint)
        self.next_id, self.skip_to = resume.next_id, resume.skip_to
        if resume.skip_to is not None:
            self.first = str(resume.skip_to)
        if resume.replay_through is not None:
            self.replay = replay_range(start, ExtendedSequenceNumber(resume.replay_through))
            if self.replay is not None and resume.republish:
                self.republish = resume.replay_id
            elif self.replay is not None:
                self.next_id = resume.replay_id if resume.replay_id is not None else self.next_id
        self.sink = self.ctx.spec.sink(f"source-{self.shard}", committed_only=True)
        self.log = task_log
        log.info("source task %s: claimed by %s at epoch %d, resuming at batch %d%s",
                  self.name, self.ctx.spec.worker_id, epoch, self.next_id,
                  f" (batch {self.republish} to the sink again)" if self.republish is not None
                  else "")  # fmt: skip

    def _lose(self, error: Exception) -> None:
        self.lost = True
        log.info("source task %s stops: %s", self.name, error)

    async def process_records(self, batch: RecordBatch, checkpointer: Checkpointer) -> None:
        """Run the batches these records complete (see :meth:`split`). A lease lost on the
        way (a step of the two-phase checkpoint refused) ends this task quietly: the next
        owner re-reads from the lease's checkpoint or pending checkpoint."""
        if self.lost:
            return
        self.quiet_since, self.idle_said = self.ctx.clock(), None
        await _fault_stall(self.name)
        try:
            for records in self.split(batch.records):
                await self._run(records, batch, checkpointer)
        except (LeaseLostError, TaskFencedError) as e:
            self.lost = True
            log.info("source task %s: lease lost (%s); the next owner takes over", self.name, e)

    async def shard_ended(self, shard_id: str, checkpointer: Checkpointer) -> None:
        """Run what an exact re-read still holds; with an exchange, send the shard's end
        (:meth:`_send_end`); then checkpoint SHARD_END. A task whose claim was refused
        while it kept the lease never returns (checkpointing SHARD_END would skip the
        shard's records unprocessed): in a race with a newer owner the consumer cancels
        it when it finds the lease lost; with the fence ahead, :mod:`.refusals` stops the
        worker, which drops it. Raising here would stop a worker that merely lost a race."""
        if self.refused is not None:
            log.info("source task %s: shard end held until its refused claim is settled (%s)",
                     self.name, self.refused)  # fmt: skip
            await asyncio.Event().wait()  # until cancelled (see above)
        self._gone()
        if self.lost:
            return
        try:
            if self.held:
                records, self.held, self.replay = RecordColumns.concat(self.held), [], None
                await self._run(records, None, checkpointer)
            await self._send_end()
        except (LeaseLostError, TaskFencedError) as e:
            self._lose(e)
            return
        await checkpointer.checkpoint()

    async def _send_start(self) -> None:
        """The start markers of this shard to every exchange partition, before anything
        is read: an aggregation task that never heard of the shard now has, so
        ``idle_timeout`` counts for it from here. Without them a shard that never receives
        a record (a split's child nothing is written to) is never heard from and holds the
        fleet watermark for ever: no window closes in append mode. Sent again by every
        task that starts the shard (takeover, restart): ignored where the shard is known."""
        ctx = self.ctx
        assert ctx.writer is not None
        assert self.stage is not None
        parts = self.stage.start_chunks(self.shard, self.first, ctx.partitions, ctx.spec.name)
        await ctx.writer.put_batch(parts, self.shard)

    async def at_tip(self, shard_id: str) -> None:
        """A read found nothing new at the shard's tip: once the shard has been quiet for
        ``idle_timeout`` (no records since this task started or since its last records),
        its idle markers (up to the last range emitted) go to every exchange partition,
        and again every ``idle_timeout`` while it stays quiet (so a marker an aggregation
        task did not believe, e.g. while the lease changed hands, is said again). Not
        while records of an exact re-read are held (they were not emitted yet)."""
        ctx = self.ctx
        if self.lost or ctx.writer is None or self.stage is None:
            return
        if self.held or self.replay is not None:
            return
        now, idle = ctx.clock(), ctx.spec.options.idle_timeout
        if now - self.quiet_since < idle:
            return
        if self.idle_said is not None and now - self.idle_said < idle:
            return
        parts = self.stage.idle_chunks(self.shard, self.first, ctx.partitions, ctx.spec.name)
        await ctx.writer.put_batch(parts, self.shard)
        self.idle_said = now
        log.debug("source task %s: idle at %s", self.name, self.first)

    async def _send_end(self) -> None:
        """The end markers of this shard to every exchange partition, unless its last
        batch carried the end (read with the shard's end) or it emitted nothing (never
        heard of downstream: it stops holding the watermark once its lease is finished).
        Without them an aggregation task would take the ended shard for a live one until
        ``idle_timeout``, its maximum holding the fleet watermark back. Sent before the
        SHARD_END checkpoint, so after every chunk of the shard; a takeover before that
        checkpoint sends them again (duplicates, dropped)."""
        writer, last = self.ctx.writer, self.first
        if writer is None or self.end_sent or last is None or not last.isdigit():
            return
        ctx = self.ctx
        assert self.stage is not None
        parts = self.stage.end_chunks(self.shard, last, ctx.partitions, ctx.spec.name)
        await writer.put_batch(parts, self.shard)
        self.end_sent = True

    async def shutdown_requested(self, shard_id: str, checkpointer: Checkpointer) -> None:
        """Nothing: every batch run here was checkpointed when it ran (records held for
        an exact re-read are read again by the next owner)."""
        self._gone()

    def split(self, records: Sequence[KinesisRecord]) -> list[RecordColumns]:
        """The source batches ``records`` complete: records committed already are
        dropped; while an exact re-read is due, records up to its end are held until the
        end is reached, then run as one batch; the rest as a batch of its own. On the
        records' columns (:mod:`.record_split`): no record object is built."""
        fresh = cut.after(cut.columns(records), self.skip_to)
        replay = self.replay
        if replay is None:
            return [fresh] if len(fresh) else []
        inside, tail = cut.through(replay, fresh)
        if len(inside):
            self.held.append(inside)
        held = RecordColumns.concat(self.held)
        if not len(tail) and not cut.reached(replay, held):
            return []
        self.held, self.replay = [], None
        return [b for b in (held, tail) if len(b)]

    async def _run(
        self, records: RecordColumns, batch: RecordBatch | None, checkpointer: Checkpointer
    ) -> None:
        last = records.sequence_number(len(records) - 1)
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
            "source", self.name, self.ctx.spec.worker_id, self.batches,
            self._watermark_ms(), self.ctx.lag(self.shard), len(records), 0,
            *claims(self.ctx.refusals),
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
        _EMITTED[0] += 1
        die = ctx.fault_after is not None and _EMITTED[0] >= ctx.fault_after
        await emit_exactly_once(
            checkpointer, last, ctx.writer, parts, after_put=_sigkill if die else None
        )
        self.end_sent = ended

    async def _direct(self, rows: pl.DataFrame, last: str, checkpointer: Checkpointer) -> None:
        """A stateless batch: committed under the fence, then to the sink, then the lease
        checkpoint; a committed batch re-read after a takeover goes to the sink only."""
        task_log, sink, engine = self.log, self.sink, self.engine
        assert task_log is not None
        assert sink is not None
        assert engine is not None
        result = await asyncio.to_thread(engine.run, rows)
        table = result.output.to_arrow()
        bid, again = self.next_id, self.republish
        if again is not None:
            self.republish = None
            await sink.add_batch(again, table)
        else:
            _fault_stop(self.shard, bid)
            # in a thread that runs to its end even when this batch is cancelled (a lost
            # lease): a refused commit is always logged, a committed one always counts
            loop = asyncio.get_running_loop()
            commit = loop.run_in_executor(None, task_log.commit, bid, self.first, last)
            commit.add_done_callback(_retrieve)
            await asyncio.shield(commit)
            _fault_kill_committed(bid)
            await sink.add_batch(bid, table)
            await asyncio.to_thread(task_log.published, bid)
            self.next_id = bid + 1
        self.skip_to = int(last)
        await checkpointer.checkpoint(last)

    def _watermark_ms(self) -> int | None:
        """The shard's max event time minus the watermark delay, in ms."""
        return source_watermark_ms(self.ctx.spec.fleet_plan, self.max_event, self.ctx.stream)

    def _dead_letters(self, dead: pa.Table, last: str) -> None:
        import io

        import pyarrow.parquet as pq

        buf = io.BytesIO()
        pq.write_table(dead, buf)
        self.ctx.store.write_bytes(f"fleet/dead_letters/{self.name}/{last}.parquet", buf.getvalue())
