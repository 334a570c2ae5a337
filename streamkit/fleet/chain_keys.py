"""Which chains (README rule 11) a fleet runs, and the keys their rows are routed by.

A fleet has one exchange: a row reaches the one aggregation task its route keys hash to,
and that task runs every stateful operator of the plan on it. So a chain runs on a fleet
when one set of columns routes every operator's state to a single task: a
``drop_duplicates`` key that the aggregation above it also groups by, as is (the same
column, or a plain rename of it, between them: filters, projections and stream-static
joins pass it on). Rows with one deduplication key then share those columns' values, and
so do the rows of one group: each key and each group lives in exactly one task, and the
sink stays the union of disjoint results.

Supported: ``drop_duplicates`` (or ``drop_duplicates_within_watermark``) with one
aggregation above it. Refused with a :class:`~streamkit.errors.PlanError` naming what to
do: an operator above an aggregation (its groups are merged from partial states by the
group key; the operator above would need a second exchange by its own key), more
operators, and a chain with no such shared key.
"""

from __future__ import annotations

from streamkit.errors import PlanError
from streamkit.plan import Aggregate, Deduplicate, Plan
from streamkit.streaming.watermark_lineage import carried_from, plain_reference

_RUN_ALONE = "run this query as one process (streamkit run)"


def _refuse(what: str, fix: str) -> PlanError:
    return PlanError(f"not supported on a fleet yet: {what}; {fix}")


def chained_aggregation(nodes: list[Plan]) -> Aggregate | None:
    """The aggregation above the ``drop_duplicates`` of a chain in ``nodes`` (a plan's
    :meth:`~streamkit.plan.Plan.chain`, top first); None: one stateful operator or none.
    Raises :class:`PlanError` for a chain a fleet cannot run (module docstring)."""
    ops = [n for n in reversed(nodes) if isinstance(n, Aggregate | Deduplicate)]
    if len(ops) < 2:
        return None
    if isinstance(ops[0], Aggregate):
        raise _refuse(
            "a stateful operator over an aggregation (a fleet merges the aggregation's "
            "partial states in the task of its group key; an operator above it would need "
            "a second exchange by its own key)",
            _RUN_ALONE,
        )
    if len(ops) > 2 or not isinstance(ops[1], Aggregate):
        raise _refuse(
            "a stateful operator over another, other than one aggregation over drop_duplicates",
            _RUN_ALONE,
        )
    return ops[1]


def chain_route_keys(dedup: Deduplicate, agg: Aggregate) -> list[str]:
    """The ``drop_duplicates`` keys that ``agg`` (above it) also groups by, as is, in the
    order of the keys: rows are routed by them (module docstring). Raises
    :class:`PlanError` when there is none."""
    grouped = {plain_reference(k) for k in agg.keys} - {None}
    keys = [k for k in dedup.keys if grouped & set(carried_from(agg.input, dedup, (k,)) or ())]
    if not keys:
        names = ", ".join(repr(k.output_name) for k in agg.keys) or "its window only"
        raise _refuse(
            f"drop_duplicates on {dedup.keys} then an aggregation grouped by {names}, with "
            "no drop_duplicates key the aggregation also groups by as is (a fleet routes "
            "the rows by such keys, so that each key and each group lives in one "
            "aggregation task)",
            "group by one of the drop_duplicates keys too (or a plain rename of it), or "
            + _RUN_ALONE,
        )
    return keys
