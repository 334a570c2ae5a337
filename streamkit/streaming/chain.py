"""Chains of stateful operators on a stream, where Spark (3.5+) allows them.

A plan may hold several aggregations and ``drop_duplicates`` one above the other (with
filters and projections between them). The first runs in an
:class:`~streamkit.streaming.incremental.IncrementalQuery`, which owns the watermark; each
later one runs on the rows the one below emitted in the same micro-batch. As in Spark's
watermark propagation, an aggregation or a deduplication passes its input watermark on
unchanged, so every operator judges late rows with the watermark in force in the previous
batch and evicts with the one in force in this batch. The output mode is the last
operator's; every operator below it runs in append mode.

What Spark refuses is refused here with Spark's reason (checked against PySpark 4.3):

- a stateful operator above an aggregation in update or complete mode (the aggregation
  may emit rows the operator above takes as late: Spark's "possible correctness issue");
- an aggregation above another in append mode that does not group by a window over the
  event time, i.e. ``sk.window(sk.window_time("window"), ...)`` above an aggregation or a
  window on the watermarked column above ``drop_duplicates`` (Spark: append mode needs a
  watermark, and ``window.start`` carries none);
- two group keys carrying the watermark (or one beside such a window) in append or update
  mode (Spark fails the batch: ``MULTIPLE_EVENT_TIME_COLUMNS``).

Above ``drop_duplicates`` (or a join or ``transform_with_state_in_pandas`` passing the
watermark on its ``event_time_column_name``), an aggregation grouped by a plain key
carrying the watermark (or a plain rename of it, on which a window may be too), without a
window, evicts groups and drops late rows by that key as the first operator would
(:class:`~streamkit.streaming.incremental.IncrementalQuery`; checked against Spark above
all three). Above a first aggregation grouped by such a key, that key carries it on (an
aggregate output never does). Stream-static joins may sit between or above the
operators: every static side is pinned once per batch.

A stream-stream join may be the first operator (:mod:`~streamkit.streaming.stream_join`):
the operators above it are given the join's output watermark (Spark's
``produceOutputWatermark``: the least of its two state watermarks and the watermark),
derived from the watermark in force in the previous batch to judge late rows and from
the one in force now to evict, on the join's columns carrying a side's watermark (and
plain renames of them between the join and the operator above it: an aggregation,
``drop_duplicates`` or a stateful function; a column computed from one carries none, as
Spark's event-time metadata). Spark runs an inner join
followed by an aggregation in append and update mode, an outer join only in append mode;
complete mode is refused.
Either stateful function may follow the join the same way
(:mod:`~streamkit.streaming.function_stage`): fed the joined rows per key, with the join's
output watermark for late rows, event-time timeouts and timers (complete mode refused
with Spark's message).

``drop_duplicates`` above another stateful operator is not supported yet, except above a
stream-stream join or ``transform_with_state_in_pandas``
(:mod:`~streamkit.streaming.dedup_stage`).

``transform_with_state_in_pandas`` and ``apply_in_pandas_with_state`` may be the first
operator (Spark 4's rules, checked against PySpark 4.3; see :func:`_check_function_first`):
the operators above see the watermark the function passes on (the same W, none under
``ProcessingTime``) on the column named by ``event_time_column_name``; without one (and
after ``apply_in_pandas_with_state``) the output has no event time, so an aggregation
above runs in update or complete mode only. Above ``apply_in_pandas_with_state`` the
function must be in append mode and must not use ``EventTimeTimeout``.
``apply_in_pandas_with_state`` may follow ``drop_duplicates`` or
``transform_with_state_in_pandas`` (Spark 4 runs both): it sees the watermark the
operator below passes on, for late rows (``EventTimeTimeout``), timeouts and
``getCurrentWatermarkMs``; after another ``apply_in_pandas_with_state`` or an
aggregation it is refused with Spark's message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from itertools import pairwise
from typing import Literal

import polars as pl
import pyarrow as pa

from streamkit import aggregate as K
from streamkit.conditional import WindowTime
from streamkit.errors import PlanError
from streamkit.execute import aggregate_rows, aggregate_spec, compile_plan, given
from streamkit.expr import Col
from streamkit.group_state import GroupStateTimeout
from streamkit.join_plan import Join
from streamkit.plan import Aggregate, Deduplicate, Plan, Watermark
from streamkit.stateful import FlatMapGroupsWithState
from streamkit.streaming.checkpoint import Changelogged, CheckpointLog
from streamkit.streaming.dedup_stage import DedupStage
from streamkit.streaming.downstream import above
from streamkit.streaming.function_stage import FunctionStage
from streamkit.streaming.incremental import (
    BatchResult,
    IncrementalQuery,
    OutputMode,
    _check_mode,
    check_one_event_time,
)
from streamkit.streaming.state import StateStore, make_store
from streamkit.streaming.state.changelog import DELETED
from streamkit.streaming.state.dedup import EXPIRES
from streamkit.streaming.stateful_exec import BatchClock
from streamkit.streaming.static_sides import bind_static_sides
from streamkit.streaming.stream_join import StreamJoinQuery, is_stream_join
from streamkit.streaming.transform_exec import StreamingTransform
from streamkit.streaming.watermark_lineage import (
    carried,
    carried_from,
    marks_above,
    plain_reference,
    watermarked_keys,
    window_watermark,
)
from streamkit.streaming.watermarks import PartitionWatermarks
from streamkit.transform_state import TransformWithState
from streamkit.windows import WEND, WINDOW_COLUMN, SessionWindow, last_window_end

STAGE = "__stage"
"""Checkpoint column: which operator of the chain a state row belongs to (0: the first)."""

CORRECTNESS = (
    "Detected pattern of possible 'correctness' issue due to global watermark (Spark's "
    "refusal too): an aggregation in {mode} mode can emit rows older than the watermark, "
    "which the stateful operator after it would drop as late; run the query in append mode"
)


JOIN_MODES = (
    "{how} join between two streaming DataFrames/Datasets is not supported in {mode} output "
    "mode, only in {allowed} (Spark's refusal too){fix}"
)
"""Spark's message for a stream-stream join in an output mode it does not support."""


