"""What names mean inside a query: input columns (:class:`RowScope`) or, after
``GROUP BY``, group keys and aggregates (:class:`GroupScope`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlglot import exp

from streamkit.errors import ColumnNotFoundError
from streamkit.expr import Col, Expr, Field
from streamkit.sql.errors import SqlError
from streamkit.sql.expressions import agg_expr, is_aggregate

if TYPE_CHECKING:
    import polars as pl

    from streamkit.aggs import AggExpr


def normal(node: exp.Expression) -> exp.Expression:
    """``node`` for structural comparison: no table qualifiers, no parentheses, column
    and function names in lower case (Spark resolves names case-insensitively)."""

    def strip(n: exp.Expression) -> exp.Expression:
        if isinstance(n, exp.Column) and not isinstance(n.this, exp.Star):
            return exp.column(n.name.lower())
        if isinstance(n, exp.Anonymous):
            n.set("this", n.name.lower())
        return n.this if isinstance(n, exp.Paren) else n

    return node.copy().transform(strip)


@dataclass
class RowScope:
    """Columns of the view, by name (exact, else the one case-insensitive match) and
    optionally qualified by the view's name or alias."""

    schema: pl.Schema
    qualifiers: frozenset[str]

    def lookup(self, node: exp.Expression) -> Expr | None:
        return None

    def column(self, node: exp.Column) -> Expr:
        struct = self.struct_of(node)
        if struct is not None:  # w.start: a field of struct column w
            return Field(Col(struct), node.name)
        return Col(self.resolve(node))

    def struct_of(self, node: exp.Column) -> str | None:
        """The struct column whose field ``node`` names (``w.start``, ``view.w.start``),
        or None when ``node`` is a plain (possibly view-qualified) column."""
        table, db = node.table, node.args.get("db")
        if not table or (table.lower() in self.qualifiers and db is None):
            return None
        if db is not None and (node.args.get("catalog") or db.name.lower() not in self.qualifiers):
            raise SqlError(f"{node.sql(dialect='spark')}: {db.name!r} is not the view of FROM")
        return self.resolve(exp.column(table, db.name if db is not None else None))

    def resolve(self, node: exp.Column) -> str:
        """The schema's name for column ``node``; raises ColumnNotFoundError."""
        table = node.table
        if table and table.lower() not in self.qualifiers:
            raise SqlError(
                f"{node.sql(dialect='spark')}: {table!r} is neither the view of FROM nor "
                "a struct column"
            )
        name = node.name
        if name in self.schema:
            return name
        matches = [c for c in self.schema.names() if c.lower() == name.lower()]
        if len(matches) != 1:
            raise ColumnNotFoundError(name, self.schema.names())
        return matches[0]

    def dtype(self, expr: Expr) -> pl.DataType | None:
        return expr.check(self.schema)

    def public(self, name: str) -> str:
        """The name Spark gives column ``name`` of the input (a join renames some)."""
        return name

    def star(self, qualifier: str | None) -> list[tuple[str, str]]:
        """(Spark's name, column) of each column ``*`` (or ``qualifier.*``) selects."""
        if qualifier is not None and qualifier.lower() not in self.qualifiers:
            raise SqlError(f"{qualifier}.*: {qualifier!r} is not the view of FROM")
        return [(c, c) for c in self.schema.names()]


@dataclass
class GroupScope:
    """After ``GROUP BY``: a subtree equal to a group key reads that key's column, an
    aggregate call reads its result column (registered on first use, under a hidden
    name unless the SELECT item names it); any other column reference is an error."""

    rows: RowScope
    keys: list[tuple[exp.Expression, str]]
    """(normalised key expression, output column) per group key; the window's column is
    ``window``."""
    aggs: list[tuple[exp.Expression, AggExpr]] = field(default_factory=list)

    def lookup(self, node: exp.Expression) -> Expr | None:
        key = normal(node)
        for known, name in self.keys:
            if known == key:
                return Col(name)
        if is_aggregate(node):
            return Col(self.aggregate(node))
        return None

    def aggregate(self, node: exp.Expression, name: str | None = None) -> str:
        """The result column of aggregate ``node``: a new one named ``name``, or (no
        name) an equal one already registered, else a new hidden one."""
        key = normal(node)
        if name is None:
            for known, agg in self.aggs:
                if known == key:
                    return agg.output_name
            name = f"__sql_agg{len(self.aggs)}"
        self.aggs.append((key, agg_expr(node, InsideAggregate(self.rows)).alias(name)))
        return name

    def column(self, node: exp.Column) -> Expr:
        if node.table and node.args.get("db") is None:  # a field of a grouped struct
            for known, name in self.keys:
                if isinstance(known, exp.Column) and known.name.lower() == node.table.lower():
                    return Field(Col(name), node.name)
        raise SqlError(
            f"column {node.sql(dialect='spark')} is neither in GROUP BY nor inside an "
            "aggregate function; add it to GROUP BY or aggregate it (e.g. max(...))"
        )

    def dtype(self, expr: Expr) -> pl.DataType | None:
        return None


@dataclass
class InsideAggregate:
    """An aggregate's argument: input columns, and no nested aggregate."""

    rows: RowScope

    def lookup(self, node: exp.Expression) -> Expr | None:
        if is_aggregate(node):
            raise SqlError(f"aggregate {node.sql(dialect='spark')} inside another aggregate")
        return None

    def column(self, node: exp.Column) -> Expr:
        return self.rows.column(node)

    def dtype(self, expr: Expr) -> pl.DataType | None:
        return self.rows.dtype(expr)
