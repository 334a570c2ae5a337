"""Spark SQL scalar expressions and aggregate calls (sqlglot nodes) as streamkit's own
:class:`~streamkit.expr.Expr` and :class:`~streamkit.aggs.AggExpr`, built with the same
constructors as the DataFrame API, so a SQL query and its DataFrame twin share one plan.

Supported: columns, struct fields (``w.start``, ``window(...).end``), literals,
``+ - * /``, comparisons, ``AND OR NOT``, ``IS [NOT] NULL``, ``IN (list)``, ``BETWEEN``,
``CASE WHEN``, ``IF``, ``coalesce``/``ifnull``/``nvl``, ``[NOT] LIKE``/``ILIKE`` (literal
patterns, ``ESCAPE``), ``RLIKE``/``REGEXP``, ``CAST``, ``timestamp_seconds/millis/micros``,
``window_time``, day-time ``INTERVAL`` literals (``ts + INTERVAL 1 HOUR``); aggregates
``count(*)``, ``count(x)``, ``count(DISTINCT x)``, ``sum``, ``avg``/``mean``, ``min``,
``max``, ``approx_count_distinct``, ``percentile_approx``. Anything else is refused by name.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol

import polars as pl
from sqlglot import exp

from streamkit import functions as F
from streamkit.conditional import Case, Coalesce, WindowTime
from streamkit.durations import parse_duration_ns
from streamkit.errors import DurationError
from streamkit.expr import Expr, Field, Lit, Match
from streamkit.sql.errors import SqlError, UnsupportedSqlError
from streamkit.time_expr import EpochUnit, FromEpoch, ParseTimestamp
from streamkit.windows import SessionWindow, TimeWindow

if TYPE_CHECKING:
    from streamkit.aggs import AggExpr


class Scope(Protocol):
    """Where an expression is evaluated: what its columns and aggregate calls mean."""

    def lookup(self, node: exp.Expression) -> Expr | None:
        """The meaning of a whole subtree (a GROUP BY key, an aggregate), or None."""
        ...

    def column(self, node: exp.Column) -> Expr:
        """A column reference; raises when it cannot be resolved here."""
        ...

    def dtype(self, expr: Expr) -> pl.DataType | None:
        """The type of ``expr`` when known here (None: unknown)."""
        ...


_BINARY: dict[type[exp.Expression], Callable[[Expr, Expr], Expr]] = {
    exp.Add: operator.add, exp.Sub: operator.sub, exp.Mul: operator.mul,
    exp.Div: operator.truediv, exp.EQ: operator.eq, exp.NEQ: operator.ne,
    exp.GT: operator.gt, exp.GTE: operator.ge, exp.LT: operator.lt, exp.LTE: operator.le,
    exp.And: operator.and_, exp.Or: operator.or_,
}  # fmt: skip

_CAST_TYPES = {
    "BIGINT": "int64", "INT": "int32", "SMALLINT": "int16", "TINYINT": "int8",
    "DOUBLE": "float64", "FLOAT": "float32", "TEXT": "string", "VARCHAR": "string",
    "BOOLEAN": "bool", "DATE": "date", "TIMESTAMP": "timestamp", "TIMESTAMPTZ": "timestamp",
    "TIMESTAMPLTZ": "timestamp",
}  # fmt: skip

_EPOCH_UNITS: dict[str, EpochUnit] = {
    "timestamp_seconds": "s",
    "timestamp_millis": "ms",
    "timestamp_micros": "us",
}

_REFUSED: dict[type[exp.Expression], tuple[str, str]] = {
    exp.Mod: ("% (remainder)", "Spark's % truncates toward zero and streamkit's floors "
              "(Python's rule); use the DataFrame API's % if floor semantics are meant"),
    exp.IntDiv: ("DIV", "Spark's DIV truncates toward zero and streamkit's // floors"),
    exp.NullSafeEQ: ("<=> (null-safe equality)", ""),
    exp.Dot: ("struct field access on this expression", ""),
    exp.Bracket: ("subscripts", ""),
    exp.Star: ("* outside SELECT and count(*)", ""),
}  # fmt: skip


def to_expr(node: exp.Expression, scope: Scope) -> Expr:
    """``node`` as a streamkit expression in ``scope``; refuses what streamkit lacks."""
    found = scope.lookup(node)
    if found is not None:
        return found
    if isinstance(node, exp.Paren):
        return to_expr(node.this, scope)
    if isinstance(node, exp.Column):
        return scope.column(node)
    if isinstance(node, exp.Literal | exp.Boolean | exp.Null):
        return Lit(literal(node))
    if isinstance(node, exp.Interval):
        return Lit(interval(node))
    binary = _BINARY.get(type(node))
    if binary is not None:
        return binary(to_expr(node.this, scope), to_expr(node.expression, scope))
    return _special(node, scope)


def _special(node: exp.Expression, scope: Scope) -> Expr:
    if isinstance(node, exp.Not):
        if isinstance(node.this, exp.Is):
            return to_expr(node.this.this, scope).is_not_null()
        return ~to_expr(node.this, scope)
    if isinstance(node, exp.Neg):
        return -to_expr(node.this, scope)
    if isinstance(node, exp.Is) and isinstance(node.expression, exp.Null):
        return to_expr(node.this, scope).is_null()
    if isinstance(node, exp.In) and not node.args.get("query"):
        value = to_expr(node.this, scope)
        return functools.reduce(
            operator.or_, (value == to_expr(e, scope) for e in node.expressions)
        )
    if isinstance(node, exp.Between):
        value = to_expr(node.this, scope)
        low, high = to_expr(node.args["low"], scope), to_expr(node.args["high"], scope)
        return (value >= low) & (value <= high)
    if isinstance(node, exp.Cast | exp.TryCast):
        return _cast(node, scope)
    conditional = _conditional(node, scope)
    if conditional is not None:
        return conditional
    if isinstance(node, exp.Anonymous) and node.name.lower() in _EPOCH_UNITS:
        (arg,) = _arguments(node, 1)
        return FromEpoch(to_expr(arg, scope), _EPOCH_UNITS[node.name.lower()])
    if is_window_call(node):
        raise UnsupportedSqlError(f"{node.name.lower()}() outside GROUP BY", "group by it")
    if is_aggregate(node):
        raise SqlError(
            f"aggregate function {node.sql(dialect='spark')} is not allowed here (only in "
            "SELECT, HAVING and ORDER BY; filter on aggregates with HAVING)"
        )
    raise refusal(node)


def _conditional(node: exp.Expression, scope: Scope) -> Expr | None:
    """CASE, IF, coalesce, LIKE / ILIKE / RLIKE, struct fields and window_time (None: the
    node is none of them)."""
    if isinstance(node, exp.Case):
        subject = node.this
        branches = []
        for branch in node.args.get("ifs") or []:
            test = to_expr(branch.this, scope)
            if subject is not None:  # CASE x WHEN v THEN ...: x = v
                test = to_expr(subject, scope) == test
            branches.append((test, to_expr(branch.args["true"], scope)))
        default = node.args.get("default")
        return Case(tuple(branches), None if default is None else to_expr(default, scope))
    if isinstance(node, exp.If):
        default = node.args.get("false")
        branch = (to_expr(node.this, scope), to_expr(node.args["true"], scope))
        return Case((branch,), None if default is None else to_expr(default, scope))
    if isinstance(node, exp.Coalesce):
        return Coalesce(tuple(to_expr(e, scope) for e in [node.this, *node.expressions]))
    if isinstance(node, exp.Escape) and isinstance(node.this, exp.Like | exp.ILike):
        return _match(node.this, scope, str(_pattern(node.expression, "ESCAPE")))
    if isinstance(node, exp.Like | exp.ILike | exp.RegexpLike):
        return _match(node, scope, "\\")
    if isinstance(node, exp.Dot) and isinstance(node.expression, exp.Identifier):
        return Field(to_expr(node.this, scope), node.expression.name)
    if isinstance(node, exp.Anonymous) and node.name.lower() == "window_time":
        (arg,) = _arguments(node, 1)
        return WindowTime(to_expr(arg, scope))
    return None


def _match(node: exp.Expression, scope: Scope, escape: str) -> Expr:
    kind = (
        "like"
        if isinstance(node, exp.Like)
        else "ilike"
        if isinstance(node, exp.ILike)
        else "rlike"
    )
    pattern = _pattern(node.expression, kind.upper())
    if len(escape) != 1:
        raise SqlError(f"ESCAPE takes one character, got {escape!r}")
    out: Expr = Match(to_expr(node.this, scope), pattern, kind, escape)
    return ~out if node.args.get("negate") else out


def _pattern(node: exp.Expression, what: str) -> str:
    if isinstance(node, exp.Literal) and node.is_string:
        return str(node.this)
    raise UnsupportedSqlError(f"{what} with a pattern that is not a string literal")


def refusal(node: exp.Expression) -> UnsupportedSqlError:
    """The error for an expression streamkit SQL does not translate, naming it."""
    for kind, (name, hint) in _REFUSED.items():
        if isinstance(node, kind):
            return UnsupportedSqlError(name, hint)
    if isinstance(node, exp.Func):
        return UnsupportedSqlError(f"function {function_name(node)}()")
    return UnsupportedSqlError(f"{type(node).__name__} ({node.sql(dialect='spark')})")


def function_name(node: exp.Expression) -> str:
    """The function's name as Spark SQL spells it (lower case)."""
    if isinstance(node, exp.Anonymous):
        return node.name.lower()
    return node.sql(dialect="spark").partition("(")[0].lower()


