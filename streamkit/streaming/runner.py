"""The micro-batch loop of one query: the one async core behind both query handles.

:class:`QueryRunner` runs as a coroutine on whichever event loop it is given: the
synchronous :class:`~streamkit.streaming.query.StreamingQuery` runs it on a private thread
and loop, the :class:`~streamkit.streaming.async_query.AsyncStreamingQuery` as a task on the
caller's loop. Decoding, execution, checkpoint writes and synchronous sink functions run in
worker threads, so the loop only schedules. It reads either kind of source
(:mod:`streamkit.streaming.contracts`) through a feed
(:mod:`streamkit.streaming.sources.feeds`): a replayable source is committed after each
batch commit, an acknowledging source acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

import polars as pl
import pyarrow as pa

from streamkit.errors import PlanError, StreamkitError
from streamkit.streaming import _envelope as envelope
from streamkit.streaming.batch_result import BatchResult
from streamkit.streaming.chain import make_engine
from streamkit.streaming.checkpoint import CheckpointLog
from streamkit.streaming.contracts import AvailableNowUnsupportedError, SourceBatch
from streamkit.streaming.decode import empty_dead_letters
from streamkit.streaming.incremental import OutputMode
from streamkit.streaming.listeners import streams
from streamkit.streaming.owner import OwnerHeartbeat, OwnerLostError, acquire_all, owner_leases_for
from streamkit.streaming.progress import PhaseDurations, QueryProgress
from streamkit.streaming.progress_log import ProgressLog
from streamkit.streaming.side_tables import SideTables
from streamkit.streaming.sources.feeds import CaughtUp, Fetched, feed_for
from streamkit.streaming.stream_join import StreamJoinQuery, join_engine

if TYPE_CHECKING:
    from streamkit.plan import Plan
    from streamkit.streaming.chain import ChainQuery
    from streamkit.streaming.contracts import CheckpointStore, Offsets, Sink, StreamSource
    from streamkit.streaming.incremental import IncrementalQuery
    from streamkit.streaming.table import UnboundedTable
    from streamkit.streaming.trigger import Trigger
    from streamkit.streaming.view import QueryView
    from streamkit.streaming.watermarks import PartitionWatermarks


class QueryParts(TypedDict):
    """What a query is made of: :class:`QueryRunner`'s keyword arguments."""

    plan: Plan
    source: StreamSource
    sink: Sink
    mode: OutputMode
    trigger: Trigger
    store: CheckpointStore | None
    table: UnboundedTable
    name: NotRequired[str | None]
    clock: NotRequired[Callable[[], float]]
    emit_on_same_batch: NotRequired[bool]
    snapshot_every: NotRequired[int]
    watermarks: NotRequired[PartitionWatermarks | None]
    processing_clock: NotRequired[Callable[[], float] | None]
    multiple_watermark_policy: NotRequired[str]


class StreamingQueryError(StreamkitError):
    """The query stopped because of an error; ``__cause__`` holds the original."""


