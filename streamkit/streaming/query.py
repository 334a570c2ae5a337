"""A running streaming query: the micro-batch loop and the handle users hold.

The loop runs in its own thread with its own asyncio event loop (sources and sinks are
asyncio); the handle's methods are thread-safe and blocking, like PySpark's. It reads
either kind of source (:mod:`streamkit.streaming.contracts`) through a feed
(:mod:`streamkit.streaming.sources.feeds`): a replayable source is committed after each
batch commit, an acknowledging source acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa

from streamkit.errors import PlanError, StreamkitError
from streamkit.streaming import _envelope as envelope
from streamkit.streaming.checkpoint import CheckpointLog
from streamkit.streaming.contracts import AvailableNowUnsupportedError, SourceBatch
from streamkit.streaming.decode import empty_dead_letters
from streamkit.streaming.incremental import BatchResult, IncrementalQuery, OutputMode
from streamkit.streaming.listeners import streams
from streamkit.streaming.owner import OwnerHeartbeat, OwnerLostError, acquire_all, owner_leases_for
from streamkit.streaming.progress import PhaseDurations, QueryProgress
from streamkit.streaming.sources.feeds import Fetched, feed_for

if TYPE_CHECKING:
    from streamkit.plan import Plan
    from streamkit.streaming.contracts import (
        CheckpointStore,
        Offsets,
        Sink,
        SourceKind,
        StreamSource,
    )
    from streamkit.streaming.table import UnboundedTable
    from streamkit.streaming.trigger import Trigger
    from streamkit.streaming.watermarks import PartitionWatermarks


SIDE_TABLE_ROWS = 100_000
"""Most recent dead-letter and late rows a query keeps in memory for users to read."""


SIDE_TABLE_PIECES = 64
"""Per-batch pieces a side table holds before they are compacted into one table."""


def _trim(tables: list[pa.Table]) -> None:
    """Keep about the last SIDE_TABLE_ROWS rows; every SIDE_TABLE_PIECES batches, copy the
    pieces into one contiguous table (many small long-lived tables fragment the heap)."""
    total = sum(t.num_rows for t in tables)
    while len(tables) > 1 and total - tables[0].num_rows >= SIDE_TABLE_ROWS:
        total -= tables.pop(0).num_rows
    if len(tables) > SIDE_TABLE_PIECES:
        whole = pa.concat_tables(tables, promote_options="default").combine_chunks()
        keep = min(whole.num_rows, SIDE_TABLE_ROWS)
        tables[:] = [whole.slice(whole.num_rows - keep)]


class StreamingQueryError(StreamkitError):
    """The query stopped because of an error; ``__cause__`` holds the original."""


class StreamingQuery:
    """Handle of a started query: ``stop()``, ``await_termination()``,
    ``process_all_available()``, ``last_progress``, ``recent_progress``.

    Delivery: batch N reaches the sink before ``commits/N`` is written and before the source
    is committed, so after a crash batch N runs again with the same id (exactly-once with an
    idempotent sink, at-least-once otherwise), and with exactly its first run's records
    when the source is a :class:`~streamkit.streaming.contracts.BoundedSource`. A sink
    that sets ``requires_exact_replay = True`` (it skips batch ids it already committed)
    is refused at start behind a source that cannot re-read exactly. An acknowledging
    source is acknowledged only after ``commits/N``: after a crash it delivers the batch's
    messages again, re-run under the same id when ``commits/N`` was not written, else as a
    new batch (at-least-once).
    ``available_now`` needs a replayable source: with an acknowledging one, the constructor
    raises :class:`~streamkit.streaming.contracts.AvailableNowUnsupportedError`.
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
        watermarks: PartitionWatermarks | None = None,
    ) -> None:
        self.id = uuid.uuid4().hex
        self.name = name or f"query-{self.id[:8]}"
        self.source, self.sink, self.trigger = source, sink, trigger
        self._feed = feed_for(source)
        if self._feed.kind == "acknowledging" and trigger.kind == "available_now":
            raise AvailableNowUnsupportedError(type(source).__name__)
        _check_replay(sink, self._feed.exact_replay, type(source).__name__)
        self.table = table
        """The unbounded input table: every decoded micro-batch is appended to it."""
        self._engine = IncrementalQuery(
            plan, mode, emit_on_same_batch=emit_on_same_batch, watermarks=watermarks
        )
        self._log = CheckpointLog(store) if store is not None else None
        """None without a checkpoint location: nothing to restart from, nothing written."""
        self._clock = clock
        self._progress: deque[QueryProgress] = deque(maxlen=100)
        self._idle: QueryProgress | None = None
        """The idle progress record of the stall in progress (see :meth:`_note_stall`)."""
        self._dead: list[pa.Table] = []
        self._late: list[pa.Table] = []
        self._offsets: Offsets = {}
        self._next_id = 0
        self._stop = threading.Event()
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self._last_start: float | None = None
        self._owners = OwnerHeartbeat([], self._owner_lost)

    # -- handle --------------------------------------------------------------------------
    def start(self, *, force: bool = False) -> StreamingQuery:
        """Take the owner leases, then start the micro-batch loop in the background.

        Before anything is read: the checkpoint folder's owner lease, then the source's own
        (:mod:`streamkit.streaming.owner`; e.g. one per Kinesis app name and worker id).
        A live copy holding one raises
        :class:`~streamkit.streaming.owner.QueryAlreadyRunningError` naming it; a dead
        one (silent for its lease duration, or gone from this machine) is taken over;
        ``force=True`` takes over at once (only when the other copy is dead). The leases
        are renewed every ``lease_seconds / 3`` in their own thread and released when the
        loop ends; a copy forced out stops with
        :class:`~streamkit.streaming.owner.OwnerLostError` at its next batch."""
        store = self._log.store if self._log is not None else None
        leases = owner_leases_for(self.name, store, self.source)
        acquire_all(leases, force=force)
        self._owners = OwnerHeartbeat(leases, self._owner_lost).start()
        streams.post_started(self)
        self._thread.start()
        return self

    def _owner_lost(self, error: OwnerLostError) -> None:
        self._error = error
        self._stop.set()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop after the batch in flight commits; waits up to ``timeout`` seconds."""
        self._stop.set()
        self._thread.join(timeout)

    def await_termination(self, timeout: float | None = None) -> bool:
        """Wait for the query to end; re-raises its error. False if still running."""
        finished = self._done.wait(timeout)
        if finished:
            self._raise_if_failed()
        return finished

    @property
    def source_kind(self) -> SourceKind:
        """``"replayable"`` (exactly-once restarts) or ``"acknowledging"`` (at-least-once)."""
        return self._feed.kind

    @property
    def is_active(self) -> bool:
        """True while the loop runs."""
        return self._thread.is_alive()

    @property
    def exception(self) -> BaseException | None:
        """The error that stopped the query, if any."""
        return self._error

    @property
    def last_progress(self) -> QueryProgress | None:
        """Progress of the latest batch."""
        return self._progress[-1] if self._progress else None

    @property
    def recent_progress(self) -> list[QueryProgress]:
        """Progress of up to the last 100 batches, oldest first."""
        return list(self._progress)

    @property
    def dead_letters(self) -> pa.Table | None:
        """Records that could not be decoded (raw bytes, partition, position, reason,
        batch id), the most recent ~SIDE_TABLE_ROWS of them, or None when there were none."""
        return pa.concat_tables(self._dead, promote_options="default") if self._dead else None

    @property
    def late_rows(self) -> pa.Table | None:
        """Input rows that arrived behind the watermark (the most recent ~SIDE_TABLE_ROWS),
        or None when there were none."""
        return pa.concat_tables(self._late, promote_options="default") if self._late else None

    def process_all_available(self, timeout: float = 60.0) -> None:
        """Block until everything the source holds now is processed and committed: a
        replayable source's ``end_offsets`` of now are reached; an acknowledging source came
        back empty after this call and every batch it gave is acknowledged."""
        loop = self._wait_loop(timeout)
        self._raise_if_failed()
        if self._done.is_set():
            raise StreamingQueryError(f"query {self.name} has stopped")
        try:
            asked = asyncio.run_coroutine_threadsafe(self._feed.catch_up(), loop)
        except RuntimeError as exc:  # the loop closed meanwhile: the query ended
            self._raise_if_failed()
            raise StreamingQueryError(f"query {self.name} has stopped") from exc
        caught_up = asked.result(timeout)
        deadline = time.monotonic() + timeout
        with self._cond:
            while not caught_up(self._offsets) or self._engine.owes_batch:
                self._raise_if_failed()
                if self._done.is_set():
                    raise StreamingQueryError(f"query {self.name} stopped before catching up")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"query {self.name} did not catch up in {timeout} s")
                self._cond.wait(min(left, 0.1))

    def _wait_loop(self, timeout: float) -> asyncio.AbstractEventLoop:
        deadline = time.monotonic() + timeout
        while self._loop is None:
            self._raise_if_failed()
            if time.monotonic() > deadline:
                raise TimeoutError(f"query {self.name} did not start in {timeout} s")
            time.sleep(0.01)
        return self._loop

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise StreamingQueryError(
                f"query {self.name} failed ({self._feed.kind} source "
                f"{type(self.source).__name__}): {self._error}"
            ) from self._error

    # -- loop ----------------------------------------------------------------------------
    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # stored and re-raised to the caller
            self._error = exc
        finally:
            self._owners.stop()
            self._done.set()
            streams.post_terminated(self, self._error)
            with self._cond:
                self._cond.notify_all()

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._recover)
        await self._feed.open(self._offsets)
        ahead: asyncio.Task[Fetched | None] | None = None
        try:
            caught_up = await self._feed.catch_up() if self.trigger.stops_by_itself else None
            while not self._stop.is_set():
                started = self._clock()
                fetched = None
                if caught_up is not None and caught_up(self._offsets):
                    if not self._engine.owes_batch:
                        break  # available_now: everything there was at start is committed
                else:
                    fetched = await (ahead or self._fetch())
                    ahead = None
                if fetched is not None and self._runs(fetched):
                    if self._prefetches:
                        ahead = asyncio.create_task(self._fetch())
                    await self._process(fetched, started)
                else:
                    ready = caught_up is None or caught_up(self._offsets)  # else more to read
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
            await self._feed.close()

    def _runs(self, fetched: Fetched) -> bool:
        """Whether ``fetched`` makes a batch: it holds records, or the source counts a read
        without records as a batch (``runs_empty_batches``, e.g. an empty file, as Spark's
        file source does) and its offsets moved."""
        if fetched.records:
            return True
        if not getattr(self.source, "runs_empty_batches", False):
            return False
        ends = fetched.batch.end_offsets
        return bool(ends) and any(self._offsets.get(k) != v for k, v in ends.items())

    @property
    def _prefetches(self) -> bool:
        """Whether batch N+1 is fetched while batch N runs: for triggers that start the next
        batch as soon as the last one ends (``available_now``, ``processing_time`` 0)."""
        kind = self.trigger.kind
        return kind == "available_now" or (kind == "processing_time" and not self.trigger.interval)

    async def _fetch(self) -> Fetched | None:
        wait = 0.05 if self.trigger.kind != "processing_time" else self.trigger.interval
        return await self._feed.fetch(max_wait=max(wait, 0.05))

    async def _pace(self, started: float) -> None:
        if self.trigger.kind == "processing_time":
            left = self.trigger.interval - (self._clock() - started)
            if left > 0:
                await asyncio.sleep(left)

    def _recover(self) -> None:
        if self._log is None:
            return
        last = self._log.latest()
        pending = self._log.pending(last.batch_id if last is not None else None)
        # a logged batch ending where the last commit ended was a no-data batch: run it again
        no_data = (
            pending is not None and last is not None and self._feed.kind == "replayable"
            and pending[1] == last.offsets
        )  # fmt: skip
        if pending is not None and pending[1] and not no_data:
            self._feed.replay_to(pending[1])  # batch N ran but never committed: re-read it
        if last is None:
            return
        self._offsets = dict(last.offsets)
        self._next_id = last.batch_id + 1
        meta = _commit_meta(self._log, last.batch_id)
        in_force = meta.get("in_force")
        maxima = meta.get("partition_max")
        self._engine.restore(
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
        batch = fetched.batch if fetched is not None else _no_data(self._offsets)
        bid = self._next_id
        offsets = {**self._offsets, **batch.end_offsets}
        log = self._log
        t0 = self._clock()
        if log is not None:
            await asyncio.to_thread(log.write_offsets, bid, offsets)
        result, output = await asyncio.to_thread(self._execute, batch.rows, batch.row_partitions)
        t1 = self._clock()
        await self.sink.add_batch(bid, output)
        t2 = self._clock()
        await asyncio.to_thread(self._engine.checkpoint_state, log, bid)
        t3 = self._clock()
        engine = self._engine
        meta: dict[str, Any] = {"watermark": engine.watermark, "max_event": engine.max_event}
        meta["in_force"] = engine.in_force
        meta["partition_max"] = engine.partition_maxima
        if log is not None:
            await asyncio.to_thread(log.write_commit, bid, offsets, meta)
        if fetched is not None:
            await self._feed.done(fetched, offsets)
        t4 = self._clock()
        self._keep_side_tables(bid, batch, result.late_rows)
        phases = PhaseDurations(
            batch.fetch_seconds, batch.decode_seconds, t1 - t0, t3 - t2, t2 - t1, (t4 - t3)
        )
        self._record(
            bid=bid,
            batch=batch,
            late=result.late_rows.height,
            out_rows=output.num_rows,
            phases=phases,
            started=started,
        )
        with self._cond:
            self._offsets, self._next_id = offsets, bid + 1
            self._cond.notify_all()

    def _execute(
        self, rows: pa.Table, partitions: pa.Array | None = None
    ) -> tuple[BatchResult, pa.Table]:
        """Append ``rows`` to the input table and run the incremental engine on them (in a
        worker thread, so the next batch is fetched meanwhile); ``partitions`` names each
        row's source partition (per-partition watermarks)."""
        if not rows.num_columns:  # a no-data batch
            result = self._engine.run_no_data()
            return result, result.output.to_arrow()
        frame = pl.from_arrow(rows)
        assert isinstance(frame, pl.DataFrame)
        self.table.append(rows)
        result = self._engine.run(frame, partitions)
        return result, result.output.to_arrow()

    def _keep_side_tables(self, bid: int, batch: SourceBatch, late: pl.DataFrame) -> None:
        """Keep the most recent SIDE_TABLE_ROWS dead letters and late rows (totals are in
        the progress records), so a long-running query's memory stays bounded."""
        if batch.dead_letters.num_rows:
            ids = pa.array([bid] * batch.dead_letters.num_rows, pa.int64())
            self._dead.append(batch.dead_letters.append_column("batch_id", ids))
            _trim(self._dead)
        if late.height:
            self._late.append(late.to_arrow())
            _trim(self._late)

    def _record(
        self,
        *,
        bid: int,
        batch: SourceBatch,
        late: int,
        out_rows: int,
        phases: PhaseDurations,
        started: float,
    ) -> None:
        n = batch.rows.num_rows
        since = started - self._last_start if self._last_start is not None else None
        self._last_start = started
        own = phases.total or 1e-9
        self._progress.append(
            QueryProgress(
                batch_id=bid,
                timestamp=datetime.now(UTC),
                num_input_rows=n,
                input_rows_per_second=n / since if since else 0.0,
                processed_rows_per_second=n / own,
                durations=phases,
                watermark=self._watermark_time(),
                state_rows=self._engine.state_rows,
                late_rows=late,
                dead_letters=batch.dead_letters.num_rows,
                output_rows=out_rows,
                partitions=batch.partitions,
            )
        )
        newest = self._event_time(self._engine.max_event)
        streams.post_progress(self, self._progress[-1], newest)

    async def _without_records(self, fetched: Fetched | None, started: float, ready: bool) -> None:
        """A trigger without records: move the offsets, run Spark's no-data batch when the
        engine owes one and no input is known to be waiting (``ready``: not an
        ``available_now`` query still short of its end), else note a stall, if any."""
        if fetched is not None:
            self._offsets = {**self._offsets, **fetched.batch.end_offsets}
        if self._engine.owes_batch and ready:
            await self._process(None, started)  # Spark's no-data batch
        else:
            self._note_stall()
            streams.post_idle(self, self._idle)

    def _note_stall(self) -> None:
        """While the source reports partitions it cannot read (``stalled_partitions()``:
        an endpoint outage it retries for ever), keep one idle progress record as the
        latest (0 rows, the last batch's id, those partitions, as Spark reports idle
        triggers), replaced while the stall lasts and dropped when it ends, so
        ``last_progress`` shows it."""
        probe = getattr(self.source, "stalled_partitions", None)
        stalled = tuple(probe()) if callable(probe) else ()
        if not stalled:
            if self._idle is not None and self._progress and self._progress[-1] is self._idle:
                self._progress.pop()  # the stall is over: the last batch is the latest again
            self._idle = None
            return
        idle = QueryProgress(
            batch_id=self._next_id - 1, timestamp=datetime.now(UTC), num_input_rows=0,
            input_rows_per_second=0.0, processed_rows_per_second=0.0,
            durations=PhaseDurations(), watermark=self._watermark_time(),
            state_rows=self._engine.state_rows, late_rows=0, dead_letters=0, output_rows=0,
            partitions=stalled,
        )  # fmt: skip
        if self._progress and self._progress[-1] is self._idle:
            self._progress[-1] = idle
        else:
            self._progress.append(idle)
        self._idle = idle

    def _watermark_time(self) -> datetime | None:
        return self._event_time(self._engine.watermark)

    def _event_time(self, wm: int | None) -> datetime | None:
        """An event time in ticks of the watermark column as a UTC datetime."""
        if wm is None:
            return None
        unit = self._engine.time_unit()
        per_second = {"ns": 1_000_000_000, "us": 1_000_000, "ms": 1_000}[unit]
        return datetime.fromtimestamp(wm / per_second, tz=UTC)

    def __repr__(self) -> str:
        state = "active" if self.is_active else "stopped"
        return f"<StreamingQuery {self.name} {state}, next batch {self._next_id}>"


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
