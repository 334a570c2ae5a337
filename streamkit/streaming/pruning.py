"""Which columns of a stateful operator's output the plan above it reads, as Spark's
``ColumnPruning`` leaves them (checked against PySpark 4.3 for ``drop_duplicates`` under
stream-static joins, ``tests/differential/test_watermark_lineage.py``).

The plan above is the one :func:`~streamkit.streaming.downstream.above` re-roots on the
operator's emitted rows. Requirements flow down from the top, where every output column is
read (a sink writes them all): a projection reads what its kept expressions use, a filter
adds its predicate's columns, an aggregation reads its keys, inputs and window column, and
a stream-static join reads, on the side holding the emitted rows, the columns read above
it plus its using keys and condition columns of that side. A column read by nothing is
pruned before the operator (Spark inserts the projection below it).
"""

from __future__ import annotations

from streamkit.execute import aggregate_columns
from streamkit.join_plan import Join
from streamkit.plan import Aggregate, Deduplicate, Filter, Plan, Project, Scan, Watermark
from streamkit.stateful import FlatMapGroupsWithState
from streamkit.streaming.downstream import holds_emitted
from streamkit.transform_state import TransformWithState


def columns_read(plan: Plan) -> set[str] | None:
    """The columns of the emitted rows (``plan``'s leaf made by ``above``) that ``plan``
    reads; None: every column (nothing prunes them, or the shape is not known here)."""
    return _needed(plan, None)


def _needed(plan: Plan, needed: set[str] | None) -> set[str] | None:
    """What ``plan``'s emitted leaf must give when ``needed`` of ``plan``'s output are read."""
    if isinstance(plan, Scan):
        return needed
    if isinstance(plan, Filter):
        return _needed(plan.input, _plus(needed, plan.predicate.columns()))
    if isinstance(plan, Project):
        return _needed(plan.input, _project(plan, needed))
    if isinstance(plan, Watermark):
        return _needed(plan.input, _plus(needed, {plan.column}))
    if isinstance(plan, Deduplicate):
        return _needed(plan.input, _plus(needed, set(plan.keys)))
    if isinstance(plan, Aggregate):
        return _needed(plan.input, aggregate_columns(plan))
    if isinstance(plan, FlatMapGroupsWithState | TransformWithState):
        return _needed(plan.input, None)  # a function sees every column of its input
    if isinstance(plan, Join):
        return _join(plan, needed)
    return None


def _plus(needed: set[str] | None, more: set[str]) -> set[str] | None:
    return None if needed is None else needed | more


def _project(plan: Project, needed: set[str] | None) -> set[str] | None:
    """The input columns a projection reads when ``needed`` of its output are read."""
    if not plan.keep_input:
        return set().union(*(e.columns() for e in plan.exprs))
    if needed is None:
        return None
    kept = [e for e in plan.exprs if e.output_name in needed]
    used: set[str] = set().union(*(e.columns() for e in kept))
    return (needed - {e.output_name for e in kept}) | used


def _join(plan: Join, needed: set[str] | None) -> set[str] | None:
    """Through a stream-static join, to the side holding the emitted rows: what is read
    above from that side, and its columns in the using keys and the condition."""
    side = next((c for c in (plan.left, plan.right) if holds_emitted(c)), None)
    if side is None:
        return None
    if needed is not None:
        condition = plan.condition.columns() if plan.condition is not None else set()
        needed = (needed | set(plan.using) | condition) & set(side.schema.names())
    return _needed(side, needed)