class QueryRunner:
    """One query's state and micro-batch loop (:meth:`run`), shared by both handles.

    Delivery: batch N reaches the sink before ``commits/N`` is written and before the source
    is committed, so after a crash batch N runs again with the same id (exactly-once with an
    idempotent sink, at-least-once otherwise). :meth:`request_stop` (thread-safe) ends the
    loop after the batch in flight has committed.
    """

    def __init__(
        self,
        *,
        plan: Plan,
        source: StreamSource,
        sink: Sink,
        mode: OutputMode,
        trigger: Trigger,
        store: CheckpointStore | None,
        table: UnboundedTable,
        name: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        emit_on_same_batch: bool = False,
        snapshot_every: int = 10,
        watermarks: PartitionWatermarks | None = None,
        processing_clock: Callable[[], float] | None = None,
        multiple_watermark_policy: str = "min",
    ) -> None:
        self.id = uuid.uuid4().hex
        self.name = name or f"query-{self.id[:8]}"
        self.source, self.sink, self.trigger, self.table = source, sink, trigger, table
        self.feed = feed_for(source)
        if self.feed.kind == "acknowledging" and trigger.kind == "available_now":
            raise AvailableNowUnsupportedError(type(source).__name__)
        _check_replay(sink, self.feed.exact_replay, type(source).__name__)
        joined = join_engine(
            plan, mode, emit_on_same_batch=emit_on_same_batch, policy=multiple_watermark_policy
        )
        self.engine: IncrementalQuery | ChainQuery | StreamJoinQuery = joined or make_engine(
            plan, mode, emit_on_same_batch=emit_on_same_batch, watermarks=watermarks,
            processing_clock=processing_clock, policy=multiple_watermark_policy,
        )  # fmt: skip
        self._log = None if store is None else CheckpointLog(store, snapshot_every=snapshot_every)
        """None without a checkpoint location: nothing to restart from, nothing written."""
        self._clock = clock
        self.progress = ProgressLog()
        self.side = SideTables()
        self.offsets: Offsets = {}
        self.next_id = 0
        self.error: BaseException | None = None
        self.view: QueryView | None = None
        """The handle listeners are told about (set by the handle)."""
        self.loop: asyncio.AbstractEventLoop | None = None
        self.done = threading.Event()
        self.cond = threading.Condition()
        """Notified after each batch and at the end (for threads waiting on progress)."""
        self._stop = threading.Event()
        self._changed: asyncio.Event | None = None
        self._owners = OwnerHeartbeat([], self._owner_lost)
        self._in_flight = False
        """A batch is running: a no-data batch stops being owed when it starts, but its
        output is in the sink only when it is committed."""
        self._replayed: tuple[int, dict[str, Any]] | None = None
        """The logged-but-uncommitted batch found on restart, with its offsets meta."""

    # -- lifecycle (blocking parts: call them off the event loop) ------------------------
    def acquire(self, force: bool) -> None:
        """Take the checkpoint folder's and the source's owner leases and start renewing
        them (see :meth:`streamkit.streaming.query.StreamingQuery.start`); post started."""
        store = self._log.store if self._log is not None else None
        leases = owner_leases_for(self.name, store, self.source)
        acquire_all(leases, force=force)
        self._owners = OwnerHeartbeat(leases, self._owner_lost).start()
        assert self.view is not None
        streams.post_started(self.view)

    def finish(self) -> None:
        """After :meth:`run` ended: release the leases, mark the query done, post its end."""
        try:
            self._owners.stop()
        finally:
            self.done.set()
            assert self.view is not None
            streams.post_terminated(self.view, self.error)
            self._notify()

    def _owner_lost(self, error: OwnerLostError) -> None:
        self.error = error
        self.request_stop()

    def request_stop(self) -> None:
        """Stop after the batch in flight commits (thread-safe; wakes a paced wait)."""
        self._stop.set()
        loop, changed = self.loop, self._changed
        if loop is not None and changed is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the query ended
                loop.call_soon_threadsafe(changed.set)

    @property
    def checkpoint_location(self) -> str | None:
        """The checkpoint folder (local path or ``s3://`` URL), None without one."""
        if self._log is None:
            return None
        store = self._log.store
        where = getattr(store, "url", None) or getattr(store, "root", None)
        return str(where) if where is not None else repr(store)

    def raise_if_failed(self) -> None:
        """Raise :class:`StreamingQueryError` from the error that stopped the query."""
        if self.error is not None:
            raise StreamingQueryError(
                f"query {self.name} failed ({self.feed.kind} source "
                f"{type(self.source).__name__}): {self.error}"
            ) from self.error

    def caught_up(self, predicate: CaughtUp) -> bool:
        """Whether ``predicate`` holds for the committed offsets and no batch is owed."""
        return predicate(self.offsets) and not self.engine.owes_batch and not self._in_flight

    async def changed(self, timeout: float) -> None:
        """Wait (on the runner's loop) up to ``timeout`` s for a batch or the end; always
        yields to the loop at least once."""
        if self._changed is None or self.done.is_set():
            await asyncio.sleep(0)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    def _notify(self) -> None:
        with self.cond:
            self.cond.notify_all()
        loop, changed = self.loop, self._changed
        if changed is None or loop is None:
            return
        self._changed = asyncio.Event()
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            changed.set()
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(changed.set)

    # -- loop ----------------------------------------------------------------------------
    async def run(self) -> None:
        """The micro-batch loop, until stopped, the trigger ends, or an error (stored in
        :attr:`error` and raised). Closes the sink and the source."""
        self.loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.error = self.error or exc
            raise

    async def _run(self) -> None:
        await asyncio.to_thread(self._recover)
        await self.feed.open(self.offsets)
        ahead: asyncio.Task[Fetched | None] | None = None
        try:
            final = self.trigger.stops_by_itself
            caught_up = await self.feed.catch_up(final=True) if final else None
            while not self._stop.is_set():
                started = self._clock()
                fetched = None
                if caught_up is not None and caught_up(self.offsets):
                    if not self.engine.owes_batch:
                        break  # available_now: everything there was at start is committed
                else:
                    fetched = await (ahead or self._fetch())
                    ahead = None
                if fetched is not None and self._runs(fetched):
                    if self._prefetches:
                        ahead = asyncio.create_task(self._fetch())
                    await self._process(fetched, started)
                else:
                    ready = caught_up is None or caught_up(self.offsets)  # else more to read
                    await self._without_records(fetched, started, ready)
                if self.trigger.kind == "once":
                    break
                await self._pace(started)
        finally:
            if ahead is not None:
                ahead.cancel()
                with contextlib.suppress(BaseException):
                    await ahead
            await self.sink.close()
            await self.feed.close()

    def _runs(self, fetched: Fetched) -> bool:
        """Whether ``fetched`` makes a batch: it holds records, or the source counts a read
        without records as a batch (``runs_empty_batches``, e.g. an empty file, as Spark's
        file source does) and its offsets moved."""
        if fetched.records:
            return True
        if not getattr(self.source, "runs_empty_batches", False):
            return False
        ends = fetched.batch.end_offsets
        return bool(ends) and any(self.offsets.get(k) != v for k, v in ends.items())

    @property
    def _prefetches(self) -> bool:
        """Whether batch N+1 is fetched while batch N runs: for triggers that start the next
        batch as soon as the last one ends (``available_now``, ``processing_time`` 0)."""
        kind = self.trigger.kind
        return kind == "available_now" or (kind == "processing_time" and not self.trigger.interval)

    async def _fetch(self) -> Fetched | None:
        wait = 0.05 if self.trigger.kind != "processing_time" else self.trigger.interval
        return await self.feed.fetch(max_wait=max(wait, 0.05))

    async def _pace(self, started: float) -> None:
        if self.trigger.kind == "processing_time" and self._changed is not None:
            left = self.trigger.interval - (self._clock() - started)
            if left > 0 and not self._stop.is_set():
                with contextlib.suppress(TimeoutError):  # woken early by request_stop
                    await asyncio.wait_for(self._changed.wait(), left)

    def _recover(self) -> None:
        if self._log is None:
            return
        last = self._log.latest()
        pending = self._log.pending(last.batch_id if last is not None else None)
        # a logged batch ending where the last commit ended was a no-data batch: run it again
        no_data = (
            pending is not None and last is not None and self.feed.kind == "replayable"
            and pending[1] == last.offsets
        )  # fmt: skip
        if pending is not None and pending[1] and not no_data:
            self.feed.replay_to(pending[1])  # batch N ran but never committed: re-read it
        if pending is not None:
            self._replayed = (pending[0], self._log.offsets_meta(pending[0]))
        if last is None:
            return
        self.offsets = dict(last.offsets)
        self.next_id = last.batch_id + 1
        meta = _commit_meta(self._log, last.batch_id)
        in_force = meta.get("in_force")
        maxima = meta.get("partition_max")
        self.engine.restore(
            last.state,
            last.watermark,
            last.max_event,
            in_force if isinstance(in_force, int) else None,
            no_data_pending=no_data,
            partition_max=maxima if isinstance(maxima, dict) else None,
        )

    async def _process(self, fetched: Fetched | None, started: float) -> None:
        """Run batch N, in this order: ``offsets/N`` (an acknowledging source's are empty),
        execute, the sink acknowledges N, ``state/N``, ``commits/N``; only then is the
        source committed (replayable) or acknowledged (acknowledging) through the feed.
        ``fetched`` None is a no-data batch: the committed offsets again, no input rows."""
        batch = fetched.batch if fetched is not None else _no_data(self.offsets)
        self._in_flight = True
        bid = self.next_id
        offsets = {**self.offsets, **batch.end_offsets}
        log = self._log
        t0 = self._clock()
        logged = self._replayed[1] if self._replayed and self._replayed[0] == bid else {}
        stamp = logged.get("batch_timestamp_ms")  # a re-run keeps its first processing time
        stamp = stamp if isinstance(stamp, int) else self.engine.clock.now_ms()
        self.engine.clock.batch_ms = stamp
        if log is not None:
            await asyncio.to_thread(log.write_offsets, bid, offsets, {"batch_timestamp_ms": stamp})
        result, output = await asyncio.to_thread(self._execute, batch)
        t1 = self._clock()
        await self.sink.add_batch(bid, output)
        t2 = self._clock()
        await asyncio.to_thread(self.engine.checkpoint_state, log, bid)
        t3 = self._clock()
        engine = self.engine
        meta: dict[str, Any] = {"watermark": engine.watermark, "max_event": engine.max_event}
        meta["in_force"] = engine.in_force
        meta["partition_max"] = engine.partition_maxima
        if log is not None:
            await asyncio.to_thread(log.write_commit, bid, offsets, meta)
        if fetched is not None:
            await self.feed.done(fetched, offsets)
        t4 = self._clock()
        self.side.keep(bid, batch, result.late_rows)
        phases = PhaseDurations(
            batch.fetch_seconds, batch.decode_seconds, t1 - t0, t3 - t2, t2 - t1, (t4 - t3)
        )
        self._record(bid, batch, result.late_rows.height, output.num_rows, phases, started)
        with self.cond:
            self.offsets, self.next_id = offsets, bid + 1
            self._in_flight = False
        self._notify()

    def _execute(self, batch: SourceBatch) -> tuple[BatchResult, pa.Table]:
        """Append the batch's rows to the input table and run the incremental engine on
        them (in a worker thread, so the next batch is fetched meanwhile); the source's
        partitions of each row and those it declares feed the per-partition watermarks."""
        if batch.open_partitions is not None or batch.ended_partitions:
            self.engine.declare_partitions(batch.open_partitions or (), batch.ended_partitions)
        rows = batch.rows
        if not rows.num_columns:  # a no-data batch
            result = self.engine.run_no_data()
            return result, result.output.to_arrow()
        frame = pl.from_arrow(rows)
        assert isinstance(frame, pl.DataFrame)
        self.table.append(rows)
        result = self.engine.run(frame, batch.row_partitions)
        self.table.drop_behind(self._event_time(self.engine.watermark))
        return result, result.output.to_arrow()

    def _record(  # noqa: PLR0917
        self, bid: int, batch: SourceBatch, late: int, out: int, phases: PhaseDurations,
        started: float,
    ) -> None:  # fmt: skip
        engine = self.engine
        wm = self._event_time(engine.watermark)
        record = self.progress.batch(bid, batch, late, out, phases, started, wm, engine.state_rows)
        assert self.view is not None
        streams.post_progress(self.view, record, self._event_time(engine.max_event))

    async def _without_records(self, fetched: Fetched | None, started: float, ready: bool) -> None:
        """A trigger without records: move the offsets, run Spark's no-data batch when the
        engine owes one and no input is known to be waiting (``ready``: not an
        ``available_now`` query still short of its end), else note a stall, if any."""
        if fetched is not None:
            self.offsets = {**self.offsets, **fetched.batch.end_offsets}
        if self.engine.owes_batch and ready:
            await self._process(None, started)  # Spark's no-data batch
        else:
            idle = self._note_stall()
            assert self.view is not None
            streams.post_idle(self.view, idle)

    def _note_stall(self) -> QueryProgress | None:
        """Keep an idle progress record while the source reports partitions it cannot
        read (``stalled_partitions()``), so ``last_progress`` shows the stall."""
        probe = getattr(self.source, "stalled_partitions", None)
        stalled = tuple(probe()) if callable(probe) else ()
        wm = self._event_time(self.engine.watermark)
        return self.progress.stall(stalled, self.next_id - 1, wm, self.engine.state_rows)

    def _event_time(self, wm: int | None) -> datetime | None:
        """An event time in ticks of the watermark column as a UTC datetime."""
        if wm is None:
            return None
        unit = self.engine.time_unit()
        per_second = {"ns": 1_000_000_000, "us": 1_000_000, "ms": 1_000}[unit]
        return datetime.fromtimestamp(wm / per_second, tz=UTC)


