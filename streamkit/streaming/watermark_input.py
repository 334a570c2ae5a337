"""Which rows of a micro-batch move the watermark: the rows that reach Spark's
``EventTimeWatermarkExec`` once its optimizer has moved the filters (PySpark 4.3, pinned in
``tests/differential/test_watermark_rows.py``).

- Everything below ``with_watermark`` runs on the batch's rows as written: filters,
  projections and stream-static joins (an inner join drops the rows without a match, a
  filter on a static column the rows it rejects).
- Above it, up to the first stateful operator, a filter's conjuncts that do not depend on
  the event-time column are pushed below it (``PushPredicateThroughNonJoin``), through
  projections (a conjunct on ``v2 = v * 2`` is ``v * 2 ...``) and through stream-static
  joins when they read only the stream's columns (``PushPredicateThroughJoin``).
- An inner or semi stream-static join above it adds, on the stream side, what Spark's
  ``InferFiltersFromConstraints`` infers: each equality key of the stream is not null, and
  a static-side filter reading only its key holds for the stream's key. So does an outer
  join that a filter right above it on static columns makes inner (``EliminateOuterJoin``:
  the filter rejects a row whose static columns are null).

The rows are found by running that plan over the batch with a row index threaded through
it; the event times of the rows whose index comes out are the ones the watermark sees.
The same threading up to the stateful operator's input (:func:`operator_rows`) tells which
late rows reach the operator, the only ones Spark counts as dropped by the watermark.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import polars as pl

from streamkit.expr import Alias, BinOp, Col, Expr
from streamkit.join_plan import Join
from streamkit.plan import Aggregate, Deduplicate, Filter, Plan, Project, Scan, Watermark
from streamkit.stateful import FlatMapGroupsWithState
from streamkit.stream_static import is_streaming
from streamkit.transform_state import TransformWithState

if TYPE_CHECKING:
    from collections.abc import Iterator

ROW = "__streamkit_watermark_row"
"""The row index threaded through the plan the watermark's rows come out of."""

_STATEFUL = Aggregate | Deduplicate | FlatMapGroupsWithState | TransformWithState


def _conjuncts(predicate: Expr) -> list[Expr]:
    if isinstance(predicate, BinOp) and predicate.op == "&":
        return _conjuncts(predicate.left) + _conjuncts(predicate.right)
    return [predicate]


class _Indexed:
    """The stream's rows with :data:`ROW` (served by :func:`~streamkit.execute.given`)."""

    is_stream = True

    def __init__(self, schema: pl.Schema) -> None:
        self.schema = pl.Schema([*schema.items(), (ROW, pl.UInt32())])

    def batches(self, columns: list[str], dictionary: list[str]) -> Iterator[pl.DataFrame]:
        raise TypeError("the watermark's rows are served by the micro-batch, not read")

    def describe(self) -> str:
        return "micro-batch rows with their index"


@dataclass(frozen=True)
class WatermarkRows:
    """The plan whose output's :data:`ROW` values are the rows that move the watermark
    (:func:`watermark_filter`) or reach a stateful operator (:func:`operator_rows`)."""

    reach: Plan

    def mask(self, rows: pl.DataFrame) -> pl.Series:
        """Per row of ``rows`` (the stream's rows as read), whether it comes out of
        :attr:`reach` (at least once: a stream-static join may repeat it)."""
        from streamkit.execute import compile_plan, given

        indexed = rows.with_row_index(ROW)
        kept = compile_plan(self.reach, {ROW}, set(), given(indexed)).select(ROW).collect()
        return indexed[ROW].is_in(kept[ROW].implode())


def threaded(node: Plan, leaf: Plan) -> Plan | None:
    """``node`` (on the chain down to ``leaf``) rebuilt over the rows with :data:`ROW`
    (None: a node this does not thread through)."""
    if node is leaf:
        return Scan(_Indexed(leaf.schema))
    if isinstance(node, Join):
        if is_streaming(node.left) and is_streaming(node.right):
            return None
        stream = node.children[0]
        new = threaded(stream, leaf)
        if new is None:
            return None
        if stream is node.left:
            return replace(node, left=new)
        return replace(node, right=new)
    if isinstance(node, Filter | Watermark | Project):
        new = threaded(node.input, leaf)
        if new is None:
            return None
        if isinstance(node, Project) and not node.keep_input:
            return Project(new, (*node.exprs, Col(ROW)), False)
        return replace(node, input=new)
    return None