NO_AGGREGATION_COMPLETE = (
    "Invalid streaming output mode: complete. This output mode is not supported for no "
    "streaming aggregations on streaming DataFrames/DataSets (Spark's refusal too, "
    "STREAMING_OUTPUT_MODE.UNSUPPORTED_OPERATION); use output_mode('append')"
)

Function = FlatMapGroupsWithState | TransformWithState
Operator = Aggregate | Deduplicate | Join | FlatMapGroupsWithState | TransformWithState

SPARK_CORRECTNESS = (
    "Detected pattern of possible 'correctness' issue due to global watermark (Spark's "
    "refusal too): {what} can emit rows older than the watermark, which the stateful "
    "operator after it would drop as late; {fix}"
)


def stateful_operators(plan: Plan) -> list[Operator]:
    """The aggregations, deduplications, stream-stream joins and stateful functions of
    ``plan``, the one nearest the source first."""
    return [
        n for n in reversed(plan.chain())
        if isinstance(n, Aggregate | Deduplicate | FlatMapGroupsWithState | TransformWithState)
        or (isinstance(n, Join) and is_stream_join(n))
    ]  # fmt: skip


def make_engine(
    plan: Plan,
    mode: OutputMode,
    *,
    emit_on_same_batch: bool = False,
    watermarks: PartitionWatermarks | None = None,
    processing_clock: Callable[[], float] | None = None,
    policy: str = "min",
) -> IncrementalQuery | ChainQuery:
    """The incremental engine for ``plan``: a :class:`ChainQuery` when it holds several
    stateful operators (or operators above a stream-stream join), else an
    :class:`IncrementalQuery` (``processing_clock``: for ``apply_in_pandas_with_state``,
    which does not chain; ``policy``: the join's multiple-watermark policy)."""
    ops = stateful_operators(plan)
    if len(ops) > 1 or (ops and isinstance(ops[0], Join)):
        return ChainQuery(
            plan, mode, emit_on_same_batch=emit_on_same_batch, watermarks=watermarks,
            policy=policy, processing_clock=processing_clock,
        )  # fmt: skip
    return IncrementalQuery(
        plan, mode, emit_on_same_batch=emit_on_same_batch, watermarks=watermarks,
        processing_clock=processing_clock,
    )  # fmt: skip


def _event_time_window(node: Aggregate, below: Plan, times: tuple[str, ...]) -> bool:
    """Whether ``node`` groups by a window over an event time the operator below passes
    on (``times``: the watermarked columns it keeps)."""
    if node.window is None:
        return False
    column = node.window.column
    if isinstance(below, Aggregate):
        return isinstance(column, WindowTime) and column.columns() == {WINDOW_COLUMN}
    return isinstance(column, Col) and column.name in times


def _watermarked_key(
    node: Aggregate, times: tuple[str, ...], timed: bool, mode: OutputMode
) -> str | None:
    """The first plain group key of ``node`` that is one of ``times`` (the watermarked
    columns the operator below passes on) when no window carries the watermark (``timed``),
    or None; refuses several such keys (or one beside the window) as Spark fails them."""
    keys = [k.output_name for k in node.keys if plain_reference(k) in times]
    check_one_event_time(([WINDOW_COLUMN] if timed else []) + keys, mode)
    return keys[0] if keys and not timed else None


