"""Conditional and window expressions with Spark's semantics: ``CASE WHEN`` / ``when``,
``coalesce`` and ``window_time``, built by :mod:`streamkit.functions` (struct fields and
``LIKE`` / ``RLIKE`` are :class:`~streamkit.expr.Expr` methods, in :mod:`streamkit.expr`).
Like every expression they are type-checked when a plan is built and compiled to Polars
only by the executor.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from streamkit import dtypes as T
from streamkit.errors import SchemaError
from streamkit.expr import Expr, IntoExpr, into_expr


def _result_type(expr: Expr, schema: pl.Schema) -> pl.DataType:
    frame = pl.DataFrame(schema=schema).lazy().select(expr.to_polars().alias("_"))
    return frame.collect_schema()["_"]


@dataclass(frozen=True, eq=False)
class WindowTime(Expr):
    """Spark's ``window_time(window)``: the window's end minus one microsecond, i.e. the
    latest event time inside it. A windowed aggregation over it (a second aggregation in a
    chain) puts each window in the window holding its last instant."""

    operand: Expr

    def to_polars(self) -> pl.Expr:
        return self.operand.to_polars().struct.field("end") - pl.duration(microseconds=1)

    def _check_tree(self, schema: pl.Schema) -> pl.DataType:
        t = self.operand._check_tree(schema)
        fields = {f.name: f.dtype for f in t.fields} if isinstance(t, pl.Struct) else {}
        end = fields.get("end")
        if not isinstance(end, pl.Datetime) or "start" not in fields:
            raise SchemaError(
                f"window_time needs the window column of a windowed aggregation (a struct of "
                f"start and end timestamps); {self.operand!r} has type {T.describe(t)}"
            )
        return end

    @property
    def output_name(self) -> str:
        return "window_time"

    def columns(self) -> set[str]:
        return self.operand.columns()

    def __repr__(self) -> str:
        return f"window_time({self.operand!r})"


@dataclass(frozen=True, eq=False)
class Coalesce(Expr):
    """The first non-null value among ``operands`` (null when all are)."""

    operands: tuple[Expr, ...]

    def to_polars(self) -> pl.Expr:
        return pl.coalesce([e.to_polars() for e in self.operands])

    def _check_tree(self, schema: pl.Schema) -> pl.DataType:
        kinds = {}
        for e in self.operands:
            t = e._check_tree(schema)
            if not isinstance(t, pl.Null):
                kinds[_kind(t)] = e
        if len(kinds) > 1:
            raise SchemaError(
                f"coalesce needs values of one kind, got {', '.join(map(repr, kinds.values()))}"
                " of different kinds; use .cast(...)"
            )
        return _result_type(self, schema)

    @property
    def output_name(self) -> str:
        return "coalesce"

    def columns(self) -> set[str]:
        return set().union(*(e.columns() for e in self.operands))

    def __repr__(self) -> str:
        return f"coalesce({', '.join(map(repr, self.operands))})"


def _kind(t: pl.DataType) -> str:
    if T.is_numeric(t):
        return "numeric"
    if T.is_stringlike(t):
        return "string"
    return "temporal" if t.is_temporal() else str(t)


@dataclass(frozen=True, eq=False)
class Case(Expr):
    """``CASE WHEN c1 THEN v1 ... ELSE d END`` (``sk.when(c1, v1).when(...).otherwise(d)``):
    the value of the first branch whose condition is true (a null condition is not true),
    else ``default`` (null when there is none)."""

    branches: tuple[tuple[Expr, Expr], ...]
    default: Expr | None = None

    def when(self, condition: Expr, value: IntoExpr) -> Case:
        """Another branch, tried after the ones before it."""
        if self.default is not None:
            raise SchemaError("when() after otherwise(): add every branch before the default")
        return Case((*self.branches, (condition, into_expr(value))))

    def otherwise(self, value: IntoExpr) -> Case:
        """The value where no branch matches."""
        if self.default is not None:
            raise SchemaError("otherwise() is given twice")
        return Case(self.branches, into_expr(value))

    def to_polars(self) -> pl.Expr:
        # innermost first: the last branch's otherwise is the default
        out = pl.lit(None) if self.default is None else self.default.to_polars()
        for c, v in reversed(self.branches):
            out = pl.when(c.to_polars()).then(v.to_polars()).otherwise(out)
        return out

    def _check_tree(self, schema: pl.Schema) -> pl.DataType:
        values = [v for _, v in self.branches] + (
            [self.default] if self.default is not None else []
        )
        for condition, _ in self.branches:
            t = condition._check_tree(schema)
            if not (T.is_boolean(t) or isinstance(t, pl.Null)):
                raise SchemaError(f"when() needs a boolean condition; {condition!r} is {t}")
        kinds = {}
        for v in values:
            t = v._check_tree(schema)
            if not isinstance(t, pl.Null):
                kinds[_kind(t)] = v
        if len(kinds) > 1:
            raise SchemaError(
                f"CASE / when() branches give values of different kinds "
                f"({', '.join(map(repr, kinds.values()))}); use .cast(...) on one of them"
            )
        return _result_type(self, schema)

    @property
    def output_name(self) -> str:
        return "CASE"

    def columns(self) -> set[str]:
        parts = [c.columns() | v.columns() for c, v in self.branches]
        return set().union(*parts, self.default.columns() if self.default is not None else set())

    def __repr__(self) -> str:
        text = " ".join(f"WHEN {c!r} THEN {v!r}" for c, v in self.branches)
        tail = f" ELSE {self.default!r}" if self.default is not None else ""
        return f"CASE {text}{tail} END"
