"""Expression and aggregate constructors, re-exported as ``streamkit.col``, ``streamkit.sum``..."""

from __future__ import annotations

from typing import Any

from streamkit.aggs import AggExpr
from streamkit.expr import Col, EpochUnit, Expr, FromEpoch, Lit, ParseTimestamp, into_col
from streamkit.windows import session_window, window

__all__ = [
    "approx_count_distinct",
    "avg",
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
    "window",
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


def count(column: str | Expr | None = None) -> AggExpr:
    """Number of rows (``count()``) or of non-null values (``count(col)``)."""
    return AggExpr("count", None if column is None else into_col(column))


def sum(column: str | Expr) -> AggExpr:
    """Sum of non-null values (null when there are none)."""
    return AggExpr("sum", into_col(column))


def avg(column: str | Expr) -> AggExpr:
    """Mean of non-null values (null when there are none)."""
    return AggExpr("avg", into_col(column))


mean = avg


def min(column: str | Expr) -> AggExpr:
    """Smallest non-null value."""
    return AggExpr("min", into_col(column))


def max(column: str | Expr) -> AggExpr:
    """Largest non-null value."""
    return AggExpr("max", into_col(column))


def count_distinct(column: str | Expr) -> AggExpr:
    """Exact number of distinct non-null values (state: the set of values)."""
    return AggExpr("count_distinct", into_col(column))


def approx_count_distinct(column: str | Expr, rsd: float = 0.02) -> AggExpr:
    """Approximate distinct non-null values (HyperLogLog; ``rsd`` = relative std. error)."""
    agg = AggExpr("approx_count_distinct", into_col(column), rsd=rsd)
    _ = agg.precision  # validates rsd now
    return agg


_ = window, session_window
