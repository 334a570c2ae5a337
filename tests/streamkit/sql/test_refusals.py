"""Unsupported SQL is refused when ``sk.sql`` is called, with a typed error naming the
construct; invalid SQL gets a message saying what is wrong."""

from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.errors import ColumnNotFoundError, MissingDependencyError, PlanError
from streamkit.sql import Catalog, SqlError, SqlSyntaxError, UnknownViewError, UnsupportedSqlError

SCHEMA = pa.schema([("ts", pa.timestamp("us", "UTC")), ("k", pa.string()), ("v", pa.int64())])


@pytest.fixture
def catalog() -> Catalog:
    views = Catalog()
    views.register("t", sk.from_arrow(SCHEMA.empty_table()))
    views.register("u", sk.from_arrow(SCHEMA.empty_table()))
    return views


REFUSED = {
    "SELECT t.k FROM t, u": "CROSS JOIN (or FROM a, b)",
    "SELECT t.k FROM t CROSS JOIN u": "CROSS JOIN",
    "SELECT t.k FROM t NATURAL JOIN u": "NATURAL JOIN",
    "SELECT t.k FROM t NATURAL LEFT JOIN u": "NATURAL JOIN",
    "SELECT t.k FROM t JOIN u": "without ON or USING",
    "SELECT t.k FROM t JOIN (SELECT k FROM u) x ON t.k = x.k": "JOIN of anything but a view",
    "SELECT t.k FROM t JOIN db.u ON t.k = u.k": "qualified table name",
    "SELECT u.k FROM t LEFT JOIN u USING (k)": "u.k (a USING key of an outer join",
    "SELECT t.k FROM t RIGHT JOIN u USING (k)": "t.k (a USING key of an outer join",
    "SELECT u.* FROM t FULL JOIN u USING (k)": "u.k (a USING key of an outer join",
    "SELECT t.k FROM t JOIN u ON t.k = u.k AND t.ts < u.ts + INTERVAL 1 MONTH": "INTERVAL",
    "SELECT k FROM (SELECT k FROM t)": "subquery",
    "SELECT k FROM t WHERE k IN (SELECT k FROM u)": "subquery",
    "SELECT k FROM t WHERE EXISTS (SELECT 1 FROM u)": "subquery",
    "SELECT k, row_number() OVER (PARTITION BY k ORDER BY ts) FROM t": "window function",
    "SELECT k, sum(v) OVER (PARTITION BY k) FROM t": "window function",
    "SELECT k FROM t UNION SELECT k FROM u": "UNION",
    "SELECT k FROM t UNION ALL SELECT k FROM u": "UNION",
    "SELECT k FROM t INTERSECT SELECT k FROM u": "INTERSECT",
    "SELECT k FROM t EXCEPT SELECT k FROM u": "EXCEPT",
    "WITH x AS (SELECT k FROM t) SELECT k FROM x": "WITH",
    "SELECT DISTINCT k FROM t": "SELECT DISTINCT",
    "SELECT v % 2 FROM t": "%",
    "SELECT v DIV 2 FROM t": "DIV",
    "SELECT k FROM t WHERE k LIKE k": "LIKE with a pattern that is not a string literal",
    "SELECT k FROM t WHERE k RLIKE k": "RLIKE with a pattern that is not a string literal",
    "SELECT k <=> 'a' FROM t": "<=> (null-safe equality)",
    "SELECT upper(k).x FROM t": "function upper",
    "SELECT upper(k) FROM t": "function upper",
    "SELECT stddev(v) FROM t": "aggregate function stddev",
    "SELECT sum(DISTINCT v) FROM t": "sum(DISTINCT",
    "SELECT count(*) FILTER (WHERE v > 1) FROM t": "FILTER",
    "SELECT k, count(*) FROM t GROUP BY ROLLUP(k)": "ROLLUP",
    "SELECT k FROM t LIMIT 1 OFFSET 1": "OFFSET",
    "SELECT k FROM db.t": "qualified table name",
    "SELECT window(ts, '1 hour') FROM t": "window() outside GROUP BY",
    "SELECT CAST(v AS DECIMAL(10, 2)) FROM t": "CAST to DECIMAL",
    "INSERT INTO t SELECT * FROM u": "INSERT statements",
    "SELECT * EXCEPT (k) FROM t": "SELECT * EXCEPT",
    # Spark returns two columns of one name; a streamkit table cannot hold them
    "SELECT k, k FROM t": "two result columns named 'k'",
    "SELECT * FROM t JOIN u ON t.k = u.k": "SELECT * over a join whose views share the column "
    "name 'ts'",
}


@pytest.mark.parametrize("query", list(REFUSED))
def test_unsupported_sql_is_refused_naming_the_construct(query: str, catalog: Catalog) -> None:
    with pytest.raises(UnsupportedSqlError, match="not supported in streamkit SQL") as info:
        sk.sql(query, catalog=catalog)
    assert REFUSED[query] in info.value.construct
    assert isinstance(info.value, PlanError)


