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
- an aggregation above another in append mode that groups neither by a window over the
  event time (``sk.window(sk.window_time("window"), ...)`` above a windowed aggregation, a
  window on a column carrying the watermark) nor by a key carrying it, the window struct
  of a windowed aggregation below among them (Spark: append mode needs a watermark, and
  ``window.start`` or a column computed from the key carries none);
- an aggregation grouped by the session window of the one below and nothing else (Spark
  fails the batch; with other keys it is Spark's session window aggregation, whose
  overlapping sessions merge: :mod:`~streamkit.streaming.session_merge`);
- two group keys carrying the watermark (or one beside such a window) in append or update
  mode (Spark fails the batch: ``MULTIPLE_EVENT_TIME_COLUMNS``).

Above ``drop_duplicates`` (or a join or ``transform_with_state_in_pandas`` passing the
watermark on its ``event_time_column_name``), an aggregation grouped by a plain key
carrying the watermark (or a plain rename of it, on which a window may be too), without a
window, evicts groups and drops late rows by that key as the first operator would
(:class:`~streamkit.streaming.incremental.IncrementalQuery`; checked against Spark above
all three). A window struct carrying the watermark is such a key for the aggregation
above, by its ``end`` (Spark's rule). An aggregation grouped by such a key (or an alias of
it in ``group_by``)
carries it on in that key wherever it sits in the chain, so an aggregation above it
grouped by the key or a window on it evicts by it, and a stateful function above sees it
there (an aggregate output never carries it; the carrying columns are followed operator by
operator: :func:`~streamkit.streaming.chain_marks.output_times`). Stream-static joins may sit
between or above the operators: every static side is pinned once per batch.

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
(:mod:`~streamkit.streaming.dedup_stage`). Above a join or a stateful function, the
operator above sees the watermark on the columns passed on and plain renames of them in
between (:func:`~streamkit.streaming.chain_marks.passed_marks`).

``transform_with_state_in_pandas`` and ``apply_in_pandas_with_state`` may be the first
operator (Spark 4's rules, checked against PySpark 4.3; see
:func:`~streamkit.streaming.chain_rules.check_function_first`):
the operators above see the watermark the function passes on (the same W, none under
``ProcessingTime``) on the column named by ``event_time_column_name`` (or a plain rename
of it between the two); without one (and
after ``apply_in_pandas_with_state``) the output has no event time, so an aggregation
above runs in update or complete mode only. Above ``apply_in_pandas_with_state`` the
function must be in append mode and must not use ``EventTimeTimeout``.
``apply_in_pandas_with_state`` may follow ``drop_duplicates`` or
``transform_with_state_in_pandas`` (Spark 4 runs both): it sees the watermark the
operator below passes on, for late rows (``EventTimeTimeout``), timeouts and
``getCurrentWatermarkMs``; after another ``apply_in_pandas_with_state`` or an
aggregation it is refused with Spark's message.

Spark's refusals live in :mod:`~streamkit.streaming.chain_rules`, which watermark each
operator sees (and on which column) in :mod:`~streamkit.streaming.chain_marks`, an
aggregation above another operator in :mod:`~streamkit.streaming.agg_stage`, and the
chain's one checkpointed state in :mod:`~streamkit.streaming.chain_state`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from itertools import pairwise
from typing import Literal

import polars as pl
import pyarrow as pa

from streamkit.errors import PlanError
from streamkit.execute import compile_plan, given
from streamkit.join_plan import Join
from streamkit.plan import Aggregate, Deduplicate, Plan, Watermark
from streamkit.stateful import FlatMapGroupsWithState
from streamkit.streaming.agg_stage import AggStage, input_node
from streamkit.streaming.batch_result import BatchResult
from streamkit.streaming.chain_marks import (
    event_time_window,
    first_ticks,
    first_times,
    first_windowed,
    output_times,
    passed_marks,
    scaled,
    ticks_per_ms,
    watermarked_key,
)
from streamkit.streaming.chain_rules import (
    CORRECTNESS,
    Function,
    Operator,
    check_function_first,
    join_first,
    mode_mismatch,
    no_watermark_in_append,
    not_run_yet,
    refuse_function_above,
    session_key,
    stateful_operators,
)
from streamkit.streaming.chain_state import ChainState, Stage
from streamkit.streaming.checkpoint import CheckpointLog
from streamkit.streaming.dedup_stage import DedupStage
from streamkit.streaming.downstream import above
from streamkit.streaming.function_stage import FunctionStage
from streamkit.streaming.incremental import IncrementalQuery, OutputMode
from streamkit.streaming.output_modes import check_output_mode
from streamkit.streaming.stateful_exec import BatchClock
from streamkit.streaming.static_sides import bind_static_sides
from streamkit.streaming.stream_join import StreamJoinQuery
from streamkit.streaming.transform_exec import StreamingTransform
from streamkit.streaming.watermark_lineage import carried_from, marks_above
from streamkit.streaming.watermarks import PartitionWatermarks
from streamkit.transform_state import TransformWithState
from streamkit.windows import SessionWindow


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