def _key_times(node: Aggregate, below: Aggregate) -> tuple[str, ...]:
    """The columns of ``node``'s input that carry the watermark through ``below``, the
    first operator: its plain group keys carrying it (a group key keeps the watermark
    column's metadata in Spark; an aggregate's output, even named ``ts``, has none), and
    plain renames of them after it. None for a deeper chain (not followed yet)."""
    marks = [n for n in below.chain() if isinstance(n, Watermark)]
    stateful = Aggregate | Deduplicate | Join | FlatMapGroupsWithState | TransformWithState
    if not marks or any(isinstance(n, stateful) for n in below.chain()[1:]):
        return ()
    if window_watermark(below, marks[0]) is not None:
        return ()
    keyed = tuple(watermarked_keys(below, marks[0]))
    return (carried_from(node.input, below, keyed) or ()) if keyed else ()


def _first_times(first: Plan) -> tuple[str, ...]:
    """The columns of the first operator's output that carry the watermark (an
    aggregation's window carries it in its struct, not in a column; see
    :mod:`~streamkit.streaming.watermark_lineage`)."""
    marks = [n for n in first.chain() if isinstance(n, Watermark)]
    if not marks:
        return ()
    if isinstance(first, Aggregate):
        return (marks[0].column,)
    return carried(first, marks[0]) or ()


def _consumer(ops: list[Operator]) -> Plan | None:
    """The aggregation over the first operator, re-rooted on its output (what a first
    ``drop_duplicates``' input is pruned to, as Spark's optimizer does); None: another
    operator, which reads every column."""
    if len(ops) > 1 and isinstance(ops[1], Aggregate):
        return _input_node(ops[1], ops[0])
    return None


def _ticks_per_ms(dtype: pl.Datetime | None) -> int:
    """Ticks of ``dtype`` in a millisecond (the join's watermark unit)."""
    unit = dtype.time_unit if dtype is not None else "ms"
    return {"ns": 1_000_000, "us": 1_000, "ms": 1}[unit]


class _AggStage:
    """An aggregation above another stateful operator, fed that operator's output."""

    def __init__(
        self, node: Aggregate, mode: OutputMode, timed: bool, key: str | None = None
    ) -> None:
        """``timed``: a window carries the watermark; ``key``: otherwise, the group key
        that does (groups leave by it, late rows are judged on it, as in
        :class:`~streamkit.streaming.incremental.IncrementalQuery`)."""
        self.node, self.mode, self.timed, self.key = node, mode, timed, key
        self.spec = aggregate_spec(node)
        self.store: StateStore = make_store(self.spec, key)
        window = node.window
        self.drops_late = timed and (isinstance(window, SessionWindow) or mode != "complete")
        self.drops_late |= key is not None and mode != "complete"

    @property
    def time_dtype(self) -> pl.Datetime | None:
        """The type of the event time it judges (its window's, or its watermarked key's)."""
        if self.key is None:
            return self.spec.time_dtype
        dtype = self.node.schema[self.key]
        assert isinstance(dtype, pl.Datetime)
        return dtype

    def _ends(self, inputs: pl.DataFrame) -> pl.Series:
        """Per input row, the last window end (or the watermarked key) in ticks."""
        node, spec = self.node, self.spec
        if self.key is not None:
            key = next(k for k in node.keys if k.output_name == self.key)
            return inputs.select(key.to_polars().to_physical()).to_series()
        assert node.window is not None
        assert spec.time_dtype is not None
        return inputs.select(last_window_end(node.window, spec.time_dtype)).to_series()

    def run(self, rows: pl.DataFrame, late_mark: int | None, in_force: int | None) -> pl.DataFrame:
        """Merge ``rows`` (late ones dropped), then emit what the output mode says."""
        node, spec = self.node, self.spec
        if self.drops_late and late_mark is not None and rows.height:
            inputs = compile_plan(node.input, None, set(), given(rows)).collect()
            rows = inputs.filter(~(self._ends(inputs) <= late_mark).fill_null(False))
            lazy = rows.lazy()
        else:
            lazy = compile_plan(node.input, None, set(), given(rows))
        fresh = K.partial(aggregate_rows(lazy, node, spec), spec)
        if self.drops_late and late_mark is not None and node.window is not None:
            fresh = fresh.filter(pl.col(WEND) > late_mark)
        touched = self.store.merge(fresh)
        if self.mode == "complete":
            return self.final(self.store.rows())
        timed = (self.timed or self.key is not None) and in_force is not None
        closed = self.store.evict(in_force) if timed and in_force is not None else touched.head(0)
        return self.final(touched if self.mode == "update" else closed)

    def final(self, states: pl.DataFrame) -> pl.DataFrame:
        """Finished groups from state rows (sorted by group, as the single engine does)."""
        if not states.height:
            return pl.DataFrame(schema=self.node.schema)
        if self.spec.state_keys:
            states = states.sort(self.spec.state_keys, nulls_last=True)
        return K.finalize(states, self.spec)