def test_cross_join_message_is_the_documented_one(catalog: Catalog) -> None:
    with pytest.raises(UnsupportedSqlError, match=r"^CROSS JOIN \(or FROM a, b\) is not supported"):
        sk.sql("SELECT t.k FROM t CROSS JOIN u", catalog=catalog)


INVALID = {
    "SELECT k, v, count(*) FROM t GROUP BY k": "neither in GROUP BY nor inside an aggregate",
    "SELECT k, count(*) FROM t GROUP BY 3": "not a position in the SELECT list",
    "SELECT k, count(*) FROM t GROUP BY 2": "refers to an aggregate",
    "SELECT k FROM t WHERE count(*) > 1": "not allowed here",
    "SELECT sum(max(v)) FROM t": "inside another aggregate",
    "SELECT x.w.start FROM t": "'x' is not the view of FROM",
    "SELECT k FROM t; SELECT k FROM u": "one statement",
    "SELECT window(ts, 10) AS w, count(*) FROM t GROUP BY 1": "window duration",
    "SELECT k FROM t JOIN u ON t.k = u.k": "column 'k' is ambiguous: it is a column of t and u",
    "SELECT t.k FROM t JOIN t ON t.k = t.k": "two views of FROM are called 't'",
    "SELECT x.w.start FROM t JOIN u ON t.k = u.k": "'x' is not the view of FROM",
}


@pytest.mark.parametrize("query", list(INVALID))
def test_invalid_sql_says_what_is_wrong(query: str, catalog: Catalog) -> None:
    with pytest.raises(SqlError, match=INVALID[query]):
        sk.sql(query, catalog=catalog)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("SELECT CASE WHEN v > 1 THEN 1 ELSE 'x' END FROM t", "different kinds.*cast"),
        ("SELECT CASE WHEN k THEN 1 END FROM t", "needs a boolean condition"),
        ("SELECT k FROM t WHERE k LIKE 'a!b' ESCAPE '!'", "must be followed by %, _ or itself"),
        ("SELECT k FROM t WHERE v LIKE '1%'", "like needs strings"),
        ("SELECT k FROM t WHERE k RLIKE '('", "rlike pattern '\\(' is invalid"),
        ("SELECT coalesce(k, v) FROM t", "coalesce needs values of one kind"),
        ("SELECT window_time(ts) FROM t", "window_time needs the window column"),
    ],
)
def test_type_errors_of_the_new_expressions_say_what_to_do(
    query: str, message: str, catalog: Catalog
) -> None:
    with pytest.raises(PlanError, match=message):
        sk.sql(query, catalog=catalog)


def test_struct_fields_of_what_is_no_struct_say_so(catalog: Catalog) -> None:
    with pytest.raises(ColumnNotFoundError, match="'w' not found"):
        sk.sql("SELECT w.start FROM t", catalog=catalog)
    with pytest.raises(PlanError, match="not a struct: it has no field 'start'"):
        sk.sql("SELECT k.start FROM t", catalog=catalog)


def test_syntax_errors_unknown_views_and_columns(catalog: Catalog) -> None:
    with pytest.raises(SqlSyntaxError, match="not valid Spark SQL"):
        sk.sql("SELEC k FROM t", catalog=catalog)
    with pytest.raises(UnknownViewError, match=r"no view named 'nope'.*views: 't', 'u'"):
        sk.sql("SELECT k FROM nope", catalog=catalog)
    with pytest.raises(ColumnNotFoundError, match="'missing' not found"):
        sk.sql("SELECT missing FROM t", catalog=catalog)


@pytest.mark.parametrize("clause", ["ORDER BY k", "LIMIT 3"])
def test_order_by_and_limit_are_refused_on_a_stream(clause: str) -> None:
    views = Catalog()
    views.register("s", sk.read_stream.memory(SCHEMA))
    with pytest.raises(UnsupportedSqlError, match=f"{clause.split(maxsplit=1)[0]}.* on a stream"):
        sk.sql(f"SELECT k, v FROM s {clause}", catalog=views)


def test_sqlglot_is_imported_only_by_a_query_and_its_absence_names_the_extra() -> None:
    probe = (
        "import sys\n"
        "import streamkit as sk\n"
        "assert 'sqlglot' not in sys.modules, 'import streamkit loaded sqlglot'\n"
        "assert callable(sk.sql)\n"
        "sys.modules['sqlglot'] = None\n"
        "try:\n"
        "    sk.sql('SELECT 1 FROM t')\n"
        "except ImportError as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=300, check=True).stdout  # fmt: skip
    assert out.startswith(MissingDependencyError.__name__)
    assert "pip install 'streamkit[sql]'" in out