def _no_data(offsets: Offsets) -> SourceBatch:
    """The input of a no-data batch: no columns, no rows, the committed offsets."""
    return SourceBatch(pa.table({}), empty_dead_letters(), dict(offsets))


def _commit_meta(log: CheckpointLog | None, batch_id: int) -> dict[str, Any]:
    """The engine's meta in committed batch ``batch_id``'s commit file: ``in_force`` (the
    watermark in force), ``partition_max`` (largest event time per partition); empty
    when not recorded."""
    if log is None:
        return {}
    raw = log.store.read_bytes(f"commits/{batch_id:012d}")
    body = envelope.open_json(raw, "commit", StreamkitError) if raw is not None else {}
    return body if isinstance(body, dict) else {}


def _check_replay(sink: Sink, exact: bool, source_name: str) -> None:
    """Refuse a sink that needs exact re-runs behind a source that cannot give them."""
    if getattr(sink, "requires_exact_replay", False) and not exact:
        raise PlanError(
            f"{type(sink).__name__} skips batch ids it already committed, so a re-run batch "
            f"must hold exactly its first run's records, which {source_name} cannot re-read "
            "(it is not a BoundedSource); use an idempotent sink (memory, Parquet, JSON) or "
            "a source that supports exact replay (Kafka, Kinesis, memory)"
        )