def _input_node(node: Aggregate, below: Plan) -> Aggregate:
    """``node`` reading the rows ``below`` emits (the plan between them re-rooted)."""
    return replace(node, input=above(node.input, below))


class ChainQuery:
    """Runs a plan with several stateful operators one micro-batch at a time (see the
    module docstring); the same interface as :class:`IncrementalQuery`."""

    def __init__(
        self,
        plan: Plan,
        mode: OutputMode,
        *,
        emit_on_same_batch: bool = False,
        watermarks: PartitionWatermarks | None = None,
        policy: str = "min",
        processing_clock: Callable[[], float] | None = None,
    ) -> None:
        plan, sides = bind_static_sides(plan)
        ops = stateful_operators(plan)
        first_pins = bind_static_sides(ops[0])[1]  # the same objects: the first pins them
        self._static = [s for s in sides if not any(s is p for p in first_pins)]
        """The static sides of the stream-static joins above the first operator (one
        snapshot per batch, pinned before the batch runs)."""
        self.plan, self.mode, self.emit_on_same_batch = plan, mode, emit_on_same_batch
        self.first: IncrementalQuery | StreamJoinQuery
        self._function_first = isinstance(ops[0], Function)
        self._function: StreamingTransform | None = None
        """The first operator's engine when it is ``transform_with_state_in_pandas``."""
        for node in ops[1:]:
            if isinstance(node, Function):
                _refuse_function_above(node, ops[: ops.index(node)], mode)
        if isinstance(ops[0], Join):
            self.first = _join_first(ops[0], ops[1:], mode, emit_on_same_batch, policy)
            times = self.first.event_columns
        elif isinstance(ops[0], Function):
            _check_function_first(ops[0], ops[1:], emit_on_same_batch)
            self.first = IncrementalQuery(
                ops[0], "append" if ops[0].output_mode == "append" else "update",
                watermarks=watermarks,
                processing_clock=processing_clock,
            )  # fmt: skip
            mark = ops[0].output_watermark() if isinstance(ops[0], TransformWithState) else None
            times = () if mark is None else (mark.column,)
            engine = self.first._dedup
            self._function = engine if isinstance(engine, StreamingTransform) else None
        else:
            self.first = IncrementalQuery(
                ops[0], "append", emit_on_same_batch=emit_on_same_batch, watermarks=watermarks,
                consumer=_consumer(ops),
            )  # fmt: skip
            times = _first_times(ops[0])
        self.stages: list[_AggStage | DedupStage | FunctionStage] = []
        for i, (below, node) in enumerate(pairwise(ops), start=1):
            self.stages.append(
                self._stage(below, node, times, mode if i == len(ops) - 1 else "append")
            )
            if isinstance(node, TransformWithState):  # it moves the event time (or drops it)
                times = () if node.event_time_column is None else (node.event_time_column,)
            elif isinstance(node, FlatMapGroupsWithState):  # its output has no event time
                times = ()
        first_ms = 1 if isinstance(self.first, StreamJoinQuery) else _first_ticks(self.first)
        self._scale = [(first_ms, _ticks_per_ms(_time_dtype(s))) for s in self.stages]
        """Per stage, ticks per ms of the marks passed on (the join's are in ms) and of its
        own event time (a function's output column may have another unit)."""
        self._above = above(plan, ops[-1]) if ops[-1] is not plan else None
        self.state = ChainState(self)

    def _stage(
        self,
        below: Operator,
        node: Operator,
        times: tuple[str, ...],
        mode: OutputMode,
    ) -> _AggStage | DedupStage | FunctionStage:
        if isinstance(below, Aggregate) and mode != "append":
            raise PlanError(CORRECTNESS.format(mode=mode))
        if any(isinstance(n, Watermark) for n in node.chain()[: node.chain().index(below)]):
            raise PlanError("with_watermark must come before the first aggregation or "
                            "drop_duplicates of a chain")  # fmt: skip
        if isinstance(node, Deduplicate) and isinstance(below, Join):
            assert isinstance(self.first, StreamJoinQuery)
            _check_mode(None, True, mode)
            marks = marks_above(node.input, below, self.first.marks)
            return DedupStage(replace(node, input=above(node.input, below)), marks)
        if isinstance(node, Function):
            if isinstance(node, FlatMapGroupsWithState) and node.output_mode != mode:
                raise PlanError(
                    f"applyInPandasWithState in {node.output_mode} mode is not supported "
                    f"with {mode.capitalize()} output mode on a streaming DataFrame/Dataset "
                    f"(Spark's refusal too); use output_mode({node.output_mode!r})"
                )
            _check_mode(None, True, mode)
            stage_node = replace(node, input=above(node.input, below))
            mark = self._function_mark(node, below, times, stage_node.input.schema)
            return FunctionStage(stage_node, mark, self.first.clock, mode)
        if isinstance(node, Deduplicate) and isinstance(below, Function):
            _check_mode(None, True, mode)
            mark = below.output_watermark() if isinstance(below, TransformWithState) else None
            marks = () if mark is None else (mark,)
            return DedupStage(replace(node, input=above(node.input, below)), marks)
        if isinstance(node, Deduplicate | Join):
            if isinstance(node, Join) or isinstance(below, Join):
                raise PlanError(
                    f"{'a stream-stream join' if isinstance(node, Join) else 'drop_duplicates'}"
                    " after another stateful operator is not supported by streamkit yet"
                )
            raise PlanError(
                "drop_duplicates after another aggregation or drop_duplicates is not "
                "supported by streamkit yet; deduplicate first, then aggregate"
            )
        assert isinstance(node, Aggregate)  # a function above another operator is refused
        if not isinstance(below, Aggregate):  # renames between them carry it on
            times = carried_from(node.input, below, times) or ()
        timed = bool(times) and _event_time_window(node, below, times)
        if isinstance(below, Aggregate):
            key = None if timed else _watermarked_key(node, _key_times(node, below), False, mode)
        else:
            key = _watermarked_key(node, times, timed, mode)
        if not timed and key is None and mode == "append":
            hint = (
                "group the second aggregation by sk.window(sk.window_time('window'), ...)"
                if isinstance(below, Aggregate)
                else f"group it by a window on the column {times[0]!r}, the function's "
                "event_time_column_name"
                if isinstance(below, Function) and times
                else "name an output timestamp column with event_time_column_name in "
                "transform_with_state_in_pandas and group by a window on it (rows of "
                "apply_in_pandas_with_state carry no event time)"
                if isinstance(below, Function)
                else "group it by a window on one of the join's watermarked columns "
                f"{', '.join(repr(t) for t in times)}"
                if isinstance(below, Join)
                else f"group it by a window on the watermarked column {times[0]!r}"
                if times
                else "add .with_watermark(column, delay) before drop_duplicates"
            )
            raise PlanError(
                "append output mode is not supported for a streaming aggregation without "
                "watermark (Spark's refusal too): an aggregation after another stateful "
                f"operator must group by a window over the event time; {hint}"
            )
        node = _input_node(node, below)
        _check_mode(node, timed or key is not None, mode)
        return _AggStage(node, mode, timed, key)

    def _function_mark(
        self, node: Function, below: Operator, times: tuple[str, ...], kept: pl.Schema
    ) -> Watermark | None:
        """The watermark a function above ``below`` sees, on the first column of its input
        that carries it (above a join: a join's watermarked column or a plain rename of it
        between the two, as Spark's event-time metadata, in the input's column order as
        Spark's ``child.output.find``; else :func:`_mark_below`)."""
        if isinstance(below, Join):
            assert isinstance(self.first, StreamJoinQuery)
            return next(iter(marks_above(node.input, below, self.first.marks)), None)
        return _mark_below(below, times, kept)

    # -- per batch ---------------------------------------------------------------------
    def run(self, rows: pl.DataFrame, partitions: pa.Array | None = None) -> BatchResult:
        """One micro-batch through every operator; late rows are the first one's."""
        self._refresh_static()
        late_mark = self._passed_on(self.first.in_force)
        return self._through(self.first.run(rows, partitions), late_mark)

    def run_no_data(self) -> BatchResult:
        """A batch without input rows (Spark's no-data batch)."""
        self._refresh_static()
        late_mark = self._passed_on(self.first.in_force)
        return self._through(self.first.run_no_data(), late_mark)

    def _refresh_static(self) -> None:
        """Pin this batch's snapshot of each static side above the first operator (the
        first operator pins those below it)."""
        for side in self._static:
            side.refresh()

    def _through(self, first: BatchResult, late_mark: int | None) -> BatchResult:
        """The operators above the first on its output, with the watermark it passes
        on: ``late_mark`` (from the previous batch's) and the one from this batch's."""
        in_force = self._passed_on(self.first.in_force)
        out = first.output
        for stage, scale in zip(self.stages, self._scale, strict=True):
            out = stage.run(out, _scaled(late_mark, scale), _scaled(in_force, scale))
            if isinstance(stage, FunctionStage) and stage.passed_on(0) is None:
                late_mark = in_force = None  # ProcessingTime: nothing passed on above it
        return BatchResult(self._finish(out), first.late_rows, first.watermark)

    def _passed_on(self, watermark: int | None) -> int | None:
        """The watermark the first operator passes on when ``watermark`` is in force: the
        same for an aggregation, a deduplication or a stateful function (none from
        ``transform_with_state_in_pandas`` under ``ProcessingTime``), the join's output
        watermark."""
        if isinstance(self.first, StreamJoinQuery):
            return self.first.output_watermark(watermark)
        if self._function is not None:
            return self._function.passed_on(watermark)
        if self._function_first:  # apply_in_pandas_with_state: no event time above it
            return None
        return watermark

    def _finish(self, rows: pl.DataFrame) -> pl.DataFrame:
        if self._above is None:
            return rows
        return compile_plan(self._above, None, set(), given(rows)).collect()

    @property
    def owes_batch(self) -> bool:
        """As :attr:`IncrementalQuery.owes_batch` (every operator shares the watermark);
        above a join, whenever the watermark moved: the one the join passes on moved too,
        and Spark's aggregation and deduplication then owe a no-data batch (their
        ``shouldRunAnotherBatch``), whether or not they evict with it."""
        first = self.first
        moved = (
            first.watermark_moved
            if isinstance(first, StreamJoinQuery)
            else (first._watermark_moved())
        )
        if any(isinstance(s, FunctionStage) and s.engine.owes_batch(moved) for s in self.stages):
            return True
        if isinstance(first, StreamJoinQuery):
            return first.watermark_moved
        if self._function_first:  # the function's rule, or the operators above it see W move
            # apply_in_pandas_with_state passes no watermark on: Spark runs no no-data
            # batch for the operators above it (checked against PySpark 4.3)
            passes = self._function is not None and self._function.passed_on(0) is not None
            above_owes = passes and self.mode != "complete" and first._watermark_moved()
            return first.owes_batch or above_owes
        return first.owes_batch

    def current_result(self) -> pl.DataFrame:
        """The last operator's result over all state now held (an aggregation's)."""
        last = self.stages[-1]
        assert isinstance(last, _AggStage)
        return self._finish(last.final(last.store.rows()))

    # -- watermark (the first operator's) ----------------------------------------------
    @property
    def clock(self) -> BatchClock:
        """The processing clock (the first operator's; no operator of a chain reads it)."""
        return self.first.clock

    @property
    def watermark(self) -> int | None:
        """The tracker W after the batches run so far."""
        return self.first.watermark

    @property
    def in_force(self) -> int | None:
        """Watermark in force in the last batch run."""
        return self.first.in_force

    @property
    def max_event(self) -> int | None:
        """Largest event time seen (ticks)."""
        return self.first.max_event

    @property
    def partition_maxima(self) -> dict[str, int]:
        """Largest event time per source partition (ticks)."""
        return self.first.partition_maxima

    def declare_partitions(self, open_partitions: Iterable[str], ended: Iterable[str]) -> None:
        """As :meth:`IncrementalQuery.declare_partitions` (the first operator owns W)."""
        self.first.declare_partitions(open_partitions, ended)

    def time_unit(self) -> Literal["ns", "us", "ms"]:
        """Unit of the event-time column."""
        return self.first.time_unit()

    # -- state ---------------------------------------------------------------------------
    @property
    def state_rows(self) -> int:
        """Rows held by every operator of the chain."""
        return self.first.state_rows + sum(s.store.height for s in self.stages)

    def state_frame(self) -> pl.DataFrame:
        """Every operator's state in one frame (see :class:`ChainState`)."""
        return self.state.rows()

    def checkpoint_state(self, log: CheckpointLog | None, batch_id: int) -> None:
        """Every operator's state after ``batch_id`` as one delta or snapshot."""
        if log is not None:
            log.write_changes(batch_id, self.state)
        else:
            self.state.take_changes()

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
        """Resume every operator from a checkpoint (see :meth:`IncrementalQuery.restore`)."""
        parts = self.state.split(state)
        self.first.restore(
            parts[0], watermark, max_event, in_force,
            no_data_pending=no_data_pending, partition_max=partition_max,
        )  # fmt: skip
        for stage, part in zip(self.stages, parts[1:], strict=True):
            stage.store.load(part)


