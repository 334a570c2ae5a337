"""Spark's rules for chains of stateful operators (:mod:`~streamkit.streaming.chain`):
which chains it refuses and with which message (checked against PySpark 4.3), and what
streamkit does not run yet. Each check raises :class:`~streamkit.errors.PlanError` or
returns; none changes the plan."""

from __future__ import annotations

from streamkit.errors import PlanError
from streamkit.group_state import GroupStateTimeout
from streamkit.join_plan import Join
from streamkit.plan import Aggregate, Deduplicate, Plan
from streamkit.stateful import FlatMapGroupsWithState
from streamkit.streaming.incremental import OutputMode
from streamkit.streaming.stream_join import StreamJoinQuery, is_stream_join
from streamkit.transform_state import TransformWithState

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


def join_first(
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


def check_function_first(node: Function, rest: list[Operator], emit: bool) -> None:
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


def refuse_function_above(node: Function, below: list[Operator], mode: OutputMode) -> None:
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


def mode_mismatch(node: FlatMapGroupsWithState, mode: OutputMode) -> None:
    """Refuse ``apply_in_pandas_with_state`` above another operator when its own output
    mode is not the query's (Spark's refusal)."""
    if node.output_mode != mode:
        raise PlanError(
            f"applyInPandasWithState in {node.output_mode} mode is not supported "
            f"with {mode.capitalize()} output mode on a streaming DataFrame/Dataset "
            f"(Spark's refusal too); use output_mode({node.output_mode!r})"
        )


def not_run_yet(node: Deduplicate | Join, below: Plan) -> PlanError:
    """What streamkit refuses for a deduplication or a stream-stream join above another
    stateful operator (those it runs are handled before)."""
    if isinstance(node, Join) or isinstance(below, Join):
        return PlanError(
            f"{'a stream-stream join' if isinstance(node, Join) else 'drop_duplicates'}"
            " after another stateful operator is not supported by streamkit yet"
        )
    return PlanError(
        "drop_duplicates after another aggregation or drop_duplicates is not "
        "supported by streamkit yet; deduplicate first, then aggregate"
    )


def no_watermark_in_append(below: Plan, times: tuple[str, ...]) -> PlanError:
    """Spark's refusal of an aggregation in append mode above ``below`` when no window or
    key of it carries the watermark (``times``: the columns of its input carrying the
    watermark ``below`` passes on), with a hint fitting the operator below."""
    hint = (
        f"group it by {times[0]!r}, the window of the aggregation below (it carries the "
        "watermark: groups leave when its end passes it), or by "
        "sk.window(sk.window_time('window'), ...)"
        if isinstance(below, Aggregate) and below.window is not None and times
        else f"group it by {times[0]!r}, a group key of the aggregation below carrying the "
        "watermark, or by a window on it"
        if isinstance(below, Aggregate) and times
        else "group the second aggregation by sk.window(sk.window_time('window'), ...)"
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
    return PlanError(
        "append output mode is not supported for a streaming aggregation without "
        "watermark (Spark's refusal too): an aggregation after another stateful "
        f"operator must group by a window over the event time or a key carrying it; {hint}"
    )


def session_key(node: Aggregate, key: str | None, sessioned: bool) -> bool:
    """Whether ``node`` is grouped by a session window of the aggregation below (``key``
    carrying the watermark when ``sessioned``: the window below is a session window):
    Spark plans it as a session window aggregation, merging the overlapping sessions of
    rows with equal other keys, and fails the batch when it is the only key (checked
    against PySpark 4.3; refused here with Spark's reason)."""
    if key is None or not sessioned:
        return False
    if len(node.keys) == 1:
        raise PlanError(
            "Global aggregation with session window in streaming query is not supported "
            f"(Spark fails the batch too): {key!r}, the session window of the aggregation "
            "below, is the only group key; group by another key beside it, or by "
            "sk.window(sk.window_time('window'), ...)"
        )
    return True