def literal(node: exp.Expression) -> object:
    """The Python value of a literal (integers stay integers; no decimals)."""
    if isinstance(node, exp.Null):
        return None
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    assert isinstance(node, exp.Literal)
    if node.is_string:
        return str(node.this)
    text = str(node.this)
    try:
        return int(text)
    except ValueError:
        return float(text)


def interval(node: exp.Interval) -> timedelta:
    """``INTERVAL 1 HOUR``, ``INTERVAL '1' HOUR``, ``INTERVAL '90 seconds'`` as a timedelta
    (day-time intervals only; a month or year has no fixed length)."""
    text = _duration(node)
    try:
        ns = parse_duration_ns(text)
    except DurationError as e:
        raise UnsupportedSqlError(f"INTERVAL {text!r}", "use days, hours, minutes, seconds, "
                                  "milliseconds or microseconds") from e  # fmt: skip
    return timedelta(microseconds=ns // 1000)


def _cast(node: exp.Cast | exp.TryCast, scope: Scope) -> Expr:
    kind = node.to.this
    name = _CAST_TYPES.get(kind.value if isinstance(kind, exp.DataType.Type) else str(kind))
    if name is None:
        raise UnsupportedSqlError(f"CAST to {node.to.sql(dialect='spark')}")
    operand = to_expr(node.this, scope)
    if name == "timestamp":
        source = scope.dtype(operand)
        if isinstance(source, pl.String):
            return ParseTimestamp(operand)
        if source is not None and source.is_numeric():
            return FromEpoch(operand, "s")
    return operand.cast(name)


def _arguments(node: exp.Expression, *counts: int) -> list[exp.Expression]:
    args = [node.this] if not isinstance(node, exp.Anonymous) else []
    args += list(node.expressions)
    args = [a for a in args if a is not None]
    if len(args) not in counts:
        raise SqlError(f"{function_name(node)}() takes {' or '.join(map(str, counts))} "
                       f"arguments, got {len(args)}")  # fmt: skip
    return args


# -- windows -----------------------------------------------------------------------------
def is_window_call(node: exp.Expression) -> bool:
    """True for ``window(...)`` and ``session_window(...)``."""
    return isinstance(node, exp.Anonymous) and node.name.lower() in ("window", "session_window")


def window_spec(node: exp.Expression, scope: Scope) -> TimeWindow | SessionWindow:
    """``window(col, size[, slide[, start]])`` or ``session_window(col, gap)`` as the
    DataFrame API's window spec; durations are string literals or ``INTERVAL``s."""
    if node.name.lower() == "session_window":
        column, gap = _arguments(node, 2)
        return F.session_window(to_expr(column, scope), _duration(gap))
    column, *durations = _arguments(node, 2, 3, 4)
    size, *rest = (_duration(d) for d in durations)
    slide = rest[0] if rest else None
    offset = rest[1] if len(rest) > 1 else None
    return F.window(to_expr(column, scope), size, slide, offset)


def _duration(node: exp.Expression) -> str:
    if isinstance(node, exp.Literal) and node.is_string:
        return str(node.this)
    if isinstance(node, exp.Interval) and isinstance(node.this, exp.Literal):
        unit = node.args.get("unit")
        return f"{node.this.this} {unit.name.lower() if unit is not None else ''}".strip()
    raise SqlError(f"a window duration must be a string such as '10 minutes', got "
                   f"{node.sql(dialect='spark')}")  # fmt: skip


# -- aggregates --------------------------------------------------------------------------
_SIMPLE: dict[type[exp.Expression], Callable[[Expr], AggExpr]] = {
    exp.Sum: F.sum,
    exp.Avg: F.avg,
    exp.Min: F.min,
    exp.Max: F.max,
}


def is_aggregate(node: exp.Expression) -> bool:
    """True for an aggregate call (whether streamkit supports it or not)."""
    if isinstance(node, exp.Anonymous):
        return node.name.lower() == "mean"
    return isinstance(node, exp.AggFunc | exp.Filter)


def agg_expr(node: exp.Expression, scope: Scope) -> AggExpr:
    """An aggregate call as the DataFrame API's aggregate (default name: the API's)."""
    if isinstance(node, exp.Filter):
        raise UnsupportedSqlError("aggregate FILTER (WHERE ...)")
    arg = node.expressions[0] if isinstance(node, exp.Anonymous) else node.this
    if isinstance(arg, exp.Distinct):
        return _distinct(node, arg, scope)
    if isinstance(node, exp.Count):
        star = isinstance(arg, exp.Star) or (isinstance(arg, exp.Literal) and not arg.is_string)
        return F.count() if star else F.count(to_expr(arg, scope))
    simple = _SIMPLE.get(type(node))
    if simple is not None:
        return simple(to_expr(arg, scope))
    if isinstance(node, exp.Anonymous):
        return F.avg(to_expr(arg, scope))
    return _approx(node, arg, scope)


def _distinct(node: exp.Expression, arg: exp.Distinct, scope: Scope) -> AggExpr:
    if not isinstance(node, exp.Count):
        raise UnsupportedSqlError(f"{function_name(node)}(DISTINCT ...)")
    if len(arg.expressions) != 1:
        raise UnsupportedSqlError("count(DISTINCT ...) of several columns")
    return F.count_distinct(to_expr(arg.expressions[0], scope))


def _approx(node: exp.Expression, arg: exp.Expression, scope: Scope) -> AggExpr:
    if isinstance(node, exp.ApproxDistinct):
        rsd = node.args.get("accuracy")
        value = to_expr(arg, scope)
        if rsd is None:
            return F.approx_count_distinct(value)
        return F.approx_count_distinct(value, float(_number(rsd)))
    if isinstance(node, exp.ApproxQuantile):
        quantile, accuracy = node.args.get("quantile"), node.args.get("accuracy")
        if quantile is None or not isinstance(quantile, exp.Literal):
            raise UnsupportedSqlError("percentile_approx with an array of percentages")
        value = to_expr(arg, scope)
        if accuracy is None:
            return F.approx_percentile(value, float(_number(quantile)))
        return F.approx_percentile(value, float(_number(quantile)), int(_number(accuracy)))
    raise UnsupportedSqlError(f"aggregate function {function_name(node)}()")


def _number(node: exp.Expression) -> float:
    value = literal(node) if isinstance(node, exp.Literal) else None
    if not isinstance(value, int | float):
        raise SqlError(f"expected a number, got {node.sql(dialect='spark')}")
    return value
