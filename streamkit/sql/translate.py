"""One Spark SQL ``SELECT`` as a DataFrame, built with the DataFrame API's own methods
(``filter``, ``group_by(...).agg(...)``, ``filter`` for HAVING, ``select``), so the plan
is the one the equivalent DataFrame code builds and runs the same as a batch job and as a
stream.

Output names are the DataFrame API's: an alias when given, else the column's name, the
aggregate's default name (``count`` for ``count(*)``, ``sum(v)``...) or ``window`` for
``window(...)`` and ``session_window(...)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from streamkit.expr import Col, Expr
from streamkit.sql.dialect import StreamkitSpark
from streamkit.sql.errors import SqlError, SqlSyntaxError, UnsupportedSqlError
from streamkit.sql.expressions import agg_expr, is_aggregate, is_window_call, to_expr, window_spec
from streamkit.sql.joins import joined
from streamkit.sql.ordering import Output, finish
from streamkit.sql.refuse import check_statement
from streamkit.sql.scopes import GroupScope, InsideAggregate, RowScope, normal
from streamkit.windows import WINDOW_COLUMN

if TYPE_CHECKING:
    import polars as pl

    from streamkit.frame import DataFrame
    from streamkit.sql.catalog import Catalog
    from streamkit.windows import SessionWindow, TimeWindow


def parse(query: str) -> exp.Select:
    """The query's one ``SELECT``; raises SqlSyntaxError or UnsupportedSqlError."""
    try:
        trees = [t for t in sqlglot.parse(query, read=StreamkitSpark) if t is not None]
    except (ParseError, TokenError) as e:
        raise SqlSyntaxError(f"not valid Spark SQL: {e}") from e
    if len(trees) != 1:
        raise SqlError(f"sk.sql runs one statement, got {len(trees)}")
    return check_statement(trees[0])


def translate(query: str, catalog: Catalog) -> DataFrame:
    """``query`` over the views of ``catalog`` as a DataFrame (streaming when its view is)."""
    select = parse(query)
    frame, rows = joined(select, catalog)
    where = select.args.get("where")
    if where is not None:
        frame = frame.filter(to_expr(where.this, rows))
    if not _aggregates(select):
        return finish(frame, select, _row_outputs(select, rows), rows)
    frame, outputs, scope = _grouped(frame, select, rows)
    return finish(frame, select, outputs, scope)


def _aggregates(select: exp.Select) -> bool:
    having = select.args.get("having")
    trees = [*select.expressions, *([having] if having is not None else [])]
    found = any(is_aggregate(n) for t in trees for n in t.walk())
    return found or select.args.get("group") is not None


def _items(select: exp.Select) -> list[tuple[exp.Expression, str | None]]:
    out: list[tuple[exp.Expression, str | None]] = []
    for item in select.expressions:
        if isinstance(item, exp.Alias):
            out.append((item.this, item.alias))
        else:
            out.append((item, None))
    return out


def _row_outputs(select: exp.Select, rows: RowScope) -> list[Output]:
    outputs: list[Output] = []
    for node, alias in _items(select):
        star = isinstance(node, exp.Star) or (
            isinstance(node, exp.Column) and isinstance(node.this, exp.Star)
        )
        if star:
            if node.args.get("except_") or node.args.get("except") or node.args.get("replace"):
                raise UnsupportedSqlError("SELECT * EXCEPT / REPLACE")
            qualifier = node.table if isinstance(node, exp.Column) and node.table else None
            outputs += [
                Output(exp.column(n, qualifier), n, Col(c)) for n, c in rows.star(qualifier)
            ]
            continue
        expr = to_expr(node, rows)
        outputs.append(Output(node, alias or rows.public(expr.output_name), expr))
    return outputs


# -- GROUP BY ----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Key:
    """A group key: SELECT position (unselected keys last), node, output column, and what
    ``group_by`` takes for it."""

    position: int
    node: exp.Expression
    name: str
    by: Expr | TimeWindow | SessionWindow


def _grouped(
    frame: DataFrame, select: exp.Select, rows: RowScope
) -> tuple[DataFrame, list[Output], GroupScope]:
    """``group_by(...).agg(...)``, HAVING as a filter after it, and the SELECT items."""
    items = _items(select)
    if any(isinstance(n, exp.Star) for n, _ in items):
        raise SqlError("SELECT * with GROUP BY or aggregates: name the columns")
    keys = _keys(_group_nodes(select, items, rows), items, rows)
    scope = GroupScope(rows, [(normal(k.node), k.name) for k in keys])
    names = [alias or rows.public(_default_name(node, scope)) for node, alias in items]
    for (node, _), name in zip(items, names, strict=True):
        if is_aggregate(node):
            scope.aggregate(node, name)
    outputs = [
        Output(n, name, to_expr(n, scope)) for (n, _), name in zip(items, names, strict=True)
    ]
    having = select.args.get("having")
    condition = to_expr(_with_aliases(having.this, items), scope) if having else None
    _register_order_aggregates(select, scope)
    if not scope.aggs:
        scope.aggregate(exp.Count(this=exp.Star()), "__sql_rows")
    result = frame.group_by(*(k.by for k in keys)).agg(*(agg for _, agg in scope.aggs))
    if condition is not None:
        result = result.filter(condition)
    return result, outputs, scope


