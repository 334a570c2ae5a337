"""The SQL subset, checked on the parsed tree before any translation: everything outside
it is refused with :class:`UnsupportedSqlError` naming the construct.

Accepted: one ``SELECT`` from one view, with ``WHERE``, ``GROUP BY``, ``HAVING``,
``ORDER BY`` and ``LIMIT``. Expressions are checked while they are translated
(:mod:`streamkit.sql.expressions`), so an unknown function is refused there by name.
"""

from __future__ import annotations

from sqlglot import exp

from streamkit.sql.errors import UnsupportedSqlError

CLAUSES = frozenset({"expressions", "from", "from_", "where", "group", "having", "order", "limit"})
"""``Select`` arguments the translator reads; any other that is set is refused."""

_CLAUSE_NAMES = {
    "with": "WITH (a common table expression)",
    "with_": "WITH (a common table expression)",
    "joins": "JOIN",
    "laterals": "LATERAL VIEW",
    "distinct": "SELECT DISTINCT",
    "qualify": "QUALIFY",
    "windows": "WINDOW clause",
    "sort": "SORT BY",
    "cluster": "CLUSTER BY",
    "distribute": "DISTRIBUTE BY",
    "offset": "OFFSET",
    "pivots": "PIVOT",
    "hint": "a query hint",
    "into": "SELECT INTO",
    "settings": "SETTINGS",
    "sample": "TABLESAMPLE",
}

_SET_OPERATIONS: dict[type[exp.Expr], str] = {
    exp.Union: "UNION",
    exp.Intersect: "INTERSECT",
    exp.Except: "EXCEPT",
}

_NESTED: list[tuple[type[exp.Expression], str, str]] = [
    (exp.Join, "JOIN", "a query reads one view"),
    (exp.Window, "a window function (OVER ...)", "use GROUP BY with window(...) instead"),
    (exp.Subquery, "a subquery", "register the inner query as a view instead"),
    (exp.Exists, "a subquery (EXISTS)", ""),
    (exp.Lateral, "LATERAL VIEW", ""),
    (exp.Pivot, "PIVOT", ""),
]


def check_statement(tree: exp.Expr) -> exp.Select:
    """The tree's one ``SELECT``, or :class:`UnsupportedSqlError` naming what is not
    supported (set operations, CTEs, joins, subqueries, window functions, other clauses,
    statements other than ``SELECT``)."""
    for kind, name in _SET_OPERATIONS.items():
        if isinstance(tree, kind):
            raise UnsupportedSqlError(name)
    if not isinstance(tree, exp.Select):
        raise UnsupportedSqlError(f"{tree.key.upper()} statements", "only SELECT is supported")
    _check_clauses(tree)
    for kind, name, hint in _NESTED:
        if tree.find(kind) is not None:
            raise UnsupportedSqlError(name, hint)
    if any(isinstance(n, exp.Select) for n in tree.find_all(exp.Select) if n is not tree):
        raise UnsupportedSqlError("a subquery", "register the inner query as a view instead")
    _check_group(tree)
    return tree


def _check_clauses(select: exp.Select) -> None:
    for key, value in select.args.items():
        if key in CLAUSES or value in (None, False, []):
            continue
        raise UnsupportedSqlError(_CLAUSE_NAMES.get(key, f"the {key.upper()} clause"))
    if select.args.get("from_", select.args.get("from")) is None:
        raise UnsupportedSqlError("SELECT without FROM", "select from a registered view")


def _check_group(select: exp.Select) -> None:
    group = select.args.get("group")
    if group is None:
        return
    for key in ("rollup", "cube", "grouping_sets", "totals"):
        if group.args.get(key):
            raise UnsupportedSqlError(f"GROUP BY {key.upper().replace('_', ' ')}")
    for item in group.expressions:
        for kind, name in ((exp.Rollup, "ROLLUP"), (exp.Cube, "CUBE")):
            if isinstance(item, kind):
                raise UnsupportedSqlError(f"GROUP BY {name}")
        if isinstance(item, exp.GroupingSets):
            raise UnsupportedSqlError("GROUP BY GROUPING SETS")


def from_table(select: exp.Select) -> exp.Table:
    """The one view of ``FROM``, refusing qualified names, samples and non-table sources."""
    clause = select.args.get("from_", select.args.get("from"))
    source = clause.this if clause is not None else None
    if not isinstance(source, exp.Table):
        what = "VALUES" if isinstance(source, exp.Values) else "FROM anything but a view name"
        raise UnsupportedSqlError(what)
    if source.args.get("db") or source.args.get("catalog"):
        raise UnsupportedSqlError(f"qualified table name {source.sql(dialect='spark')}")
    for key in ("sample", "joins", "laterals", "pivots"):
        if source.args.get(key):
            raise UnsupportedSqlError(_CLAUSE_NAMES.get(key, key.upper()))
    return source
