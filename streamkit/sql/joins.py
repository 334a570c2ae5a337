"""``FROM`` with ``JOIN``: the views joined left to right with the DataFrame API's
``join`` (so a SQL join is the plan ``left.join(right, on, how)`` builds, with the same
refusals and Spark's reasons), and what qualified and unqualified names mean over it.

The join plan needs distinct column names on its two inputs. A column of a joined view
whose name (case-insensitively) is already among the columns on its left is renamed in
the plan, to ``name#alias``; its result column keeps Spark's name (``SELECT c.t, i.t``
then needs an ``AS`` for one of them, as two result columns may not share a name). The
rename is put under the view's watermark, so the view keeps its event-time column.

Names resolve as in Spark: ``alias.col`` is that view's column, an unqualified name must
be one view's column (else it is ambiguous), a ``USING`` key unqualified is the joined
key. ``alias.key`` of a ``USING`` key is refused where the joined key is not that view's
own value (the null-extended side of an outer join).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import polars as pl
from sqlglot import exp

from streamkit.errors import ColumnNotFoundError
from streamkit.expr import Col, Expr
from streamkit.frame import DataFrame
from streamkit.plan import Plan, Project, Watermark
from streamkit.sql.errors import SqlError, UnsupportedSqlError
from streamkit.sql.expressions import to_expr
from streamkit.sql.refuse import from_table, join_type
from streamkit.sql.scopes import RowScope

if TYPE_CHECKING:
    from streamkit.sql.catalog import Catalog

_BLOCKED = ""
"""A side's entry for a USING key whose joined value is not that side's own."""


@dataclass
class JoinScope(RowScope):
    """Columns of joined views, by qualifier (the alias, else the view's name)."""

    sides: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per qualifier (lower case), Spark's column name -> column of the joined plan."""
    keys: dict[str, str] = field(default_factory=dict)
    """USING keys (lower case) -> the joined key's column."""
    names: dict[str, str] = field(default_factory=dict)
    """Renamed columns of the plan -> Spark's name."""
    labels: dict[str, str] = field(default_factory=dict)
    """Qualifier (lower case) -> as written, for messages."""

    def public(self, name: str) -> str:
        """Spark's name: a renamed column's own, and inside a derived name (``sum(v#i)``)."""
        if name in self.names:
            return self.names[name]
        for column in sorted(self.names, key=len, reverse=True):
            name = name.replace(column, self.names[column])
        return name

    def resolve(self, node: exp.Column) -> str:
        table, name = node.table, node.name
        if table:
            side = self.sides.get(table.lower())
            if side is None:
                raise SqlError(
                    f"{node.sql(dialect='spark')}: {table!r} is neither a view of FROM "
                    f"({', '.join(self.labels.values())}) nor a struct column"
                )
            column = _find(side, name)
            if column is None:
                raise ColumnNotFoundError(f"{table}.{name}", [f"{table}.{n}" for n in side])
            if column == _BLOCKED:
                raise _blocked(table, name)
            return column
        key = self.keys.get(name.lower())
        if key is not None:
            return key
        found = {
            q: c for q, side in self.sides.items() if (c := _find(side, name)) not in (None, "")
        }
        if len(set(found.values())) > 1:
            raise SqlError(
                f"column {name!r} is ambiguous: it is a column of "
                f"{' and '.join(self.labels[q] for q in found)}; qualify it "
                f"(e.g. {self.labels[next(iter(found))]}.{name})"
            )
        if not found:
            raise ColumnNotFoundError(name, [self.public(c) for c in self.schema.names()])
        return next(iter(found.values()))

    def star(self, qualifier: str | None) -> list[tuple[str, str]]:
        if qualifier is None:
            return [(self.public(c), c) for c in self.schema.names()]
        side = self.sides.get(qualifier.lower())
        if side is None:
            raise SqlError(f"{qualifier}.*: {qualifier!r} is not a view of FROM")
        for name, column in side.items():
            if column == _BLOCKED:
                raise _blocked(qualifier, name)
        return list(side.items())


def _blocked(table: str, name: str) -> UnsupportedSqlError:
    return UnsupportedSqlError(
        f"{table}.{name} (a USING key of an outer join, as the view whose rows the join "
        "may null-extend)",
        f"use the unqualified {name}, the joined key",
    )


def _find(side: dict[str, str], name: str) -> str | None:
    """The column for ``name`` in ``side``: exact, else the one case-insensitive match."""
    if name in side:
        return side[name]
    matches = [c for n, c in side.items() if n.lower() == name.lower()]
    return matches[0] if len(matches) == 1 else None


def joined(select: exp.Select, catalog: Catalog) -> tuple[DataFrame, RowScope]:
    """The frame ``FROM`` reads (its views joined, left to right) and its names."""
    table = from_table(select)
    frame = catalog.lookup(table.name)
    joins: list[exp.Join] = select.args.get("joins") or []
    if not joins:
        names = {table.name.lower()} | ({table.alias.lower()} if table.alias else set())
        return frame, RowScope(frame.plan.schema, frozenset(names))
    tables: list[exp.Table] = [table, *(j.this for j in joins)]
    frames = [frame, *(catalog.lookup(t.name) for t in tables[1:])]
    if len(tables) > 2 and sum(f.is_streaming for f in frames) > 1:
        raise UnsupportedSqlError(
            "a JOIN of more than two views where two of them stream",
            "join two streams in one query; enrich with static views in a query over it",
        )
    qualifier = table.alias or table.name
    scope = JoinScope(
        frame.plan.schema,
        frozenset({qualifier.lower()}),
        sides={qualifier.lower(): {c: c for c in frame.plan.schema.names()}},
        labels={qualifier.lower(): qualifier},
    )
    for join, right_table, right in zip(joins, tables[1:], frames[1:], strict=True):
        frame, scope = _join(frame, scope, join, right_table, right)
    return frame, scope


def _join(
    frame: DataFrame, scope: JoinScope, join: exp.Join, table: exp.Table, other: DataFrame
) -> tuple[DataFrame, JoinScope]:
    how = join_type(join)
    qualifier = table.alias or table.name
    q = qualifier.lower()
    if q in scope.sides:
        raise SqlError(f"two views of FROM are called {qualifier!r}; give one an alias (AS)")
    schema = other.plan.schema
    renames: dict[str, str] = {}
    using: list[str] = []
    keep: set[str] = set()
    for ident in join.args.get("using") or []:
        left_col = scope.resolve(exp.column(ident.name))
        right_col = _find({c: c for c in schema.names()}, ident.name)
        if right_col is None:
            raise ColumnNotFoundError(f"{qualifier}.{ident.name}", schema.names())
        if right_col != left_col:
            renames[right_col] = left_col
        keep.add(right_col)
        using.append(left_col)
    taken = {c.lower() for c in frame.plan.schema.names()}
    for c in schema.names():
        if c not in keep and c.lower() in taken:
            renames[c] = _hidden(c, qualifier, taken | {n.lower() for n in schema.names()})
    side = {c: renames.get(c, c) for c in schema.names()}
    right = DataFrame(_renamed(other.plan, renames))
    names = scope.names | {v: k for k, v in renames.items() if v not in using}
    sides = scope.sides | {q: side}
    labels = scope.labels | {q: qualifier}
    merged = pl.Schema({**dict(frame.plan.schema), **dict(right.plan.schema)})
    on_scope = JoinScope(merged, frozenset(sides), sides, scope.keys, names, labels)
    condition = join.args.get("on")
    on: list[str | Expr] = [*using]
    if condition is not None:
        on.append(to_expr(condition, on_scope))
    result = frame.join(right, on, how)
    if how in ("left_semi", "left_anti"):
        sides, labels = scope.sides, scope.labels
    keys = scope.keys | {u.lower(): u for u in using}
    sides = {k: dict(v) for k, v in sides.items()}
    for key in using:  # the joined key is the preserved side's own value
        for name, side_map in sides.items():
            own = name == q
            if side_map.get(_spark_name(side_map, key)) != key:
                continue
            if (how == "left" and own) or (how == "right" and not own) or how == "full":
                side_map[_spark_name(side_map, key)] = _BLOCKED
    return result, JoinScope(result.plan.schema, frozenset(sides), sides, keys, names, labels)


def _spark_name(side: dict[str, str], column: str) -> str:
    return next((n for n, c in side.items() if c == column), column)


def _hidden(name: str, qualifier: str, taken: set[str]) -> str:
    base = f"{name}#{qualifier}"
    out, n = base, 1
    while out.lower() in taken:
        n += 1
        out = f"{base}{n}"
    taken.add(out.lower())
    return out


def _renamed(plan: Plan, renames: dict[str, str]) -> Plan:
    """``plan`` with columns renamed, under its top watermark (which follows the rename)."""
    if not renames:
        return plan
    if isinstance(plan, Watermark):
        column = renames.get(plan.column, plan.column)
        return Watermark(_renamed(plan.input, renames), column, plan.delay_ns)
    exprs = tuple(Col(c).alias(renames[c]) if c in renames else Col(c) for c in plan.schema.names())
    return Project(plan, exprs, keep_input=False)
