"""SQL joins build the plan the DataFrame API's ``join`` builds (compared by ``explain``),
resolve qualified and unqualified names as Spark does, rename what both views call the
same, and refuse what the DataFrame API refuses, with the same message. Expected rows are
computed by DuckDB from the same tables."""

from __future__ import annotations

from datetime import timedelta

import duckdb
import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.sql import Catalog, UnsupportedSqlError

C = sk.col
TS = pa.timestamp("us", "UTC")
CLICKS = pa.table({"user_id": [1, 2, 3, None, 2], "v": [10, 20, 30, 40, 50], "t": [1, 2, 3, 4, 5]})
USERS = pa.table({"id": [1, 2, 5], "name": ["a", "b", "e"], "t": [7, 8, 9]})
IMPS = pa.schema([("imp_t", TS), ("imp_ad", pa.string())])
CLKS = pa.schema([("click_t", TS), ("click_ad", pa.string())])


@pytest.fixture
def views() -> Catalog:
    catalog = Catalog()
    catalog.register("clicks", sk.from_arrow(CLICKS))
    catalog.register("users", sk.from_arrow(USERS))
    catalog.register("users2", sk.from_arrow(USERS.rename_columns(["user_id", "name", "ut"])))
    return catalog


def test_a_sql_join_is_the_dataframe_join(views: Catalog) -> None:
    clicks, users = sk.from_arrow(CLICKS), sk.from_arrow(USERS).select("id", "name")
    views.register("users", users)
    cases = {
        "SELECT * FROM clicks c JOIN users u ON c.user_id = u.id": clicks.join(
            users, C("user_id") == C("id"), "inner"
        ),
        "SELECT * FROM clicks c LEFT OUTER JOIN users u ON u.id = c.user_id AND c.v > 15": (
            clicks.join(users, (C("user_id") == C("id")) & (C("v") > 15), "left")
        ),
    }
    for query, frame in cases.items():
        assert sk.sql(query, catalog=views).plan.explain() == frame.plan.explain(), query


def test_a_stream_stream_sql_join_is_the_dataframe_join() -> None:
    imps = sk.read_stream.memory(IMPS).with_watermark("imp_t", "10 seconds")
    clicks = sk.read_stream.memory(CLKS).with_watermark("click_t", "5 seconds")
    catalog = Catalog()
    catalog.register("imps", imps)
    catalog.register("clicks", clicks)
    query = (
        "SELECT * FROM imps i JOIN clicks c ON i.imp_ad = c.click_ad"
        " AND c.click_t BETWEEN i.imp_t AND i.imp_t + INTERVAL 1 HOUR"
    )
    frame = imps.join(
        clicks,
        (C("imp_ad") == C("click_ad"))
        & (C("click_t") >= C("imp_t"))
        & (C("click_t") <= C("imp_t") + timedelta(hours=1)),
        "inner",
    )
    ours = sk.sql(query, catalog=catalog)
    assert ours.plan.explain() == frame.plan.explain()
    join = ours.plan
    assert [(b.left_col, b.right_col, b.op, b.offset_ns) for b in join.bounds] == [  # type: ignore[attr-defined]
        ("imp_t", "click_t", "<=", 0),
        ("imp_t", "click_t", ">=", -3600 * 10**9),
    ]


def test_same_named_columns_are_renamed_under_the_watermark() -> None:
    schema = pa.schema([("t", TS), ("ad_id", pa.string())])
    catalog = Catalog()
    for view in ("imps", "clicks"):
        catalog.register(view, sk.read_stream.memory(schema).with_watermark("t", "5 seconds"))
    query = (
        "SELECT i.ad_id, i.t AS it, c.t AS ct FROM imps i JOIN clicks c ON i.ad_id = c.ad_id"
        " AND c.t >= i.t AND c.t <= i.t + INTERVAL '1' HOUR"
    )
    frame = sk.sql(query, catalog=catalog)
    assert frame.columns == ["ad_id", "it", "ct"]
    join = frame.plan.chain()[1]
    right = join.children[1]
    assert right.describe() == "Watermark t#c delay=5000000000ns"
    assert [(b.left_col, b.right_col) for b in join.bounds] == [("t", "t#c")] * 2  # type: ignore[attr-defined]


def duck(query: str) -> list[tuple[object, ...]]:
    con = duckdb.connect()
    for name, table in (("clicks", CLICKS), ("users", USERS)):
        con.register(name, table)
    con.register("users2", USERS.rename_columns(["user_id", "name", "ut"]))
    return sorted(con.execute(query).fetchall(), key=repr)


