"""The SQL subset, checked on the parsed tree before any translation: everything outside
it is refused with :class:`UnsupportedSqlError` naming the construct.

Accepted: one ``SELECT`` from one view or from views joined with ``[INNER] JOIN``,
``LEFT/RIGHT/FULL [OUTER] JOIN``, ``[LEFT] SEMI/ANTI JOIN`` (``ON`` or ``USING``), with
``WHERE``, ``GROUP BY``, ``HAVING``, ``ORDER BY`` and ``LIMIT``. Expressions are
checked while they are translated (:mod:`streamkit.sql.expressions`), so an unknown
function is refused there by name.
"""

from __future__ import annotations

from sqlglot import exp

from streamkit.sql.errors import UnsupportedSqlError

CLAUSES = frozenset(
    {"expressions", "from", "from_", "joins", "where", "group", "having", "order", "limit"}
)
"""``Select`` arguments the translator reads; any other that is set is refused."""

_CLAUSE_NAMES = {
    "with": "WITH (a common table expression)",
    "with_": "WITH (a common table expression)",
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
    for join in tree.args.get("joins") or []:
        join_type(join)
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


_JOIN_ARGS = frozenset({"this", "on", "using", "side", "kind"})
_SIDES = {"": "inner", "LEFT": "left", "RIGHT": "right", "FULL": "full"}


def join_type(join: exp.Join) -> str:
    """The DataFrame API's ``how`` for one ``JOIN`` (``inner``, ``left``, ``right``,
    ``full``, ``left_semi``, ``left_anti``); refuses NATURAL, CROSS (and ``FROM a, b``),
    a join without ``ON`` or ``USING``, and a join of anything but a view name."""
    method = str(join.args.get("method") or "").upper()
    side = str(join.args.get("side") or "").upper()
    kind = str(join.args.get("kind") or "").upper()
    if method:
        raise UnsupportedSqlError(f"{method} JOIN", "name the join columns with USING (...)")
    if kind == "CROSS":
        raise UnsupportedSqlError(
            "CROSS JOIN (or FROM a, b)", "join ON an equality between the views' columns"
        )
    for key, value in join.args.items():
        if key not in _JOIN_ARGS and value not in (None, False, []):
            raise UnsupportedSqlError(f"{join.sql(dialect='spark')} ({key.upper()})")
    target = join.this
    if not isinstance(target, exp.Table):
        raise UnsupportedSqlError("JOIN of anything but a view name", "register it as a view")
    if target.args.get("db") or target.args.get("catalog"):
        raise UnsupportedSqlError(f"qualified table name {target.sql(dialect='spark')}")
    on, using = join.args.get("on"), join.args.get("using")
    if not using and (on is None or isinstance(on, exp.Boolean)):
        raise UnsupportedSqlError(
            f"JOIN {target.sql(dialect='spark')} without ON or USING (a cross join)",
            "join ON an equality between the views' columns",
        )
    if kind in ("SEMI", "ANTI"):
        if side not in ("", "LEFT"):
            raise UnsupportedSqlError(f"{side} {kind} JOIN", f"use LEFT {kind} JOIN")
        return f"left_{kind.lower()}"
    if kind not in ("", "INNER", "OUTER") or (kind == "OUTER" and not side) or side not in _SIDES:
        raise UnsupportedSqlError(f"{side} {kind} JOIN".strip())
    return _SIDES[side]


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
