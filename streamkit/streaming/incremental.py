"""Incremental execution of one plan over micro-batches: the streaming half of the engine.

Spark Structured Streaming's rules (checked against PySpark 4.3). Let W be the watermark
tracker: max event time seen so far (truncated to ms) minus the delay, never decreasing.
Batch n runs with the watermark in force W_n = W before its rows are seen:

- Late rows: a windowed aggregation drops a row's contribution to a window whose end is
  <= W_{n-1} (the watermark in force in the previous batch); a session row is judged on
  its own session ``[t, t + gap)``. A row all of whose windows are dropped is late (kept
  in the late-rows table). Complete mode keeps late rows of time windows (it never
  evicts), but drops late session rows, as Spark does. A query without an aggregation
  drops nothing. Only rows that reach the stateful operator are judged: a row a filter
  or an inner stream-static join below it rejects is neither aggregated nor late, as
  Spark's ``numRowsDroppedByWatermark`` counts only the rows its operator drops. The
  late-rows table holds the rows as read, each once: a row that a stream-static join
  repeats is one late row there and in the count (Spark counts its operator's input rows:
  each joined row for ``dropDuplicates`` and stateful functions, the late (window, key)
  groups of the partial aggregates for an aggregation).
- Eviction: groups whose window end is <= W_n leave state (append: they are emitted now).
  Without a window carrying the watermark, a group key carrying it (the watermark's
  column or a plain rename) takes the window end's place for eviction and late rows
  (Spark's ``watermarkExpression`` on the key); two such keys (or one beside the window)
  are refused in append and update mode, where Spark fails the batch.
- No-data batch: after a batch in append or update mode with a watermark, when W moved
  past W_n the query owes one batch without input (:meth:`IncrementalQuery.owes_batch`).
- Restart: the first batch judges late rows against the watermark in force in the last
  committed batch; no no-data batch is owed until input comes, unless one was logged and
  not committed (it runs again under its id).

The rows that are kept go through the same partial-aggregation kernel as a batch job and
merge into a state store (:mod:`streamkit.streaming.state`) whose per-batch cost follows
the groups the batch touches and evicts; without late rows, the final state equals the
batch result on the same rows.
``emit_on_same_batch=True`` (not Spark's) evicts with W after batch n's own rows and owes
no extra batch.

The event time is the watermark's column as it reaches ``with_watermark``: computed or
renamed below it, W, late rows and per-partition maxima are on the computed values
(:mod:`~streamkit.streaming.event_times`), as in Spark. Above it, the watermark follows
plain renames up to the operator (:mod:`~streamkit.streaming.watermark_lineage`): a window
on ``col("ts").alias("t")`` evicts and drops late rows as on ``ts``; a window on a column
computed after ``with_watermark`` carries none (append refused, update never evicts nor
drops a late row, as in Spark).

An ``IncrementalQuery`` holds one stateful operator: an aggregation or a
``drop_duplicates`` (:mod:`streamkit.streaming.dedup`, with its own late-row and eviction
rules and the same no-data batches); a plan with several runs as a chain
(:mod:`streamkit.streaming.chain`, whose first operator is an ``IncrementalQuery``).
Filters and projections after it run on the rows it emits each batch, through the same
executor (:mod:`~streamkit.streaming.downstream`), as Spark allows in
every output mode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Literal

import polars as pl
import pyarrow as pa

from streamkit.errors import PlanError
from streamkit.execute import aggregate_spec, compile_plan, given
from streamkit.expr import Col
from streamkit.plan import Aggregate, Deduplicate, Plan, Watermark
from streamkit.stateful import FlatMapGroupsWithState
from streamkit.streaming import agg_steps
from streamkit.streaming.agg_steps import OutputMode as OutputMode  # noqa: PLC0414 (re-export)
from streamkit.streaming.batch_result import BatchResult
from streamkit.streaming.checkpoint import CheckpointLog
from streamkit.streaming.dedup import StreamingDedup
from streamkit.streaming.downstream import above
from streamkit.streaming.event_times import EventTimes, Split, split_as_read
from streamkit.streaming.output_modes import OUTPUT_MODES, check_one_event_time, check_output_mode
from streamkit.streaming.state import KeyedStore, StateStore, make_store
from streamkit.streaming.state.dedup import DedupStore
from streamkit.streaming.state.group_state_store import GroupStateStore
from streamkit.streaming.state.processor_store import ProcessorStore
from streamkit.streaming.stateful_exec import BatchClock, StreamingStateful
from streamkit.streaming.static_sides import bind_static_sides
from streamkit.streaming.transform_exec import StreamingTransform
from streamkit.streaming.watermark_input import counted, operator_rows, watermark_filter
from streamkit.streaming.watermark_lineage import (
    dedup_time_columns,
    watermarked_keys,
    window_watermark,
)
from streamkit.streaming.watermarks import SINGLE, PartitionWatermarks
from streamkit.transform_state import TransformWithState
from streamkit.windows import WEND, WINDOW_COLUMN, WindowSpec, last_window_end


class IncrementalQuery:
    """Runs ``plan`` (whose leaf is the stream's scan) one micro-batch at a time.

    State lives in a state store between batches; the caller checkpoints it with
    :meth:`checkpoint_state` and restores it with :meth:`restore`.
    """

    def __init__(
        self,
        plan: Plan,
        mode: OutputMode,
        *,
        emit_on_same_batch: bool = False,
        watermarks: PartitionWatermarks | None = None,
        processing_clock: Callable[[], float] | None = None,
        consumer: Plan | None = None,
    ) -> None:
        """``consumer``: in a chain, the next operator over this one's output (the plan
        that reads it; Spark prunes a ``drop_duplicates``' input to the columns it reads)."""
        if mode not in OUTPUT_MODES:
            raise PlanError(f"output mode must be one of {OUTPUT_MODES}, got {mode!r}")
        plan, self._static = bind_static_sides(plan)
        self.plan, self.mode = plan, mode
        self.emit_on_same_batch = emit_on_same_batch
        kinds = Aggregate | Deduplicate | FlatMapGroupsWithState | TransformWithState
        stateful = [n for n in plan.chain() if isinstance(n, kinds)]
        marks = [n for n in plan.chain() if isinstance(n, Watermark)]
        if len(stateful) > 1:
            raise PlanError(
                "an IncrementalQuery runs one stateful operator (one aggregation or one "
                "drop_duplicates); run a chain with streamkit.streaming.chain.make_engine"
            )
        top = stateful[0] if stateful else None
        self._above = above(plan, top) if top is not None and top is not plan else None
        self._reaching = operator_rows(top.children[0]) if top is not None else None
        """The rows as read that reach the stateful operator (None: all do)."""
        self._agg = top if isinstance(top, Aggregate) else None
        self._mark = marks[0] if marks else None
        if self._mark is not None and top is not None and self._mark not in top.chain():
            raise PlanError("with_watermark must come before the aggregation or drop_duplicates")
        self._window_mark = window_watermark(self._agg, self._mark)
        """``_mark`` when the aggregation's window carries it (None: no eviction or late
        rows by a window, as in Spark; :mod:`~streamkit.streaming.watermark_lineage`)."""
        self._key_mark = self._watermarked_key()
        """Without such a window, the first group key carrying the watermark: groups leave
        the state by it and late rows are judged on it (None: no such key)."""
        check_output_mode(self._agg, self._timed, mode, self._mark)
        self._spec = aggregate_spec(self._agg) if self._agg is not None else None
        self._judged_window = self._window_judged_at_mark()
        self._counts = watermark_filter(plan, self._mark) if self._mark is not None else None
        self._times = EventTimes.of(self._mark) if self._mark is not None else None
        """The event time as computed below the watermark (None: the column as read)."""
        self._store: StateStore | None = (
            None if self._spec is None else make_store(self._spec, self._key_mark)
        )
        self._dedup: StreamingDedup | StreamingStateful | StreamingTransform | None = None
        """The stateful operator other than an aggregation (rows in, rows out)."""
        if isinstance(top, Deduplicate):
            times = dedup_time_columns(top, self._mark, self._above or consumer)
            self._dedup = StreamingDedup(top, self._mark, times)
        self.clock = BatchClock(processing_clock)
        """Processing time (``apply_in_pandas_with_state``, ``transform_with_state_in_pandas``);
        the runner sets each batch's."""
        if isinstance(top, FlatMapGroupsWithState):
            self._dedup = StreamingStateful(top, self._mark, mode, self.clock)
        if isinstance(top, TransformWithState):
            self._dedup = StreamingTransform(top, self._mark, self.clock)
        self.watermark: int | None = None
        """The tracker W: after the batches run so far (None before any event time)."""
        self._max_event: int | None = None
        self._marks = watermarks or PartitionWatermarks()
        """Largest event time per source partition: the basis of W (rule 10 of the README)."""
        self._in_force: int | None = None
        """Watermark in force in the last batch run (the late-row threshold of the next)."""
        self._restored = False
        """Restored and no batch run since: no no-data batch is owed (as in Spark)."""

    def _watermarked_key(self) -> str | None:
        """The first plain group key carrying the watermark (the watermark's column or a
        plain rename of it after ``with_watermark``) when no window of the aggregation
        carries it: as Spark's ``WatermarkSupport.watermarkExpression`` on such a key, a
        group whose key is at or before the watermark in force leaves the state (append:
        it is emitted then), and a row whose key is at or before the previous batch's is
        late; every such key holds the same values (those of the watermark's column)."""
        if self._agg is None or self._mark is None:
            return None
        keyed = watermarked_keys(self._agg, self._mark)
        window = [WINDOW_COLUMN] if self._window_mark is not None else []
        check_one_event_time(window + keyed, self.mode)
        return keyed[0] if keyed and not window else None

    @property
    def _timed(self) -> bool:
        """Whether the aggregation evicts by the watermark (a window or a key carries it)."""
        return self._window_mark is not None or self._key_mark is not None

    def _window_judged_at_mark(self) -> WindowSpec | None:
        """The aggregation's window on the watermark's column as it reaches
        ``with_watermark``: late rows are judged on the rows there, and a column that
        carries the watermark above it holds the same values."""
        agg, mark = self._agg, self._window_mark
        if agg is None or agg.window is None or mark is None:
            return None
        return replace(agg.window, column=Col(mark.column))

    # -- per batch ---------------------------------------------------------------------
    def run(self, rows: pl.DataFrame, partitions: pa.Array | None = None) -> BatchResult:
        """Process one micro-batch of source rows; returns output, late rows, watermark.

        Late rows are judged against the watermark in force in the previous batch, groups
        are evicted with the one in force in this batch (the tracker before these rows).
        ``partitions`` names each row's source partition (None: one partition); W follows
        the slowest active partition under the ``"min"`` policy."""
        for side in self._static:  # one snapshot of each stream-static join's table
            side.refresh()
        late_mark, in_force = self._in_force, self.watermark
        timed = rows if self._times is None or not rows.height else self._times.timed(rows)
        ticks = self._event_ticks(timed)
        mask = counted(rows, self._counts) if ticks is not None else None
        if ticks is not None and mask is not None:  # rows Spark filters before its watermark
            ticks = ticks.filter(mask)
            partitions = None if partitions is None else partitions.filter(mask.to_arrow())
        self._advance_max(ticks)
        if ticks is not None:
            self._marks.observe(ticks, partitions)
        self._update_watermark()
        if self.emit_on_same_batch:
            in_force = self.watermark
        self._in_force, self._restored = in_force, False
        if self._dedup is not None:
            rows, late = self._judged(rows, timed, lambda r: self._dedup_split(r, late_mark))
            kept = compile_plan(self._dedup.node.input, None, set(), given(rows)).collect()
            output = self._dedup.run(kept, in_force)
            if isinstance(self._dedup, StreamingTransform):
                self._dedup.check_behind(output, late_mark)
            return BatchResult(self._finish(output), late, self.watermark)
        if self._agg is None:
            return BatchResult(self._project(rows), rows.head(0), self.watermark)
        rows, late = self._judged(rows, timed, lambda r: self._split_late(r, late_mark))
        output = self._aggregate(rows, late_mark, in_force)
        return BatchResult(self._finish(output), late, self.watermark)

    def run_no_data(self) -> BatchResult:
        """A batch without input rows (Spark's no-data batch): evicts and emits what the
        watermark now in force closed."""
        leaf = self.plan.chain()[-1]
        return self.run(pl.DataFrame(schema=leaf.schema))

    @property
    def owes_batch(self) -> bool:
        """True when the watermark moved past the one in force in the last batch, in append
        or update mode with a watermark: Spark then runs a no-data batch before waiting
        for input (``spark.sql.streaming.noDataMicroBatches.enabled``); the rules of
        ``apply_in_pandas_with_state`` are in :mod:`~streamkit.streaming.stateful_exec`, those
        of ``transform_with_state_in_pandas`` in :mod:`~streamkit.streaming.transform_exec`."""
        if isinstance(self._dedup, StreamingStateful | StreamingTransform):
            return self._dedup.owes_batch(self._watermark_moved())
        return self._watermark_moved()

    def _watermark_moved(self) -> bool:
        stateful = self._agg is not None or self._dedup is not None
        if not stateful or self._mark is None or self.mode == "complete":
            return False
        if self.emit_on_same_batch:
            return False
        return agg_steps.watermark_moved(self.watermark, self._in_force, self._restored)

    def _project(self, rows: pl.DataFrame) -> pl.DataFrame:
        return compile_plan(self.plan, None, set(), given(rows)).collect()

    def _finish(self, rows: pl.DataFrame) -> pl.DataFrame:
        """The operations after the stateful operator, over what it emitted."""
        if self._above is None:
            return rows
        return compile_plan(self._above, None, set(), given(rows)).collect()

    def _aggregate(
        self, rows: pl.DataFrame, late_mark: int | None, in_force: int | None
    ) -> pl.DataFrame:
        agg, spec = self._agg, self._spec
        assert agg is not None
        assert spec is not None
        assert self._store is not None
        mark = late_mark if self._drops_late and self._window_mark is not None else None
        if isinstance(self._store, KeyedStore) and self._store.adds_rows:
            touched = self._store.merge_rows(agg_steps.input_rows(agg, spec, rows), mark)
            return self._emit(touched, in_force)
        fresh = agg_steps.partial_states(agg, spec, rows)
        if mark is not None:
            fresh = fresh.filter(pl.col(WEND) > mark)  # a sliding row's closed windows
        touched = self._store.merge(fresh)
        return self._emit(touched, in_force)

    def _emit(self, touched: pl.DataFrame, in_force: int | None) -> pl.DataFrame:
        """Complete: every group; update: the groups touched; append: the groups closed.
        Groups whose window ended at or before ``in_force`` leave the state (not in
        complete mode)."""
        assert self._store is not None
        assert self._agg is not None
        assert self._spec is not None
        evict = in_force if self._timed else None
        return agg_steps.emit(self._store, self._agg, self._spec, self.mode, touched, evict)

    def _final(self, states: pl.DataFrame) -> pl.DataFrame:
        assert self._agg is not None
        assert self._spec is not None
        return agg_steps.final(states, self._agg, self._spec)

    # -- lateness ----------------------------------------------------------------------
    def _judged(
        self, rows: pl.DataFrame, timed: pl.DataFrame, split: Split
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """``split`` judged on ``timed`` (the event time at the watermark); the rows as
        read come out. A late row that does not reach the stateful operator (rejected by
        a filter or join below it) is not reported: it is dropped there, not as late. Only
        the late rows are run through the plan below the operator again, so a batch
        without late rows pays nothing."""
        if self._times is None:
            kept, late = split(rows)
        else:
            kept, late = split_as_read(rows, timed, split)
        if late.height and self._reaching is not None:
            late = late.filter(self._reaching.mask(late))
        return kept, late

    def _dedup_split(
        self, rows: pl.DataFrame, late_mark: int | None
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        assert self._dedup is not None
        return self._dedup.split_late(rows, late_mark)

    @property
    def _drops_late(self) -> bool:
        """Whether late rows are dropped: windowed aggregations with a watermark, except
        time windows in complete mode (Spark keeps them there), and aggregations by a
        watermarked key except in complete mode."""
        if self._key_mark is not None:
            return self.mode != "complete"
        return agg_steps.drops_late(self._window_mark, self._agg, self.mode)

    def _split_late(
        self, rows: pl.DataFrame, late_mark: int | None
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(rows with at least one window open at ``late_mark``, late rows); by a
        watermarked key: rows whose key is after ``late_mark`` (a null one never is)."""
        if late_mark is None or not self._drops_late or not rows.height:
            return rows, rows.head(0)
        assert self._agg is not None
        assert self._spec is not None
        if self._key_mark is not None:
            assert self._mark is not None  # the key holds the values of the mark's column
            late = (pl.col(self._mark.column).to_physical() <= late_mark).fill_null(False)
        else:
            window, dtype = self._judged_window, self._spec.time_dtype
            assert window is not None
            assert dtype is not None
            late = (last_window_end(window, dtype) <= late_mark).fill_null(False)
        flags = rows.select(late).to_series()
        if not flags.any():
            return rows, rows.head(0)
        return rows.filter(~flags), rows.filter(flags)

    # -- watermark ---------------------------------------------------------------------
    def _event_ticks(self, timed: pl.DataFrame) -> pl.Series | None:
        """Ticks of the event time of ``timed`` (the rows with it as at the watermark)."""
        if self._mark is None:
            return None
        assert isinstance(self._mark, Watermark)
        if self._mark.column not in timed.columns:  # renamed below the watermark, no rows
            return pl.Series(self._mark.column, [], pl.Int64)
        return timed[self._mark.column].dt.epoch(self.time_unit())

    def time_unit(self) -> Literal["ns", "us", "ms"]:
        """Unit of the event-time column (ticks of the watermark)."""
        assert isinstance(self._mark, Watermark)
        dtype = self._mark.input.schema[self._mark.column]
        assert isinstance(dtype, pl.Datetime)
        return dtype.time_unit

    def _advance_max(self, ticks: pl.Series | None) -> None:
        if ticks is None:
            return
        top = ticks.max()
        if isinstance(top, int) and (self._max_event is None or top > self._max_event):
            self._max_event = top

    def _update_watermark(self) -> None:
        """W = max event time in whole ms minus the delay in whole ms (Spark's arithmetic),
        in ticks of the column; it never moves back."""
        basis = self._marks.basis()
        if basis is None:
            return
        assert isinstance(self._mark, Watermark)
        delay = self._mark.delay_ns
        self.watermark = agg_steps.next_watermark(self.watermark, basis, delay, self.time_unit())

    def current_result(self) -> pl.DataFrame:
        """The result over all state now held (what complete mode would emit)."""
        if self._store is None:
            return pl.DataFrame(schema=self.plan.schema)
        return self._finish(self._final(self._store.rows()))

    # -- state snapshots ---------------------------------------------------------------
    def state_frame(self) -> pl.DataFrame:
        """The aggregation state (empty frame when there is none; O(groups held))."""
        held = self._held
        return held.rows() if held is not None else pl.DataFrame()

    @property
    def _held(self) -> StateStore | DedupStore | GroupStateStore | ProcessorStore | None:
        """The state of the query's stateful operator (None: it has none)."""
        return self._dedup.store if self._dedup is not None else self._store

    def checkpoint_state(self, log: CheckpointLog | None, batch_id: int) -> None:
        """Step 3 of the commit protocol: the state after ``batch_id`` into ``log`` as a
        delta or a snapshot (:meth:`CheckpointLog.write_changes`); without a log, the
        store's changes are dropped so that they do not pile up."""
        held = self._held
        if held is None:
            if log is not None:
                log.write_state(batch_id, pl.DataFrame())
        elif log is not None:
            log.write_changes(batch_id, held)
        else:
            held.take_changes()

    def restore(
        self,
        state: pl.DataFrame | None,
        watermark: int | None,
        max_event: int | None,
        in_force: int | None = None,
        *,
        no_data_pending: bool = False,
        partition_max: Mapping[str, int] | None = None,
    ) -> None:
        """Resume from a snapshot written after a committed batch.

        ``partition_max`` is the largest event time per source partition at that batch
        (:attr:`partition_maxima`); checkpoints written before it existed give only
        ``max_event``, restored as one partition.

        ``in_force`` is the watermark in force in that batch (:attr:`in_force`): the first
        batch after the restart judges late rows against it, as Spark does with the last
        offsets log entry (None: ``watermark``). No no-data batch is owed until input
        comes (Spark runs none after a restart), unless ``no_data_pending``: one was logged
        and not committed, and is owed again under the same batch id."""
        if self._held is not None:
            self._held.load(state)
        self.watermark, self._max_event = watermark, max_event
        if partition_max is not None:
            self._marks.restore(partition_max)
        else:
            self._marks.restore({SINGLE: max_event} if max_event is not None else None)
        self._in_force = watermark if in_force is None else in_force
        self._restored = not no_data_pending

    @property
    def in_force(self) -> int | None:
        """Watermark in force in the last batch run (late-row threshold of the next)."""
        return self._in_force

    @property
    def partition_maxima(self) -> dict[str, int]:
        """Largest event time per source partition (ticks), for the commit file."""
        return self._marks.maxima

    def declare_partitions(self, open_partitions: Iterable[str], ended: Iterable[str]) -> None:
        """The partitions the source reads now and those it read to the end (see
        :meth:`~streamkit.streaming.watermarks.PartitionWatermarks.declare`)."""
        self._marks.declare(open_partitions, ended)

    @property
    def max_event(self) -> int | None:
        """Largest event time seen (ticks), the basis of the watermark."""
        return self._max_event

    @property
    def state_rows(self) -> int:
        """Number of groups held in state."""
        return self._held.height if self._held is not None else 0