def rows(frame: sk.DataFrame) -> list[tuple[object, ...]]:
    return sorted((tuple(r.values()) for r in frame.to_arrow().to_pylist()), key=repr)


@pytest.mark.parametrize(
    "query",
    [
        "SELECT c.user_id, name, u.t AS ut, c.t FROM clicks c LEFT JOIN users u"
        " ON c.user_id = u.id",
        "SELECT c.v, u.name FROM clicks c RIGHT JOIN users u ON c.user_id = u.id AND c.t < u.t",
        "SELECT user_id, v, name FROM clicks FULL JOIN users2 USING (user_id)",
        "SELECT user_id, clicks.v, users2.name FROM clicks RIGHT JOIN users2 USING (user_id)",
        "SELECT users2.user_id, count(*) AS n, sum(v) AS s FROM clicks JOIN users2"
        " USING (user_id) WHERE v > 10 GROUP BY users2.user_id",
        "SELECT c.* FROM clicks c SEMI JOIN users u ON c.user_id = u.id",
        "SELECT * FROM clicks c ANTI JOIN users u ON c.user_id = u.id",
    ],
)
def test_join_rows_match_duckdb(views: Catalog, query: str) -> None:
    assert rows(sk.sql(query, catalog=views)) == duck(query)


def test_stream_static_refusal_is_the_dataframe_apis(views: Catalog) -> None:
    catalog = Catalog()
    stream = sk.read_stream.memory(pa.schema([("user_id", pa.int64()), ("v", pa.int64())]))
    catalog.register("clicks", stream)
    catalog.register("users", sk.from_arrow(USERS))
    with pytest.raises(sk.PlanError) as api:
        sk.from_arrow(USERS).join(stream, C("id") == C("user_id"), "left")
    with pytest.raises(sk.PlanError) as sql:
        sk.sql("SELECT * FROM users u LEFT JOIN clicks c ON u.id = c.user_id", catalog=catalog)
    assert str(sql.value) == str(api.value)
    assert "Spark refuses it too" in str(sql.value)


def test_three_views_with_two_streams_are_refused_naming_it() -> None:
    catalog = Catalog()
    schema = pa.schema([("t", TS), ("k", pa.string())])
    catalog.register("a", sk.read_stream.memory(schema).with_watermark("t", "1 second"))
    catalog.register("b", sk.read_stream.memory(schema).with_watermark("t", "1 second"))
    catalog.register("c", sk.from_arrow(schema.empty_table()))
    with pytest.raises(UnsupportedSqlError, match="more than two views where two of them"):
        sk.sql(
            "SELECT a.k FROM a JOIN b ON a.k = b.k AND a.t = b.t JOIN c ON a.k = c.k",
            catalog=catalog,
        )


def test_three_batch_views_join_left_to_right(views: Catalog) -> None:
    query = (
        "SELECT c.v, u.name, w.ut FROM clicks c JOIN users u ON c.user_id = u.id"
        " LEFT JOIN users2 w ON w.user_id = u.id"
    )
    assert rows(sk.sql(query, catalog=views)) == duck(query)


def test_a_windowed_count_after_a_stream_stream_join_runs_in_append_mode() -> None:
    """Spark 3.4+'s chain: the join passes on its output watermark (here W - 10 s - 1 ms,
    from ``c.t <= i.t + 10 s``), which closes the window. a and b each pair once in
    [00:00, 00:01); the z rows at 00:10 match nothing and move W to 00:09:55."""
    from datetime import UTC, datetime

    schema = pa.schema([("t", TS), ("ad_id", pa.string())])
    catalog = Catalog()
    streams = {view: sk.read_stream.memory(schema) for view in ("imps", "clicks")}
    for view, stream in streams.items():
        catalog.register(view, stream.with_watermark("t", "5 seconds"))
    counted = sk.sql(
        "SELECT window(c.t, '1 minute') AS w, count(*) AS n FROM imps i JOIN clicks c"
        " ON i.ad_id = c.ad_id AND c.t BETWEEN i.t AND i.t + INTERVAL 10 SECONDS GROUP BY 1",
        catalog=catalog,
    )
    q = counted.write_stream.output_mode("append").memory("join_then_count").start()
    t0 = datetime(2024, 1, 1, tzinfo=UTC)

    def at(second: int, ad: str) -> dict[str, object]:
        return {"t": t0 + timedelta(seconds=second), "ad_id": ad}

    streams["imps"].stream.add_rows([at(0, "a"), at(20, "b")])
    streams["clicks"].stream.add_rows([at(5, "a"), at(25, "b")])
    q.process_all_available()
    streams["imps"].stream.add_rows([at(600, "z1")])
    streams["clicks"].stream.add_rows([at(600, "z2")])
    q.process_all_available()
    q.stop()
    got = sk.memory_table("join_then_count").to_pylist()
    assert [(r["w"]["start"], r["n"]) for r in got] == [(t0, 2)]