def _time_dtype(stage: _AggStage | DedupStage | FunctionStage) -> pl.Datetime | None:
    return stage.time_dtype


def _mark_below(below: Operator, times: tuple[str, ...], kept: pl.Schema) -> Watermark | None:
    """The watermark the operator ``below`` (not a join: :meth:`ChainQuery._function_mark`)
    passes on, on a column of its output that the operator above keeps (``kept``: its
    input's schema; None: no column carries one, e.g. an aggregation's window; the first
    in ``kept``'s column order, as Spark's ``child.output.find`` picks the watermarked
    column)."""
    if isinstance(below, TransformWithState):
        return below.output_watermark()
    marks = [n for n in below.chain() if isinstance(n, Watermark)]
    carried = [c for c in kept if c in times and c in below.schema]
    if not marks or not carried or not isinstance(below.schema[carried[0]], pl.Datetime):
        return None
    return Watermark(below, carried[0], marks[0].delay_ns)


def _scaled(mark: int | None, scale: tuple[int, int]) -> int | None:
    """``mark`` (whole ms, in ticks of ``scale[0]`` per ms) in ticks of ``scale[1]``."""
    return None if mark is None else mark // scale[0] * scale[1]


def _first_ticks(first: IncrementalQuery) -> int:
    """Ticks per ms of the watermark of the chain's first operator (1 without one)."""
    return _ticks_per_ms(pl.Datetime(first.time_unit())) if first._mark is not None else 1