def _consumer(ops: list[Operator]) -> Plan | None:
    """The aggregation over the first operator, re-rooted on its output (what a first
    ``drop_duplicates``' input is pruned to, as Spark's optimizer does); None: another
    operator, which reads every column."""
    if len(ops) > 1 and isinstance(ops[1], Aggregate):
        return input_node(ops[1], ops[0])
    return None


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
                refuse_function_above(node, ops[: ops.index(node)], mode)
        if isinstance(ops[0], Join):
            self.first = join_first(ops[0], ops[1:], mode, emit_on_same_batch, policy)
            times = self.first.event_columns
        elif isinstance(ops[0], Function):
            check_function_first(ops[0], ops[1:], emit_on_same_batch)
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
            times = first_times(ops[0])
        windowed = first_windowed(ops[0])
        sessioned = isinstance(ops[0], Aggregate) and isinstance(ops[0].window, SessionWindow)
        self.stages: list[Stage] = []
        for i, (below, node) in enumerate(pairwise(ops), start=1):
            stage_mode: OutputMode = mode if i == len(ops) - 1 else "append"
            stage = self._stage(below, node, times, (windowed, sessioned), stage_mode)
            self.stages.append(stage)
            windowed = isinstance(stage, AggStage) and stage.timed
            sessioned = isinstance(stage, AggStage) and (
                (windowed and isinstance(stage.node.window, SessionWindow)) or stage.sessions
            )  # its output's struct is a session window: merged again above
            times = output_times(node, below, times, windowed)  # what it passes on
        first_ms = 1 if isinstance(self.first, StreamJoinQuery) else first_ticks(self.first)
        self._scale = [(first_ms, ticks_per_ms(s.time_dtype)) for s in self.stages]
        """Per stage, ticks per ms of the marks passed on (the join's are in ms) and of its
        own event time (a function's output column may have another unit)."""
        self._above = above(plan, ops[-1]) if ops[-1] is not plan else None
        self.state = ChainState(self.first, self.stages)

    def _stage(
        self,
        below: Operator,
        node: Operator,
        times: tuple[str, ...],
        below_window: tuple[bool, bool],
        mode: OutputMode,
    ) -> Stage:
        """The engine of ``node`` above ``below``, given ``times`` (the columns of
        ``below``'s output carrying the watermark) and ``below_window`` (whether ``below``
        is an aggregation whose window carries it, and whether that is a session window);
        refuses what Spark refuses."""
        windowed, sessioned = below_window
        if isinstance(below, Aggregate) and mode != "append":
            raise PlanError(CORRECTNESS.format(mode=mode))
        if any(isinstance(n, Watermark) for n in node.chain()[: node.chain().index(below)]):
            raise PlanError("with_watermark must come before the first aggregation or "
                            "drop_duplicates of a chain")  # fmt: skip
        join_marks = self.first.marks if isinstance(self.first, StreamJoinQuery) else ()
        passed = passed_marks(below, times, join_marks)
        if isinstance(node, Deduplicate) and isinstance(below, Join | Function):
            check_output_mode(None, True, mode)
            marks = marks_above(node.input, below, passed)
            return DedupStage(replace(node, input=above(node.input, below)), marks)
        if isinstance(node, Function):
            if isinstance(node, FlatMapGroupsWithState):
                mode_mismatch(node, mode)
            check_output_mode(None, True, mode)
            stage_node = replace(node, input=above(node.input, below))
            mark = next(iter(marks_above(node.input, below, passed)), None)
            return FunctionStage(stage_node, mark, self.first.clock, mode)
        if isinstance(node, Deduplicate | Join):
            raise not_run_yet(node, below)
        assert isinstance(node, Aggregate)  # a function above another operator is refused
        times = carried_from(node.input, below, times) or ()  # through renames between
        timed = event_time_window(node, times, windowed)
        key = watermarked_key(node, times, timed, mode)
        sessions = session_key(node, key, sessioned)
        if not timed and key is None and mode == "append":
            raise no_watermark_in_append(below, times)
        node = input_node(node, below)
        check_output_mode(node, timed or key is not None, mode)
        return AggStage(node, mode, timed, key, sessions)

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
        out = self.run_above(first.output, late_mark, in_force)
        return BatchResult(out, first.late_rows, first.watermark)

    def run_above(
        self, out: pl.DataFrame, late_mark: int | None, in_force: int | None
    ) -> pl.DataFrame:
        """The operators above the first, then the plan above the last, on ``out`` (what
        the first emitted in this batch), given the watermarks the first passes on
        (``late_mark`` from the previous batch's, ``in_force`` from this batch's, in ticks
        of the first's event time). Static sides are not re-pinned here (:meth:`run`
        does it before the first operator runs)."""
        for stage, scale in zip(self.stages, self._scale, strict=True):
            out = stage.run(out, scaled(late_mark, scale), scaled(in_force, scale))
            if isinstance(stage, FunctionStage) and stage.passed_on(0) is None:
                late_mark = in_force = None  # ProcessingTime: nothing passed on above it
        return self._finish(out)

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
        assert isinstance(last, AggStage)
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