def test_a_stream_stream_outer_join_without_a_time_range_is_refused_with_sparks_reason() -> None:
    schema = pa.schema([("t", TS), ("ad_id", pa.string())])
    catalog = Catalog()
    for view in ("imps", "clicks"):
        catalog.register(view, sk.read_stream.memory(schema).with_watermark("t", "5 seconds"))
    query = "SELECT i.ad_id, c.t AS ct FROM imps i LEFT JOIN clicks c ON i.ad_id = c.ad_id"
    with pytest.raises(sk.PlanError, match="Stream-stream LeftOuter join between two streaming"):
        sk.sql(query, catalog=catalog).write_stream.output_mode("append").memory("x").start()


SHARED = [
    "SELECT * FROM clicks c JOIN users u ON c.user_id = u.id",
    "SELECT c.*, u.* FROM clicks c LEFT JOIN users u ON c.user_id = u.id",
    "SELECT * FROM clicks c JOIN users u ON c.user_id = u.id AND c.t < u.t",
]
"""``SELECT *`` where both views have ``t``: PySpark 4.3 returns the columns
``user_id, v, t, id, name, t`` (two named ``t``, batch and stream alike) and fails only
where ``t`` is referenced (AMBIGUOUS_REFERENCE); a streamkit table cannot hold two columns
of one name, so sk.sql refuses the query when it is built, naming the construct."""


@pytest.mark.parametrize("query", SHARED)
def test_select_star_over_shared_names_is_refused_naming_the_construct(
    views: Catalog, query: str
) -> None:
    streams = Catalog()
    clicks = sk.read_stream.memory(CLICKS.schema)
    streams.register("clicks", clicks)
    streams.register("users", sk.from_arrow(USERS))
    for catalog in (views, streams):  # batch, and a stream joined with a table
        with pytest.raises(UnsupportedSqlError) as info:
            sk.sql(query, catalog=catalog)
        construct = "SELECT * over a join whose views share the column name 't'"
        assert info.value.construct == construct
        assert "rename one with AS (e.g. v.t AS v_t)" in str(info.value)


def test_select_star_over_two_streams_sharing_names_is_refused() -> None:
    schema = pa.schema([("t", TS), ("ad_id", pa.string())])
    catalog = Catalog()
    for view in ("imps", "clicks"):
        catalog.register(view, sk.read_stream.memory(schema).with_watermark("t", "5 seconds"))
    with pytest.raises(UnsupportedSqlError, match="share the column name 't'"):
        sk.sql(
            "SELECT * FROM imps i JOIN clicks c ON i.ad_id = c.ad_id"
            " AND c.t BETWEEN i.t AND i.t + INTERVAL 10 SECONDS",
            catalog=catalog,
        )


WORKAROUNDS = [
    "SELECT c.*, u.id, u.name, u.t AS ut FROM clicks c JOIN users u ON c.user_id = u.id",
    "SELECT * FROM clicks JOIN users2 USING (user_id)",
]


@pytest.mark.parametrize("query", WORKAROUNDS)
def test_the_suggested_rewrites_match_duckdb_on_batches_and_streams(
    views: Catalog, query: str
) -> None:
    assert rows(sk.sql(query, catalog=views)) == duck(query)
    streams = Catalog()
    clicks = sk.read_stream.memory(CLICKS.schema)
    streams.register("clicks", clicks)
    streams.register("users", sk.from_arrow(USERS))
    streams.register("users2", sk.from_arrow(USERS.rename_columns(["user_id", "name", "ut"])))
    got: list[tuple[object, ...]] = []

    def collect(frame: sk.DataFrame, _: int) -> None:
        got.extend(tuple(r.values()) for r in frame.to_arrow().to_pylist())

    q = sk.sql(query, catalog=streams).write_stream.foreach_batch(collect).start()
    clicks.stream.add_rows(CLICKS.slice(0, 2))
    q.process_all_available(timeout=120)
    clicks.stream.add_rows(CLICKS.slice(2))
    q.process_all_available(timeout=120)
    q.stop()
    assert sorted(got, key=repr) == duck(query)
