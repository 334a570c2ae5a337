"""Aggregation tasks of a fleet: one record processor per exchange shard lease (table
``<app>-exchange``), each a micro-batch query of its own: an
:class:`~streamkit.fleet.aggregation_stage.AggregationStage`, or for a join of two streams
a :class:`~streamkit.fleet.join_stage.JoinStage` (source shards named ``stream/shard``).

The task's checkpoint log is fenced (:mod:`streamkit.fleet.task_log`): when it starts,
the task claims ``<root>/exchange/<shard id>/fence`` with the lease counter of its
lease as epoch (a later owner's take always wrote a higher counter), restores the last
committed batch from the folder the fence names, and writes that batch's staged output to
the sink again (its previous owner may have committed it without writing it). A batch is
the chunks of one delivery, in this order: ``offsets/N`` in this epoch's folder
``<root>/exchange/<shard id>/epochs/<epoch>/``; :meth:`AggregationStage.apply` (chunks
already applied are dropped by the dedup map); the output rows staged as ``output/N``;
``state/N`` (store, dedup map, per-source maxima); ``commits/N``; the fence's
compare-and-swap (the commit point, refused once another owner claimed the task); the sink
files of batch N (``part-<shard id>-<N>-...``, only ever from committed rows); only then the
exchange lease checkpoint. A task refused by the fence stops quietly: nothing it wrote is
read or published. The fence's compare-and-swap runs in a thread, which a lost lease cannot
stop: the task reports the loss only once that attempt ended (committed, or refused and
logged), so this worker's next claim of the task comes after it. A claim refused while
this worker keeps the lease is escalated (:mod:`.refusals`): unless the lease is reported
lost within ``confirm_after``, the worker fails naming the fix. Between deliveries a
ticker runs a batch without input when the stage owes one (the fleet watermark moved, e.g.
a silent source shard went idle).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from typing import TYPE_CHECKING

from streamkit.fleet.fence import TaskFencedError, quiesced
from streamkit.fleet.task_log import FencedTaskLog
from streamkit_kinesis.consumer import BaseRecordProcessor
from streamkit_kinesis.fleet.reader import from_batch
from streamkit_kinesis.fleet.status import TaskStatus, claims, ticks_to_ms, write_status
from streamkit_kinesis.leases import LeaseLostError

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Sequence

    import pyarrow as pa

    from streamkit.fleet.exchange_task import ExchangeTask
    from streamkit.fleet.member import FleetSpec
    from streamkit.streaming.batch_result import BatchResult
    from streamkit.streaming.contracts import CheckpointStore, Sink
    from streamkit_kinesis.consumer import InitializationInput
    from streamkit_kinesis.fleet.refusals import RefusedClaims
    from streamkit_kinesis.leases import Checkpointer
    from streamkit_kinesis.types import RecordBatch

log = logging.getLogger(__name__)

FAULT_ENV = "STREAMKIT_FLEET_FAULT"
"""Fault injection for tests: ``stop_before_commit`` makes the process SIGSTOP itself once,
in the first batch with output rows, after everything but the fence's commit (printing
``fault: stopped <shard id> <batch id> <epoch>`` to stdout first): a zombie owner for SIGCONT.
``kill_owing_after:<ms>``: SIGKILL the process once a task owes a batch without input and
its fleet watermark is at or past ``<ms>`` (ms since the epoch), after the commit and the
lease checkpoint of the batch that moved it, before the batch owed (printing ``fault:
killed owing <shard id>`` first)."""

_STOPPED: set[str] = set()
"""Non-empty once the fault hook stopped this process (it stops it once)."""


def _stop_self() -> None:
    """SIGSTOP this process from the calling thread, which holds the swap counter's lock
    until the process was continued. Sent to the process, the stop is handled first by the
    main thread, and the caller ran on meanwhile (on a loaded machine, for long enough to
    release the lock, start the fence's commit and be stopped holding its ``flock``: the
    next owner's claim then waited for ever); sent to this thread, it stops this thread
    before it returns, and every other one within the sleep."""
    signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)
    time.sleep(1.0)


def _fault_stop(shard: str, batch_id: int, epoch: int) -> None:
    """The fault hook (see :data:`FAULT_ENV`)."""
    if _STOPPED or os.environ.get(FAULT_ENV) != "stop_before_commit":
        return
    _STOPPED.add(shard)
    print(f"fault: stopped {shard} {batch_id} {epoch}", flush=True)
    quiesced(_stop_self)  # never inside a swap's flock
    print(f"fault: resumed {shard} {batch_id}", flush=True)


def _fault_kill_owing(shard: str, stage: ExchangeTask) -> None:
    """The ``kill_owing_after`` fault hook (see :data:`FAULT_ENV`)."""
    kind, _, ms = os.environ.get(FAULT_ENV, "").partition(":")
    if kind != "kill_owing_after" or not ms.isdigit() or not stage.owes_batch:
        return
    mark = stage.watermark_ms
    if mark is not None and mark >= int(ms):
        print(f"fault: killed owing {shard}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


def _retrieve(done: asyncio.Future[None]) -> None:
    """Mark a fence commit's error retrieved (raised to its batch, or logged by the fence)."""
    if not done.cancelled():
        done.exception()


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
        refusals: RefusedClaims | None = None,
    ) -> None:
        self.spec, self.root, self._lag, self._clock = spec, store, lag, clock
        self._sources = sources
        """The source shards the fleet watermark waits for (the unfinished source leases)."""
        self._unsettled = unsettled
        """Source shards whose lease is changing hands: never taken for idle."""
        self._refusals = refusals
        """Where a claim refused while the lease is held goes (None: only logged)."""
        self.shard = ""
        self.stage: ExchangeTask | None = None
        """The engine, once the task is claimed and restored."""
        self.log: FencedTaskLog | None = None
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
        self._commit: asyncio.Future[None] | None = None
        """The last fence commit (a thread: it runs on when its batch is cancelled)."""

    async def initialize_with(self, init: InitializationInput) -> None:
        """Claim the task with the lease counter as epoch (a later owner has a higher
        one: refused, the task stops, and the refusal goes to the worker's
        :class:`~.refusals.RefusedClaims`), restore the last committed batch, write its
        staged output to the sink again, and start the no-data ticker."""
        self.shard = init.shard_id
        try:
            await self._claim(init.lease_counter)
        except LeaseLostError as e:
            self._lose(e)
            return
        except TaskFencedError as e:
            self._lose(e)
            if self._refusals is not None:
                self._refusals.claim_refused(self._task_name, e)
            return
        self._ticker = asyncio.create_task(self._tick(), name=f"fleet-tick-{self.shard}")

    async def _claim(self, epoch: int | None) -> None:
        if epoch is None:
            raise LeaseLostError(f"exchange shard {self.shard}: lease no longer held")
        rows = await asyncio.to_thread(self._restore, epoch)
        taken = self.log.taken if self.log is not None else None
        if rows is not None and taken is not None and taken.batch is not None:
            assert self.sink is not None
            await self.sink.add_batch(taken.batch, rows)

    def _restore(self, epoch: int) -> pa.Table | None:
        from streamkit.fleet.aggregation_stage import AggregationStage
        from streamkit.fleet.join_stage import JoinStage

        spec = self.spec
        where = f"{spec.checkpoint.rstrip('/')}/exchange/{self.shard}"
        fenced = FencedTaskLog(where, spec.worker_id, self.shard)
        taken = fenced.claim(epoch)
        kind = JoinStage if spec.fleet_plan.joined is not None else AggregationStage
        stage = kind(spec.fleet_plan, query=spec.name)
        if taken.batch is not None:
            assert fenced.previous is not None
            stage.restore(fenced.previous, taken.batch)
            self.next_id, self.offset = taken.batch + 1, taken.offset
        self.sink = spec.sink(self.shard, committed_only=True)
        rows = fenced.staged_output()
        self.log, self.stage = fenced, stage
        log.info("aggregation task %s: claimed by %s at epoch %d, resuming after batch %s",
                 self.shard, spec.worker_id, epoch, taken.batch)  # fmt: skip
        return rows

    async def process_records(self, batch: RecordBatch, checkpointer: Checkpointer) -> None:
        """One micro-batch of the delivered chunks; the lease checkpoint after its commit.
        A batch without input still owed (the previous owner died before running it, or
        the ticker has not yet) runs first, as Spark runs it before the next input: rows
        of a key the moved watermark expired are admitted after its eviction, not before."""
        if self.lost:
            return
        if self._failure is not None:
            raise self._failure
        records = from_batch(batch, self._read)  # in order, none KPL-aggregated
        last = self._read = records[-1].sequence_number
        try:
            async with self._lock:
                await self._owed()
                await self._batch([r.data for r in records], last)
                await checkpointer.checkpoint(last)
                assert self.stage is not None
                _fault_kill_owing(self.shard, self.stage)
                await self._owed()
        except (LeaseLostError, TaskFencedError) as e:  # the next owner restores the commit
            self._lose(e)

    @property
    def _task_name(self) -> str:
        return f"exchange/{self.shard}"

    def _gone(self) -> None:
        """The lease is lost or given up: a refused claim was not a fence ahead of it."""
        if self._refusals is not None:
            self._refusals.lease_gone(self._task_name)

    def _lose(self, error: Exception) -> None:
        self.lost = True  # (a refusal by the fence was logged as a warning where it happened)
        log.info("aggregation task %s stops: %s", self.shard, error)

    async def _batch(self, chunks: Sequence[bytes] | None, last: str | None) -> None:
        """Batch N: offsets, apply (or a batch without input), staged output, state,
        ``commits/N``, the fence's commit, the sink."""
        stage, fenced, sink = self.stage, self.log, self.sink
        assert stage is not None
        assert fenced is not None
        assert fenced.log is not None
        assert sink is not None
        log = fenced.log
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
        table = result.output.to_arrow()
        await asyncio.to_thread(fenced.stage, bid, table)
        await asyncio.to_thread(stage.checkpoint_state, log, bid)
        await asyncio.to_thread(log.write_commit, bid, offsets, {"watermark": result.watermark})
        if table.num_rows and fenced.fence.record is not None:
            _fault_stop(self.shard, bid, fenced.fence.record.epoch)
        await self._commit_batch(fenced, bid, offset)
        await sink.add_batch(bid, table)
        await asyncio.to_thread(fenced.published, bid, table.num_rows)
        self.next_id, self.offset = bid + 1, offset
        status = TaskStatus(
            "aggregation", self.shard, self.spec.worker_id, bid,
            self._watermark_ms(), self._lag(self.shard), result.output.height,
            stage.duplicates_dropped,
            *claims(self._refusals),
        )  # fmt: skip
        await asyncio.to_thread(write_status, self.root, status)

    async def _commit_batch(self, fenced: FencedTaskLog, bid: int, offset: str | None) -> None:
        """The fence's commit of batch ``bid``, in a thread that finishes even when this
        batch is cancelled (:meth:`_commit_ended` waits for it)."""
        loop = asyncio.get_running_loop()
        commit = self._commit = loop.run_in_executor(None, fenced.commit, bid, offset)
        commit.add_done_callback(_retrieve)  # a refusal after a cancel is logged already
        await asyncio.shield(commit)

    async def _commit_ended(self) -> None:
        """Wait for the fence commit in flight, if any (never raises its error)."""
        commit = self._commit
        if commit is not None and not commit.done():
            await asyncio.wait([commit])

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
            while not self.lost:
                await asyncio.sleep(period)
                async with self._lock:
                    stage = self.stage
                    if stage is None or self.lost:  # not claimed yet, or lost
                        continue
                    stage.expect_sources(self._sources())
                    stage.hold_sources(self._unsettled())
                    stage.refresh(self._clock())
                    _fault_kill_owing(self.shard, stage)
                    await self._owed()
        except TaskFencedError as e:  # another owner took the task: stop quietly
            self._lose(e)
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
        """Stop the ticker and wait for the fence commit in flight (cancelled with its
        batch, its thread runs on: refused once another owner claimed); the next owner
        restores from the last commit."""
        self._gone()
        await self._stop_ticker()
        await self._commit_ended()

    async def shutdown_requested(self, shard_id: str, checkpointer: Checkpointer) -> None:
        """Stop the ticker (every batch was checkpointed when it committed)."""
        self._gone()
        await self._stop_ticker()

    async def shard_ended(self, shard_id: str, checkpointer: Checkpointer) -> None:
        """The exchange stream is never resharded; checkpoint SHARD_END if it was."""
        self._gone()
        await self._stop_ticker()
        await checkpointer.checkpoint()