def _with_aliases(
    node: exp.Expression, items: list[tuple[exp.Expression, str | None]]
) -> exp.Expression:
    """HAVING's condition with SELECT aliases replaced by what they name (in HAVING, as
    in Spark, an alias of the SELECT list wins over an input column of that name)."""
    aliases = {a.lower(): n for n, a in items if a is not None}

    def swap(n: exp.Expression) -> exp.Expression:
        if isinstance(n, exp.Column) and not n.table and n.name.lower() in aliases:
            return aliases[n.name.lower()].copy()
        return n

    return node.copy().transform(swap)


def _register_order_aggregates(select: exp.Select, scope: GroupScope) -> None:
    """Aggregates that only ORDER BY uses are computed by the aggregation too."""
    order = select.args.get("order")
    for term in order.expressions if order is not None else []:
        for node in term.walk():
            if is_aggregate(node):
                scope.aggregate(node)


def _group_nodes(
    select: exp.Select, items: list[tuple[exp.Expression, str | None]], rows: RowScope
) -> list[exp.Expression]:
    """GROUP BY expressions with ordinals (``GROUP BY 2``) and SELECT aliases replaced by
    the SELECT item they name (an input column of that name wins, as in Spark)."""
    group = select.args.get("group")
    out: list[exp.Expression] = []
    for item in group.expressions if group is not None else []:
        node = item
        if isinstance(node, exp.Literal) and not node.is_string:
            position = int(node.this)
            if not 1 <= position <= len(items):
                raise SqlError(f"GROUP BY {position} is not a position in the SELECT list "
                               f"(1 to {len(items)})")  # fmt: skip
            node = items[position - 1][0]
            if is_aggregate(node):
                raise SqlError(f"GROUP BY {position} refers to an aggregate, {node.sql()}")
        elif isinstance(node, exp.Column) and not node.table:
            aliased = [n for n, a in items if a is not None and a.lower() == node.name.lower()]
            in_input = any(rows.public(c).lower() == node.name.lower() for c in rows.schema.names())
            if aliased and not in_input:
                node = aliased[0]
        out.append(node)
    return out


def _keys(
    groups: list[exp.Expression], items: list[tuple[exp.Expression, str | None]], rows: RowScope
) -> list[_Key]:
    """Group keys in SELECT order, then the unselected ones under hidden names, so the
    aggregate's columns already follow the SELECT list when they can."""
    keys: list[_Key] = []
    for i, node in enumerate(groups):
        position = _position(node, items)
        if is_window_call(node):
            if any(is_window_call(k.node) for k in keys):
                raise SqlError("GROUP BY takes at most one window(...) or session_window(...)")
            keys.append(_Key(position, node, WINDOW_COLUMN, window_spec(node, rows)))
            continue
        expr = to_expr(node, rows)
        selected = position < len(items)
        public = rows.public(expr.output_name)
        name = (items[position][1] or public) if selected else f"__sql_key{i}"
        keys.append(
            _Key(position, node, name, expr if expr.output_name == name else expr.alias(name))
        )
    return sorted(keys, key=lambda k: k.position)


def _position(node: exp.Expression, items: list[tuple[exp.Expression, str | None]]) -> int:
    key = normal(node)
    for i, (item, _) in enumerate(items):
        if normal(item) == key:
            return i
    return len(items)


@dataclass
class _Names:
    """Default names of SELECT items: aggregates by the DataFrame API's default name,
    nothing registered."""

    group: GroupScope

    def lookup(self, node: exp.Expression) -> Expr | None:
        if is_aggregate(node):
            return Col(agg_expr(node, InsideAggregate(self.group.rows)).output_name)
        return self.group.lookup(node)

    def column(self, node: exp.Column) -> Expr:
        return self.group.column(node)

    def dtype(self, expr: Expr) -> pl.DataType | None:
        return None


def _default_name(node: exp.Expression, scope: GroupScope) -> str:
    if is_window_call(node):
        return WINDOW_COLUMN
    return to_expr(node, _Names(scope)).output_name