def _join_first(
    join: Join, rest: list[Operator], mode: OutputMode, emit: bool,
    policy: str,
) -> StreamJoinQuery:  # fmt: skip
    """The engine of a stream-stream join under other stateful operators; refuses what
    Spark refuses (checked against PySpark 4.3): complete mode, update mode after an
    outer join, and nothing but filters and projections above the join."""
    if not rest:
        raise PlanError(
            "only filter, select, with_column, an aggregation, drop_duplicates or a "
            "stateful function (or a chain of them) may follow a stream-stream join"
        )
    if mode == "complete" and isinstance(rest[-1], Function):
        raise PlanError(NO_AGGREGATION_COMPLETE)
    if emit:
        raise PlanError("emit_on_same_batch is not supported for stream-stream joins")
    allowed = ("append",) if join.how != "inner" else ("append", "update")
    if mode not in allowed:
        how = {"inner": "Inner", "left": "LeftOuter", "right": "RightOuter"}.get(join.how)
        raise PlanError(
            JOIN_MODES.format(
                how=how or "FullOuter", mode=mode.capitalize(),
                allowed=" and ".join(a.capitalize() for a in allowed) + " output mode"
                + ("s" if len(allowed) > 1 else ""),
                fix=f"; use output_mode({allowed[0]!r})",
            )
        )  # fmt: skip
    return StreamJoinQuery(join, "append", policy=policy)


