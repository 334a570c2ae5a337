"""The operations after a stream's stateful operator: the plan above it, re-rooted on the
rows it emits, so the one executor runs them on each batch's output."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import polars as pl

from streamkit.errors import PlanError
from streamkit.join_plan import Join
from streamkit.plan import Filter, Plan, Project, Scan
from streamkit.stream_static import is_streaming


class _Emitted:
    """The rows a stateful operator emitted, as the leaf of the plan above it."""

    def __init__(self, schema: pl.Schema) -> None:
        self.schema = schema

    def batches(self, columns: list[str], dictionary: list[str]) -> Iterator[pl.DataFrame]:
        """Never read: the executor is given the emitted rows instead."""
        yield pl.DataFrame(schema=self.schema)

    def describe(self) -> str:
        return "rows emitted by the stateful operator"


def above(plan: Plan, stateful: Plan) -> Plan:
    """``plan`` with ``stateful`` replaced by a scan of its output: the operations after a
    streaming aggregation or deduplication (filters, projections and stream-static joins,
    as Spark allows)."""
    if plan is stateful:
        return Scan(_Emitted(stateful.schema))
    if isinstance(plan, Join) and not (is_streaming(plan.left) and is_streaming(plan.right)):
        # a stream-static join after it: the static side is pinned (static_sides.py)
        if _holds(plan.left, stateful):
            return replace(plan, left=above(plan.left, stateful))
        return replace(plan, right=above(plan.right, stateful))
    if not isinstance(plan, Filter | Project):
        raise PlanError(
            f"{type(plan).__name__} after a streaming aggregation or drop_duplicates is not "
            "supported; filter, select and with_column are"
        )
    return replace(plan, input=above(plan.input, stateful))


def _holds(plan: Plan, node: Plan) -> bool:
    return plan is node or any(_holds(child, node) for child in plan.children)


def holds_emitted(plan: Plan) -> bool:
    """Whether a leaf of ``plan`` is the stateful operator's output (:func:`above`'s scan)."""
    if isinstance(plan, Scan):
        return isinstance(plan.source, _Emitted)
    return any(holds_emitted(child) for child in plan.children)
