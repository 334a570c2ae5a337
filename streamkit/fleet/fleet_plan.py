"""A streaming plan split for a fleet: what source tasks run and what aggregation tasks run.

Supported (everything else is refused with a :class:`~streamkit.errors.PlanError` that
starts "not supported on a fleet yet: ..." and names the construct):

- **stateless** plans (filters, projections, ``with_watermark`` over one stream):
  :attr:`FleetPlan.stateless` is True; every source task runs the plan on its own rows
  with the single-process engine and writes to the sink, with no exchange;
- **one** ``group_by(...).agg(...)`` over one stream, unwindowed or with a tumbling,
  sliding or session window, with the engine's aggregates, in append, update or complete
  mode, under the single-process engine's rules for modes and watermarks (a window on a
  plain rename of the watermark column evicts; one on a column computed after
  ``with_watermark`` never does, :attr:`FleetPlan.window_mark`; without a window, a
  group key carrying the watermark evicts, :attr:`FleetPlan.key_mark`); only filters,
  projections and ``with_watermark`` below it, and filters/``select``/``with_column``
  after it. The source part (:attr:`FleetPlan.below`) runs in source tasks down to partial
  states; the aggregation part (merge, eviction, emission, :attr:`FleetPlan.above`) runs
  in aggregation tasks;
- **stream-static joins** (Spark's: the stream on the side an outer join preserves) in a
  stateless plan or below the aggregation / ``drop_duplicates``: the static side is the
  same in every source task, so each source task joins its own rows, with the
  single-process engine's pinned snapshot (:attr:`FleetPlan.static`), one for the query's
  life: a static side that reloads (``reload_every``) is refused, and every worker start
  checks the tables against the query's first start
  (:mod:`~streamkit.fleet.static_snapshot`); between the operators of a chain (below), the
  aggregation tasks join the rows the ``drop_duplicates`` emitted; a join above the last
  stateful operator is refused;
- **a join of two streams** (inner, left, right, full), alone or under one aggregation or
  ``drop_duplicates`` keyed by its join keys (:attr:`FleetPlan.joined`,
  :mod:`~streamkit.fleet.join_split`): source tasks run each side's plan and route its
  rows by the join keys, aggregation tasks run the single-process join (and the operator
  above it) on their partition's rows of both sides (:mod:`~streamkit.fleet.join_stage`);
- **one** ``drop_duplicates`` (or ``drop_duplicates_within_watermark``) over one stream,
  in the modes the single-process engine accepts, with the same plans below and above it:
  source tasks run the part below it and keep the first row of each key of their batch
  (when that cannot change which rows are late: no watermark, or its column among the
  keys); rows are routed by the keys, so
  each key's state lives in one aggregation task, which judges late rows against the fleet
  watermark and holds and evicts keys as the single-process engine does
  (:class:`~streamkit.streaming.dedup.StreamingDedup`). The watermark column, if any, must
  reach the ``drop_duplicates`` (late rows are judged there);
- **a chain** (README rule 11): one aggregation over the ``drop_duplicates``, with
  filters, projections and stream-static joins between them, when the aggregation also
  groups by a ``drop_duplicates`` key as is: rows are routed by such keys
  (:mod:`~streamkit.fleet.chain_keys`) and the aggregation tasks run both operators with
  the single-process engine's (:attr:`FleetPlan.chain`, :mod:`~streamkit.fleet.chain_tail`).
  An operator over an aggregation, a longer chain and a chain without such a key are
  refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import polars as pl

from streamkit import aggregate as K
from streamkit.errors import PlanError
from streamkit.execute import aggregate_spec
from streamkit.join_plan import Join
from streamkit.plan import Aggregate, Deduplicate, Filter, Plan, Project, Scan, Watermark
from streamkit.reloading import reloadable_sources
from streamkit.stateful import FlatMapGroupsWithState
from streamkit.stream_static import is_streaming
from streamkit.streaming.agg_steps import TICKS_PER_MS, OutputMode, drops_late, next_watermark
from streamkit.streaming.chain import make_engine
from streamkit.streaming.downstream import above
from streamkit.streaming.static_sides import StaticSide, bind_static_sides
from streamkit.streaming.stream_join import join_engine
from streamkit.streaming.watermark_input import WatermarkRows, watermark_filter
from streamkit.streaming.watermark_lineage import watermarked_keys, window_watermark
from streamkit.transform_state import TransformWithState

from .chain_keys import chain_route_keys, chained_aggregation
from .join_split import JoinSplit, has_stream_join, split_join
from .routing import check_routable

_NAMES: tuple[tuple[type, str], ...] = (
    (FlatMapGroupsWithState, "apply_in_pandas_with_state"),
    (TransformWithState, "transform_with_state_in_pandas"),
)


def _refuse(what: str, fix: str) -> PlanError:
    return PlanError(f"not supported on a fleet yet: {what}; {fix}")


def _check_join(join: Join, nodes: list[Plan]) -> None:
    """A stream-static join below the stateful operator runs in each source task, on its
    own rows (the static side is the same in every task), one between the operators of a
    chain in the aggregation tasks; anything else is refused, also a join of two sides
    that are both tables standing in for streams (no side is the stream)."""
    if is_streaming(join.left) == is_streaming(join.right):
        raise _refuse(
            "a join of two streams whose sides are not both streaming sources (the fleet "
            "runs a join of two streams read with sk.read_stream; see the README, 'Running "
            "on many machines')",
            "run this query as one process (streamkit run)",
        )
    stateful = [n for n in nodes if isinstance(n, Aggregate | Deduplicate)]
    if stateful and not any(n is join for n in stateful[0].chain()):
        raise _refuse(
            "a stream-static join after the aggregation or drop_duplicates",
            "join the static table before it, or run this query as one process",
        )


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
    """What runs on the aggregation's (or ``drop_duplicates``') output (None: nothing, or
    a chain: :attr:`chain`)."""
    counts: WatermarkRows | None
    """Rows that move the watermark (Spark's pushed-down filters; None: all)."""
    dedup: Deduplicate | None = None
    """The ``drop_duplicates`` (None: none; never together with :attr:`agg`)."""
    static: tuple[StaticSide, ...] = ()
    """The static sides of the stream-static joins of :attr:`plan` (bound: each a scan of
    its :class:`~streamkit.streaming.static_sides.StaticSide`, none reloading, so its rows
    are computed once); whoever runs the rows of a batch through them refreshes them
    first, as the single-process engine does."""

    chain: Aggregate | None = None
    """The aggregation above the ``drop_duplicates`` of a chain (None: no chain); the
    aggregation tasks run both (:mod:`~streamkit.fleet.chain_tail`)."""
    joined: JoinSplit | None = None
    """A join of two streams (None: none): source tasks run its sides, aggregation tasks
    the join (:mod:`~streamkit.fleet.join_split`); :attr:`mark` is then None, each side
    has its own."""

    @classmethod
    def of(cls, plan: Plan, mode: OutputMode) -> FleetPlan:
        """Split ``plan``; raises :class:`PlanError` for what a fleet cannot run, and for
        whatever the single-process engine refuses in ``mode``. ``plan`` is returned
        bound (:attr:`plan`, :attr:`static`)."""
        plan, static = bind_static_sides(plan)
        if has_stream_join(plan):
            return cls._joining(plan, mode, tuple(static))
        for side in static:
            if reloadable_sources(side.plan):
                raise _refuse(
                    f"a static side that reloads its table ({side.plan.describe()}; "
                    "reload_every): a range re-read after a takeover must join against the "
                    "same rows as the first attempt, so a fleet query's static tables are one "
                    "snapshot for its life (streamkit.fleet.static_snapshot)",
                    "read the table without reload_every and restart the fleet on a new "
                    "checkpoint root to pick up a new table, or run this query as one process",
                )
        nodes = plan.chain()
        for node in nodes:
            name = _construct(node)
            if name is not None:
                raise _refuse(name, "run this query as one process (streamkit run)")
            kinds = Filter | Project | Watermark | Scan | Aggregate | Deduplicate | Join
            if not isinstance(node, kinds):
                raise _refuse(type(node).__name__, "run this query as one process")
            if isinstance(node, Join):
                _check_join(node, nodes)
        aggs = [n for n in nodes if isinstance(n, Aggregate)]
        dedups = [n for n in nodes if isinstance(n, Deduplicate)]
        chain = chained_aggregation(nodes)
        make_engine(plan, mode)  # the single-process engine's rules for the plan (or chain)
        marks = [n for n in nodes if isinstance(n, Watermark)]
        mark = marks[0] if marks else None
        counts = watermark_filter(plan, mark) if mark is not None else None
        if dedups:
            return cls._deduplicating(
                plan, mode, dedups[0], mark, counts, static=tuple(static), chain=chain
            )
        if not aggs:
            return cls(plan, mode, None, mark, None, counts, None, tuple(static))
        agg = aggs[0]
        keys = {k.output_name: k.check(agg.input.schema) for k in agg.keys}
        check_routable(pl.Schema(keys))
        top = above(plan, agg) if agg is not plan else None
        return cls(plan, mode, agg, mark, top, counts, None, tuple(static))

    @classmethod
    def _deduplicating(
        cls, plan: Plan, mode: OutputMode, node: Deduplicate, mark: Watermark | None,
        counts: WatermarkRows | None, *, static: tuple[StaticSide, ...],
        chain: Aggregate | None,
    ) -> FleetPlan:  # fmt: skip
        schema = node.input.schema
        if mark is not None and mark.column not in schema:
            raise _refuse(
                f"drop_duplicates after the watermark column {mark.column!r} was projected "
                "away (late rows are judged where the keys live)",
                f"keep {mark.column!r} up to the drop_duplicates",
            )
        keys = node.keys if chain is None else chain_route_keys(node, chain)
        check_routable(pl.Schema({k: schema[k] for k in keys}))
        top = above(plan, node) if node is not plan and chain is None else None
        return cls(plan, mode, None, mark, top, counts, node, static, chain)

    @classmethod
    def _joining(cls, plan: Plan, mode: OutputMode, static: tuple[StaticSide, ...]) -> FleetPlan:
        """A plan holding a join of two streams (:mod:`~streamkit.fleet.join_split`)."""
        if static:
            raise _refuse(
                "a stream-static join in a query that joins two streams",
                "run this query as one process (streamkit run)",
            )
        engine = join_engine(plan, mode, emit_on_same_batch=False, policy="min")
        if engine is None:
            make_engine(plan, mode)  # the single-process engine's rules for the chain
        return cls(plan, mode, None, None, None, None, joined=split_join(plan))

    @cached_property
    def window_mark(self) -> Watermark | None:
        """:attr:`mark` when the aggregation's window carries it (its column is the
        watermark's or a plain rename of it after ``with_watermark``); None: the
        aggregation never evicts nor drops late rows, as the single-process engine and
        Spark run a window on a column computed after ``with_watermark`` in update mode."""
        return window_watermark(self.agg, self.mark)

    @cached_property
    def key_mark(self) -> str | None:
        """Without a window carrying :attr:`mark`, the first group key that does (the
        watermark's column or a plain rename of it): aggregation tasks evict groups and
        drop late partial states by it, as the single-process engine (Spark's rule);
        None: no such key."""
        if self.agg is None or self.mark is None or self.window_mark is not None:
            return None
        keyed = watermarked_keys(self.agg, self.mark)
        return keyed[0] if keyed else None

    @cached_property
    def drops_late(self) -> bool:
        """Whether aggregation tasks drop late partial states (or, for ``drop_duplicates``,
        late rows), as the single-process engine drops late rows: a window or a group key
        carrying the watermark (not a time window in complete mode, nor a key in complete
        mode), or a ``drop_duplicates`` under a watermark."""
        if self.dedup is not None:
            return self.mark is not None
        if self.agg is None:
            return False
        if self.key_mark is not None:
            return self.mode != "complete"
        return drops_late(self.window_mark, self.agg, self.mode)

    def refresh_static(self) -> None:
        """Pin each static side's rows for the next batch (:meth:`StaticSide.refresh`)."""
        for side in self.static:
            side.refresh()

    @property
    def stateless(self) -> bool:
        """True for a plan without an aggregation, ``drop_duplicates`` or join of two
        streams: source tasks run it whole, without an exchange."""
        return self.agg is None and self.dedup is None and self.joined is None

    @cached_property
    def spec(self) -> K.AggregateSpec:
        """The resolved aggregation (only for a plan with one)."""
        if self.agg is None:
            raise PlanError("a stateless fleet plan has no aggregation")
        return aggregate_spec(self.agg)

    @property
    def below(self) -> Plan:
        """The source part: the plan under the aggregation or ``drop_duplicates`` (the
        whole plan if stateless)."""
        self._not_joined("below")
        if self.dedup is not None:
            return self.dedup.input
        return self.agg.input if self.agg is not None else self.plan

    @property
    def route_keys(self) -> list[str]:
        """The columns rows are routed by: the group keys, never the window (partial
        states), or the ``drop_duplicates`` keys (rows)."""
        self._not_joined("route_keys")
        if self.dedup is not None and self.chain is not None:
            return chain_route_keys(self.dedup, self.chain)
        if self.dedup is not None:
            return self.dedup.keys
        return list(self.spec.keys)

    def _not_joined(self, name: str) -> None:
        if self.joined is not None:
            raise PlanError(
                f"FleetPlan.{name} is not one plan for a join of two streams: each side "
                "has its own (FleetPlan.joined.sides, .keys(side))"
            )

    def source_watermark(self, max_event: int | None) -> int | None:
        """A source shard's own watermark: ``max_event - delay`` in whole ms (Spark's
        arithmetic), in ticks of the watermark column (None without one)."""
        if self.mark is None or max_event is None:
            return None
        return next_watermark(None, max_event, self.mark.delay_ns, self.time_unit())

    def to_ms(self, ticks: int | None) -> int | None:
        """Ticks of the watermark column as ms since the epoch (for status files)."""
        if self.joined is not None:
            return ticks  # a join's watermarks are in ms
        if ticks is None or self.mark is None:
            return None
        return ticks // TICKS_PER_MS[self.time_unit()]

    def time_unit(self) -> Literal["ns", "us", "ms"]:
        """Unit of the watermark column (ticks of ``max_event`` and watermarks; ms for a
        join of two streams, as the single-process join keeps them)."""
        if self.joined is not None:
            return "ms"
        if self.mark is None:
            raise PlanError("the plan has no with_watermark")
        dtype = self.mark.input.schema[self.mark.column]
        assert isinstance(dtype, pl.Datetime)
        return dtype.time_unit