@dataclass
class _Above:
    """The walk up from the watermark: ``reach`` so far, the columns of the current node
    that are in ``reach`` unchanged, and those that depend on the event-time column."""

    reach: Plan
    same: set[str]
    event: set[str]
    joined: bool = False
    """A join was passed: projections above it are not added to ``reach``."""
    pushed: bool = False

    def push(self, condition: Expr) -> None:
        self.reach, self.pushed = Filter(self.reach, condition), True

    def filter(self, node: Filter) -> None:
        for c in _conjuncts(node.predicate):
            if not (c.columns() & self.event) and c.columns() <= self.same:
                self.push(c)

    def project(self, node: Project) -> None:
        computed = {
            e.output_name: bool(e.columns() & self.event)
            for e in node.exprs
            if not (isinstance(e, Col) and e.name == e.output_name)
        }
        kept = set(node.input.schema.names()) if node.keep_input else set()
        kept |= {e.output_name for e in node.exprs if e.output_name not in computed}
        self.event = {c for c in kept if c in self.event and c not in computed}
        self.event |= {name for name, on_event in computed.items() if on_event}
        if self.joined:
            self.same = (self.same & kept) - computed.keys()
            return
        self.reach = _threaded_project(self.reach, node)
        self.same = set(node.schema.names())

    def join(self, node: Join, above: list[Expr]) -> None:
        """``above``: the conjuncts of the filters right above the join."""
        stream, static = node.children
        self.joined = True
        if node.how not in ("inner", "left_semi") and not _outer_eliminated(node, static, above):
            return
        left = stream is node.left
        for lcol, rcol in node.pairs:
            mine, theirs = (lcol, rcol) if left else (rcol, lcol)
            if mine not in self.same or mine in self.event:
                continue
            self.push(Col(mine).is_not_null())
            for name, condition in _key_constraints(static, theirs):
                if name == mine:
                    self.push(condition)
                elif name not in self.reach.schema:
                    self.reach = Project(self.reach, (Col(mine).alias(name),), True)
                    self.push(condition)


def _outer_eliminated(node: Join, static: Plan, above: list[Expr]) -> bool:
    """Whether a filter above an outer join rejects every row whose static side is null,
    so that Spark's ``EliminateOuterJoin`` makes it an inner join."""
    schema = static.schema
    null_extended = set(schema.names()) - set(node.using)
    for c in above:
        if c.columns() and c.columns() <= null_extended:
            nulls = pl.DataFrame({n: pl.Series([None], dtype=schema[n]) for n in c.columns()})
            if not nulls.select(c.to_polars()).to_series().fill_null(False).any():
                return True
    return False


def _filters_above(nodes: list[Plan]) -> list[Expr]:
    """The conjuncts of the filters at the start of ``nodes`` (bottom first)."""
    found: list[Expr] = []
    for node in nodes:
        if not isinstance(node, Filter):
            break
        found += _conjuncts(node.predicate)
    return found


def _threaded_project(reach: Plan, node: Project) -> Plan:
    if node.keep_input:
        return Project(reach, node.exprs, True)
    return Project(reach, (*node.exprs, Col(ROW)), False)


def _key_constraints(static: Plan, key: str) -> list[tuple[str, Expr]]:
    """Conjuncts of the filters of the static side that read only its column ``key`` (by
    the name it has there), as Spark's constraint propagation sees them (through renames:
    ``a AS key``), down to the first node that computes ``key`` or is not a filter,
    projection or watermark."""
    source = static.source if isinstance(static, Scan) else None
    pinned = getattr(source, "plan", None)  # a bound side: the static plan it pins
    plan: Plan = pinned if isinstance(pinned, Plan) else static
    found: list[tuple[str, Expr]] = []
    name = key
    for node in plan.chain():
        if isinstance(node, Filter):
            found += [(name, c) for c in _conjuncts(node.predicate) if c.columns() == {name}]
        elif isinstance(node, Project):
            made = [e for e in node.exprs if e.output_name == name]
            if made and isinstance(made[0], Alias) and isinstance(made[0].operand, Col):
                name = made[0].operand.name  # renamed here: filters below read the old name
            elif made and not isinstance(made[0], Col):
                break  # computed here: the filters below read another column
        elif not isinstance(node, Watermark):
            break
    return found


def watermark_filter(plan: Plan, mark: Watermark) -> WatermarkRows | None:
    """The rows that move ``mark``'s watermark (None: every row of the batch)."""
    nodes = plan.chain()
    leaf = nodes[-1]
    reach = threaded(mark, leaf)
    if reach is None:
        return None
    below = any(isinstance(n, Filter | Join) for n in mark.chain())
    walk = _Above(reach, set(mark.schema.names()), {mark.column})
    at = next(i for i, n in enumerate(nodes) if n is mark)
    upward = list(reversed(nodes[:at]))
    for i, node in enumerate(upward):
        if isinstance(node, _STATEFUL):
            break
        if isinstance(node, Filter):
            walk.filter(node)
        elif isinstance(node, Project):
            walk.project(node)
        elif isinstance(node, Join):
            if is_streaming(node.left) and is_streaming(node.right):
                break
            walk.join(node, _filters_above(upward[i + 1 :]))
    if not (below or walk.pushed):
        return None
    return WatermarkRows(walk.reach)


def operator_rows(below: Plan) -> WatermarkRows | None:
    """The rows as read that reach the end of ``below``, the input of the stateful operator
    (an aggregation, ``drop_duplicates`` or a stateful function): those its filters and
    stream-static joins let through, what Spark's operator sees and judges late. None:
    every row reaches it (projections and watermarks only, no index paid), or ``below``
    has a node :func:`threaded` does not pass (then every row read is taken)."""
    nodes = below.chain()
    if not any(isinstance(n, Filter | Join) for n in nodes):
        return None
    reach = threaded(below, nodes[-1])
    return None if reach is None else WatermarkRows(reach)


def counted(rows: pl.DataFrame, condition: WatermarkRows | None) -> pl.Series | None:
    """Per row, whether it counts toward the watermark (None: all do)."""
    if condition is None or not rows.height:
        return None
    return condition.mask(rows)
