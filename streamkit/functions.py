"""Expression and aggregate constructors, re-exported as ``streamkit.col``, ``streamkit.sum``..."""

from __future__ import annotations

from typing import Any

from streamkit.aggregates import (
    ApproxCountDistinct,
    ApproxPercentile,
    Avg,
    Count,
    CountDistinct,
    Max,
    Min,
    Sum,
)
from streamkit.aggs import AggExpr
from streamkit.conditional import Case, Coalesce, WindowTime
from streamkit.errors import PlanError
from streamkit.expr import Col, Expr, Lit, into_col, into_expr
from streamkit.time_expr import EpochUnit, FromEpoch, ParseTimestamp
from streamkit.windows import session_window, window

__all__ = [
    "approx_count_distinct",
    "approx_percentile",
    "avg",
    "coalesce",
    "col",
    "count",
    "count_distinct",
    "from_epoch",
    "lit",
    "max",
    "mean",
    "min",
    "session_window",
    "sum",
    "to_timestamp",
    "when",
    "window",
    "window_time",
]


def col(name: str) -> Expr:
    """A reference to column ``name``."""
    return Col(name)


def lit(value: Any) -> Expr:
    """A constant value."""
    return Lit(value)


def to_timestamp(column: str | Expr, format: str | None = None) -> Expr:
    """Parse ISO-8601 strings (or ``format``, strftime-style) into UTC timestamps."""
    return ParseTimestamp(into_col(column), format)


def from_epoch(column: str | Expr, unit: EpochUnit = "s") -> Expr:
    """Epoch numbers in ``unit`` (s, ms, us, ns) as UTC timestamps."""
    return FromEpoch(into_col(column), unit)


def when(condition: Expr, value: Any) -> Case:
    """Spark's ``when``: ``value`` where ``condition`` is true; chain ``.when(...)`` for
    more branches and end with ``.otherwise(default)`` (without it, null elsewhere)."""
    return Case(((condition, into_expr(value)),))


def coalesce(*columns: str | Expr) -> Expr:
    """The first non-null value among ``columns`` (null when all are null)."""
    if not columns:
        raise PlanError("coalesce() needs at least one column")
    return Coalesce(tuple(into_col(c) for c in columns))


def window_time(column: str | Expr = "window") -> Expr:
    """Spark's ``window_time``: the end of a windowed aggregation's ``window`` minus one
    microsecond. Group a second aggregation by ``sk.window(sk.window_time("window"), ...)``
    to chain windowed aggregations on a stream (see the README's Operators section)."""
    return WindowTime(into_col(column))


def count(column: str | Expr | None = None) -> AggExpr:
    """Number of rows (``count()``) or of non-null values (``count(col)``)."""
    return AggExpr(Count(), None if column is None else into_col(column))


def sum(column: str | Expr) -> AggExpr:
    """Sum of non-null values (null when there are none)."""
    return AggExpr(Sum(), into_col(column))


def avg(column: str | Expr) -> AggExpr:
    """Mean of non-null values (null when there are none)."""
    return AggExpr(Avg(), into_col(column))


mean = avg


def min(column: str | Expr) -> AggExpr:
    """Smallest non-null value."""
    return AggExpr(Min(), into_col(column))


def max(column: str | Expr) -> AggExpr:
    """Largest non-null value."""
    return AggExpr(Max(), into_col(column))


def count_distinct(column: str | Expr) -> AggExpr:
    """Exact number of distinct non-null values (state: the set of values)."""
    return AggExpr(CountDistinct(), into_col(column))


def approx_count_distinct(column: str | Expr, rsd: float = 0.02) -> AggExpr:
    """Approximate distinct non-null values (HyperLogLog; ``rsd`` = relative std. error)."""
    return AggExpr(ApproxCountDistinct(rsd), into_col(column))


def approx_percentile(column: str | Expr, percentage: float, accuracy: int = 100) -> AggExpr:
    """Approximate ``percentage`` quantile (0 to 1) of the non-null values: a value whose
    rank is within ``n / accuracy`` of ``percentage * n`` (with probability above
    1 - 1e-6; exact for groups of at most ``8 * accuracy`` values). A mergeable KLL-style
    sketch, so streaming state and checkpoints carry it like any other aggregate. Unlike
    Spark (accuracy 10000) the default is 100, i.e. 1% rank error, to keep state small.
    See :class:`streamkit.aggregates.ApproxPercentile`."""
    return AggExpr(ApproxPercentile(percentage, accuracy), into_col(column))


_ = window, session_window
