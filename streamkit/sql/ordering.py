"""The end of a SQL query: the SELECT list as a projection, then ORDER BY and LIMIT.

The plan has no sort node (a stream is sorted only in Spark's complete mode), so ORDER BY
and LIMIT are for batch queries: :class:`OrderedResult` runs the query's plan when it is
read and sorts and cuts the result. On a streaming view they are refused at parse time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import polars as pl
from sqlglot import exp

from streamkit.execute import execute
from streamkit.expr import Col, Expr
from streamkit.frame import DataFrame
from streamkit.plan import Plan, Scan
from streamkit.sql.errors import SqlError, UnsupportedSqlError
from streamkit.sql.expressions import literal, to_expr
from streamkit.sql.scopes import normal

if TYPE_CHECKING:
    from streamkit.sql.expressions import Scope


@dataclass(frozen=True)
class Output:
    """One result column: the SELECT item (alias removed), its name, its expression."""

    node: exp.Expression
    name: str
    expr: Expr


@dataclass(frozen=True)
class SortKey:
    """One ORDER BY term over a result column (Spark's defaults: ASC NULLS FIRST, DESC
    NULLS LAST)."""

    column: str
    descending: bool
    nulls_last: bool


@dataclass(frozen=True, eq=False)
class OrderedResult:
    """A batch plan's result sorted by ``keys`` (stable), cut to ``limit`` rows, and
    reduced to the ``visible`` columns. Reading it runs ``plan``."""

    plan: Plan
    keys: tuple[SortKey, ...]
    limit: int | None
    visible: tuple[str, ...]
    schema: pl.Schema = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "schema", pl.Schema({n: self.plan.schema[n] for n in self.visible})
        )

    def batches(self, columns: list[str], dictionary: list[str]) -> Iterator[pl.DataFrame]:
        """One chunk: the sorted, cut result."""
        frame = execute(self.plan)
        if self.keys:
            frame = frame.sort(
                [k.column for k in self.keys],
                descending=[k.descending for k in self.keys],
                nulls_last=[k.nulls_last for k in self.keys],
                maintain_order=True,
            )
        if self.limit is not None:
            frame = frame.head(self.limit)
        yield frame.select(columns)

    def describe(self) -> str:
        order = ", ".join(f"{k.column} {'DESC' if k.descending else 'ASC'}" for k in self.keys)
        cut = f" LIMIT {self.limit}" if self.limit is not None else ""
        return (
            f"sorted result{' ORDER BY ' + order if order else ''}{cut} of {self.plan.describe()}"
        )


def finish(frame: DataFrame, select: exp.Select, outputs: list[Output], scope: Scope) -> DataFrame:
    """``frame`` projected to the SELECT list (no projection when it already is), sorted
    and cut by ORDER BY and LIMIT (batch only)."""
    names = [o.name for o in outputs]
    for name in names:
        if names.count(name) > 1:
            raise _same_names(select, name)
    order, limit = select.args.get("order"), select.args.get("limit")
    if (order is not None or limit is not None) and frame.is_streaming:
        what = "ORDER BY" if order is not None else "LIMIT"
        raise UnsupportedSqlError(
            f"{what} on a stream", "Spark sorts a stream only in complete mode; run the "
            "query as a batch job, or sort each micro-batch in foreach_batch"
        )  # fmt: skip
    keys, hidden = _sort_keys(order, outputs, scope) if order is not None else ([], [])
    exprs = [o.expr if _is_named(o.expr, o.name) else o.expr.alias(o.name) for o in outputs]
    identity = frame.columns == names and all(isinstance(e, Col) for e in exprs)
    if hidden or not identity:
        frame = frame.select(*exprs, *hidden)
    if order is None and limit is None:
        return frame
    cut = _limit(limit) if limit is not None else None
    return DataFrame(Scan(OrderedResult(frame.plan, tuple(keys), cut, tuple(names))))


def _same_names(select: exp.Select, name: str) -> UnsupportedSqlError:
    """Spark returns two columns of one name (``SELECT *`` over views that share a column
    name, ``SELECT k, k``) and fails only where one is referenced; a streamkit table (a
    Polars frame) cannot hold two columns of one name, so the query is refused."""
    star = any(
        isinstance(n, exp.Star) or (isinstance(n, exp.Column) and isinstance(n.this, exp.Star))
        for n in select.expressions
    )
    why = (
        "Spark returns both columns under that one name, and a streamkit table cannot hold "
        "two columns of one name: "
    )
    if star and select.args.get("joins"):
        return UnsupportedSqlError(
            f"SELECT * over a join whose views share the column name {name!r}",
            f"{why}list the columns and rename one with AS (e.g. v.{name} AS v_{name}), "
            f"or join USING ({name}) if it is the join key",
        )
    return UnsupportedSqlError(f"two result columns named {name!r}", f"{why}rename one with AS")


def _is_named(expr: Expr, name: str) -> bool:
    return isinstance(expr, Col) and expr.name == name


def _sort_keys(
    order: exp.Order, outputs: list[Output], scope: Scope
) -> tuple[list[SortKey], list[Expr]]:
    """Sort keys over result columns; a term that is no result column is computed in a
    hidden column (returned second)."""
    keys: list[SortKey] = []
    hidden: list[Expr] = []
    for term in order.expressions:
        node = term.this
        descending = bool(term.args.get("desc"))
        first = term.args.get("nulls_first")
        nulls_last = (not first) if first is not None else descending
        column = _result_column(node, outputs)
        if column is None:
            column = f"__sql_order{len(hidden)}"
            hidden.append(to_expr(node, scope).alias(column))
        keys.append(SortKey(column, descending, nulls_last))
    return keys, hidden


def _result_column(node: exp.Expression, outputs: list[Output]) -> str | None:
    """The result column an ORDER BY term names: by position, by name, or as the same
    expression as a SELECT item."""
    if isinstance(node, exp.Literal) and not node.is_string:
        position = int(node.this)
        if not 1 <= position <= len(outputs):
            raise SqlError(f"ORDER BY {position} is not a position in the SELECT list "
                           f"(1 to {len(outputs)})")  # fmt: skip
        return outputs[position - 1].name
    if isinstance(node, exp.Column) and not node.table:
        named = [o.name for o in outputs if o.name.lower() == node.name.lower()]
        if named:
            return named[0]
    key = normal(node)
    return next((o.name for o in outputs if normal(o.node) == key), None)


def _limit(limit: exp.Expression) -> int:
    value = literal(limit.expression) if isinstance(limit.expression, exp.Literal) else None
    if not isinstance(value, int) or value < 0:
        raise SqlError(f"LIMIT takes a non-negative integer, got {limit.expression.sql()}")
    return value
