"""A streaming plan split for a fleet: what source tasks run and what aggregation tasks run.

Supported (everything else is refused with a :class:`~streamkit.errors.PlanError` that
starts "not supported on a fleet yet: ..." and names the construct):

- **stateless** plans (filters, projections, ``with_watermark`` over one stream):
  :attr:`FleetPlan.stateless` is True; every source task runs the plan on its own rows
  with the single-process engine and writes to the sink, with no exchange;
- **one** ``group_by(...).agg(...)`` over one stream, unwindowed or with a tumbling,
  sliding or session window, with the engine's aggregates, in append, update or complete
  mode, under the single-process engine's rules for modes and watermarks; only filters,
  projections and ``with_watermark`` below it, and filters/``select``/``with_column``
  after it. The source part (:attr:`FleetPlan.below`) runs in source tasks down to partial
  states; the aggregation part (merge, eviction, emission, :attr:`FleetPlan.above`) runs
  in aggregation tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import polars as pl

from streamkit import aggregate as K
from streamkit.errors import PlanError
from streamkit.execute import aggregate_spec
from streamkit.expr import Expr
from streamkit.join_plan import Join
from streamkit.plan import Aggregate, Deduplicate, Filter, Plan, Project, Scan, Watermark
from streamkit.stateful import FlatMapGroupsWithState
from streamkit.streaming.agg_steps import TICKS_PER_MS, OutputMode, next_watermark
from streamkit.streaming.downstream import above
from streamkit.streaming.incremental import IncrementalQuery
from streamkit.streaming.watermark_input import watermark_filter
from streamkit.transform_state import TransformWithState

from .routing import check_routable

_NAMES: tuple[tuple[type, str], ...] = (
    (Join, "a join"),
    (Deduplicate, "drop_duplicates"),
    (FlatMapGroupsWithState, "apply_in_pandas_with_state"),
    (TransformWithState, "transform_with_state_in_pandas"),
)


def _refuse(what: str, fix: str) -> PlanError:
    return PlanError(f"not supported on a fleet yet: {what}; {fix}")


def _construct(node: Plan) -> str | None:
    for kind, name in _NAMES:
        if isinstance(node, kind):
            return name
    return None


@dataclass(frozen=True)
class FleetPlan:
    """The two halves of a streaming plan on a fleet (module docstring)."""

    plan: Plan
    mode: OutputMode
    agg: Aggregate | None
    """The aggregation (None: a stateless plan)."""
    mark: Watermark | None
    above: Plan | None
    """What runs on the aggregation's output (None: nothing)."""
    counts: Expr | None
    """Rows that move the watermark (Spark's pushed-down filters; None: all)."""

    @classmethod
    def of(cls, plan: Plan, mode: OutputMode) -> FleetPlan:
        """Split ``plan``; raises :class:`PlanError` for what a fleet cannot run, and for
        whatever the single-process engine refuses in ``mode``."""
        nodes = plan.chain()
        for node in nodes:
            name = _construct(node)
            if name is not None:
                raise _refuse(name, "run this query as one process (streamkit run)")
            if not isinstance(node, Filter | Project | Watermark | Scan | Aggregate):
                raise _refuse(type(node).__name__, "run this query as one process")
        aggs = [n for n in nodes if isinstance(n, Aggregate)]
        if len(aggs) > 1:
            raise _refuse("an aggregation over an aggregation", "run it as one process")
        IncrementalQuery(plan, mode)  # the single-process engine's rules for the plan
        marks = [n for n in nodes if isinstance(n, Watermark)]
        mark = marks[0] if marks else None
        counts = watermark_filter(plan, mark) if mark is not None else None
        if not aggs:
            return cls(plan, mode, None, mark, None, counts)
        agg = aggs[0]
        keys = {k.output_name: k.check(agg.input.schema) for k in agg.keys}
        check_routable(pl.Schema(keys))
        top = above(plan, agg) if agg is not plan else None
        return cls(plan, mode, agg, mark, top, counts)

    @property
    def stateless(self) -> bool:
        """True for a plan without an aggregation: source tasks run it whole, without
        an exchange."""
        return self.agg is None

    @cached_property
    def spec(self) -> K.AggregateSpec:
        """The resolved aggregation (only for a plan with one)."""
        if self.agg is None:
            raise PlanError("a stateless fleet plan has no aggregation")
        return aggregate_spec(self.agg)

    @property
    def below(self) -> Plan:
        """The source part: the plan under the aggregation (the whole plan if stateless)."""
        return self.agg.input if self.agg is not None else self.plan

    @property
    def route_keys(self) -> list[str]:
        """The partial-state columns rows are routed by: the group keys, never the window."""
        return list(self.spec.keys)

    def source_watermark(self, max_event: int | None) -> int | None:
        """A source shard's own watermark: ``max_event - delay`` in whole ms (Spark's
        arithmetic), in ticks of the watermark column (None without one)."""
        if self.mark is None or max_event is None:
            return None
        return next_watermark(None, max_event, self.mark.delay_ns, self.time_unit())

    def to_ms(self, ticks: int | None) -> int | None:
        """Ticks of the watermark column as ms since the epoch (for status files)."""
        if ticks is None or self.mark is None:
            return None
        return ticks // TICKS_PER_MS[self.time_unit()]

    def time_unit(self) -> Literal["ns", "us", "ms"]:
        """Unit of the watermark column (ticks of ``max_event`` and watermarks)."""
        if self.mark is None:
            raise PlanError("the plan has no with_watermark")
        dtype = self.mark.input.schema[self.mark.column]
        assert isinstance(dtype, pl.Datetime)
        return dtype.time_unit
