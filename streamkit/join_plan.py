"""The join node of the logical plan and the analysis of its condition.

``left.join(right, on, how)`` builds a :class:`Join`. ``on`` is Spark-shaped: a column
name or a list of names present on both sides (a "using" join: each appears once in the
result), a boolean expression over the columns of both sides, or a list mixing the two.
The condition is split into its conjuncts: ``col(a) == col(b)`` with ``a`` on one side and
``b`` on the other is an equality key; a comparison of the two sides' event-time columns,
each plus or minus a constant interval, is a time bound (what lets a stream-stream join
forget buffered rows, see :mod:`streamkit.streaming.stream_join`); anything else is a
filter applied to each candidate pair.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

import polars as pl

from streamkit.errors import PlanError, SchemaError
from streamkit.expr import BinOp, Col, Expr, Lit
from streamkit.plan import Plan
from streamkit.stream_static import check_stream_static, is_streaming, stream_side_first

JoinHow = Literal["inner", "left", "right", "full", "left_semi", "left_anti"]
_ALIASES: dict[str, JoinHow] = {
    "inner": "inner", "left": "left", "left_outer": "left", "leftouter": "left",
    "right": "right", "right_outer": "right", "rightouter": "right",
    "full": "full", "outer": "full", "full_outer": "full", "fullouter": "full",
    "left_semi": "left_semi", "leftsemi": "left_semi", "semi": "left_semi",
    "left_anti": "left_anti", "leftanti": "left_anti", "anti": "left_anti",
}  # fmt: skip
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}


def join_how(how: str) -> JoinHow:
    """Spark's join type names (``inner``, ``left``/``left_outer``, ``right``, ``full``/
    ``outer``, ``left_semi``, ``left_anti``) to the canonical one; others raise naming the
    accepted ones."""
    canonical = _ALIASES.get(how.lower().replace(" ", "_"))
    if canonical is None:
        raise PlanError(f"unknown join type {how!r}; use one of {sorted(set(_ALIASES))}")
    return canonical


@dataclass(frozen=True)
class TimeBound:
    """``left_col - right_col <op> offset_ns`` (one conjunct of the condition)."""

    left_col: str
    right_col: str
    op: str
    offset_ns: int


def _linear(expr: Expr) -> tuple[str, int] | None:
    """``col ± interval ± ...`` as (column, offset in ns), or None."""
    if isinstance(expr, Col):
        return expr.name, 0
    if isinstance(expr, BinOp) and expr.op in "+-" and isinstance(expr.right, Lit):
        value = expr.right.value
        inner = _linear(expr.left)
        if inner is None or not isinstance(value, timedelta):
            return None
        ns = (value // timedelta(microseconds=1)) * 1000
        return inner[0], inner[1] + (ns if expr.op == "+" else -ns)
    return None


def _conjuncts(expr: Expr) -> list[Expr]:
    if isinstance(expr, BinOp) and expr.op == "&":
        return _conjuncts(expr.left) + _conjuncts(expr.right)
    return [expr]


@dataclass(frozen=True, eq=False)
class Join(Plan):
    """``left.join(right, on, how)``: pairs of rows satisfying the condition; outer joins
    add the rows of the preserved side(s) that found no pair, with nulls for the other."""

    left: Plan
    right: Plan
    using: tuple[str, ...]
    """Names joined by equality that appear once in the result."""
    condition: Expr | None
    """The rest of the condition, over the columns of both sides (None: only ``using``)."""
    how: JoinHow
    schema: pl.Schema = field(init=False)
    pairs: tuple[tuple[str, str], ...] = field(init=False)
    """Equality keys (left column, right column), ``using`` first."""
    bounds: tuple[TimeBound, ...] = field(init=False)
    """The conjuncts that bound one side's time column by the other's."""
    residual: tuple[Expr, ...] = field(init=False)
    """The other conjuncts: filters on each candidate pair."""

    def __post_init__(self) -> None:
        check_stream_static(self.how, is_streaming(self.left), is_streaming(self.right))
        ls, rs = self.left.schema, self.right.schema
        for name in self.using:
            if name not in ls or name not in rs:
                side = "left" if name not in ls else "right"
                raise PlanError(
                    f"join key {name!r} is not a column of the {side} side "
                    f"(columns: {(ls if side == 'left' else rs).names()})"
                )
            if ls[name] != rs[name]:
                raise SchemaError(
                    f"join key {name!r} is {ls[name]} on the left and {rs[name]} on the "
                    "right; cast one side first (with_column(name, col(name).cast(...)))"
                )
        both = (set(ls.names()) & set(rs.names())) - set(self.using)
        if both:
            raise PlanError(
                f"columns {sorted(both)} are on both sides of the join; rename one side's "
                "first (e.g. .select(sk.col('x').alias('x_right'), ...)), or join on them"
            )
        pairs = [(n, n) for n in self.using]
        bounds: list[TimeBound] = []
        residual: list[Expr] = []
        for term in _conjuncts(self.condition) if self.condition is not None else []:
            self._classify(term, pairs, bounds, residual)
        if not pairs and is_streaming(self.left) and is_streaming(self.right):
            raise PlanError(
                "Stream-stream join without equality predicate is not supported (Spark "
                "refuses it too): add a key equal on both sides to the condition"
            )
        object.__setattr__(self, "pairs", tuple(pairs))
        object.__setattr__(self, "bounds", tuple(bounds))
        object.__setattr__(self, "residual", tuple(residual))
        object.__setattr__(self, "schema", self._output_schema())

    def _classify(
        self, term: Expr, pairs: list[tuple[str, str]], bounds: list[TimeBound], rest: list[Expr]
    ) -> None:
        ls, rs = self.left.schema, self.right.schema
        merged = pl.Schema({**dict(ls), **dict(rs)})
        cols = term.columns()
        ambiguous = cols & set(self.using)
        if ambiguous:
            raise PlanError(
                f"{sorted(ambiguous)} is a using-join key (on both sides), so the condition "
                f"{term!r} cannot tell which side it means; rename one side's column"
            )
        dtype = term.check(merged)
        if not isinstance(dtype, pl.Boolean):
            raise PlanError(f"a join condition must be boolean; {term!r} is {dtype}")
        if not isinstance(term, BinOp) or term.op not in ("==", "<", "<=", ">", ">="):
            rest.append(term)
            return
        a, b = _linear(term.left), _linear(term.right)
        if a is None or b is None:
            rest.append(term)
            return
        op = term.op
        if a[0] in rs and b[0] in ls:
            a, b, op = b, a, _FLIP.get(op, op)
        if not (a[0] in ls and b[0] in rs):
            rest.append(term)
            return
        if op == "==" and a[1] == b[1] == 0:
            pairs.append((a[0], b[0]))
            return
        if op != "==" and isinstance(ls[a[0]], pl.Datetime) and isinstance(rs[b[0]], pl.Datetime):
            bounds.append(TimeBound(a[0], b[0], op, b[1] - a[1]))
        rest.append(term)

    def _output_schema(self) -> pl.Schema:
        ls, rs = self.left.schema, self.right.schema
        out = {n: (rs if self.how == "right" else ls)[n] for n in self.using}
        out |= {n: t for n, t in ls.items() if n not in out}
        if self.how in ("left_semi", "left_anti"):  # the using keys first, as in Spark
            return pl.Schema(out)
        out |= {n: t for n, t in rs.items() if n not in out}
        return pl.Schema(out)

    @property
    def children(self) -> tuple[Plan, ...]:
        return stream_side_first(self.left, self.right)

    def explain(self, indent: int = 0) -> str:
        lines = ["  " * indent + self.describe()]
        return "\n".join(lines + [c.explain(indent + 1) for c in (self.left, self.right)])

    def describe(self) -> str:
        on = [f"{a}={b}" for a, b in self.pairs] + [repr(e) for e in self.residual]
        return f"Join {self.how} on [{', '.join(on)}]"


def build_join(left: Plan, right: Plan, on: object, how: str) -> Join:
    """The :class:`Join` of ``left.join(right, on, how)`` (see the module docstring)."""
    items = on if isinstance(on, list | tuple) else [on]
    using = tuple(i for i in items if isinstance(i, str))
    exprs = [i for i in items if isinstance(i, Expr)]
    if len(using) + len(exprs) != len(items) or not items:
        raise PlanError(
            "join on= takes a column name, a list of names present on both sides, a boolean "
            "expression over both sides' columns, or a list mixing names and expressions"
        )
    condition: Expr | None = None
    for e in exprs:
        condition = e if condition is None else condition & e
    return Join(left, right, using, condition, join_how(how))