def _check_function_first(node: Function, rest: list[Operator], emit: bool) -> None:
    """Refuse what Spark refuses above a stateful function (its
    ``UnsupportedOperationChecker``, checked against PySpark 4.3) and what streamkit does
    not run yet."""
    if emit:
        raise PlanError("emit_on_same_batch is not supported above a stateful function")
    if isinstance(node, TransformWithState):
        return
    if any(isinstance(n, Aggregate) for n in rest) and node.output_mode == "update":
        raise PlanError(
            "applyInPandasWithState in update mode is not supported with aggregation on a "
            "streaming DataFrame/Dataset (Spark's refusal too); use output_mode 'append' "
            "in apply_in_pandas_with_state"
        )
    if node.timeout == GroupStateTimeout.EventTimeTimeout and any(
        isinstance(n, Aggregate | TransformWithState) for n in rest
    ):
        raise PlanError(
            SPARK_CORRECTNESS.format(
                what="apply_in_pandas_with_state with EventTimeTimeout",
                fix="use NoTimeout or ProcessingTimeTimeout, or transform_with_state_in_pandas "
                "with event_time_column_name",
            )
        )  # fmt: skip


def _refuse_function_above(node: Function, below: list[Operator], mode: OutputMode) -> None:
    """A stateful function above another stateful operator: Spark's refusal where Spark
    refuses it (checked against PySpark 4.3: ``apply_in_pandas_with_state`` above an
    aggregation or another ``apply_in_pandas_with_state``; either function above an
    aggregation in update or complete mode)."""
    if isinstance(node, FlatMapGroupsWithState) and any(isinstance(n, Aggregate) for n in below):
        raise PlanError(
            f"applyInPandasWithState in {node.output_mode} mode is not "
            + ("supported after" if node.output_mode == "append" else "supported with")
            + " aggregation on a streaming DataFrame/Dataset (Spark's refusal too)"
        )
    if any(isinstance(n, Aggregate) for n in below) and mode != "append":
        raise PlanError(CORRECTNESS.format(mode=mode))
    if isinstance(node, FlatMapGroupsWithState) and any(
        isinstance(n, FlatMapGroupsWithState) for n in below
    ):
        raise PlanError(
            "Multiple applyInPandasWithStates are not supported on a streaming "
            "DataFrames/Datasets (Spark's refusal too)"
        )


def _state_schema(first: IncrementalQuery | StreamJoinQuery) -> pl.Schema:
    """The state columns of the chain's first operator."""
    if isinstance(first, StreamJoinQuery):
        return first.store.rows().schema
    node = stateful_operators(first.plan)[0]
    if isinstance(node, Function):
        held = first._held
        assert held is not None
        return held.rows().schema
    if isinstance(node, Aggregate):
        return _agg_state_schema(aggregate_spec(node), node)
    assert isinstance(node, Deduplicate)
    schema = node.input.schema
    return pl.Schema({**{k: schema[k] for k in node.keys}, EXPIRES: pl.Int64()})


def _agg_state_schema(spec: K.AggregateSpec, node: Aggregate) -> pl.Schema:
    """The state columns of an aggregation, in its store's order (merged partial states)."""
    empty = pl.DataFrame(schema=node.input.schema).lazy()
    partial = K.partial(aggregate_rows(empty, node, spec), spec)
    return K.merge(partial, spec).drop(K.TOUCHED, strict=False).schema


class ChainState:
    """The chain's operators' states as one changelogged state: operator ``i``'s column
    ``c`` is ``"i:c"``, and :data:`STAGE` says whose row it is. Every frame has every
    operator's columns (null where not its own), so deltas apply as a single store's."""

    def __init__(self, chain: ChainQuery) -> None:
        self._chain = chain
        self._schemas = [_state_schema(chain.first)] + [
            _agg_state_schema(s.spec, s.node) if isinstance(s, _AggStage) else s.state_schema()
            for s in chain.stages
        ]
        full: dict[str, pl.DataType] = {STAGE: pl.Int32()}
        for i, schema in enumerate(self._schemas):
            full.update({f"{i}:{c}": t for c, t in schema.items()})
        self._full = pl.Schema(full)

    def _stores(self) -> list[Changelogged]:
        first = self._chain.first
        held = first.store if isinstance(first, StreamJoinQuery) else first._held
        assert held is not None
        return [held, *(s.store for s in self._chain.stages)]

    def _tag(self, i: int, frame: pl.DataFrame, deleted: bool = False) -> pl.DataFrame:
        named = frame.rename({c: f"{i}:{c}" for c in frame.columns if c != DELETED})
        named = named.with_columns(pl.lit(i, pl.Int32).alias(STAGE))
        schema = dict(self._full) | ({DELETED: pl.Boolean()} if deleted else {})
        return named.select(
            (pl.col(c).cast(t) if c in named.columns else pl.lit(None, t).alias(c))
            for c, t in schema.items()
        )

    def rows(self) -> pl.DataFrame:
        """Every operator's state rows."""
        frames = [self._tag(i, s.rows()) for i, s in enumerate(self._stores())]
        return pl.concat(frames, how="vertical")

    def take_changes(self) -> pl.DataFrame | None:
        """Every operator's delta since the last call (None: a snapshot is needed)."""
        deltas = [s.take_changes() for s in self._stores()]
        if any(d is None for d in deltas):
            return None
        frames = [self._tag(i, d, True) for i, d in enumerate(deltas) if d is not None and d.height]
        if not frames:
            return pl.DataFrame(schema={DELETED: pl.Boolean})
        return pl.concat(frames, how="vertical")

    @property
    def change_keys(self) -> list[str]:
        """:data:`STAGE` and every operator's key columns."""
        keys = [STAGE]
        for i, s in enumerate(self._stores()):
            keys += [f"{i}:{k}" for k in s.change_keys]
        return keys

    def split(self, state: pl.DataFrame | None) -> list[pl.DataFrame | None]:
        """Operator ``i``'s rows of a checkpointed ``state``, under their own names."""
        out: list[pl.DataFrame | None] = []
        for i, schema in enumerate(self._schemas):
            if state is None or not state.height:
                out.append(None)
                continue
            mine = state.filter(pl.col(STAGE) == i)
            out.append(mine.select(pl.col(f"{i}:{c}").alias(c) for c in schema.names()))
        return out
