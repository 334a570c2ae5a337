"""SQL joins: the same SQL text through PySpark's ``spark.sql`` and streamkit's ``sk.sql``
on the same inputs, with the harness of ``test_spark_differential.py`` (file streams, one
file per micro-batch, ``available_now``, append mode, every batch compared).

- batch joins of every type (ON with qualified and overlapping column names, USING, a
  residual condition, a join followed by WHERE and GROUP BY);
- stream-static joins: ``events`` (a stream with a watermark) with ``users`` (a batch
  table whose ``u`` and ``v`` are also columns of ``events``), inner, left outer, USING,
  static on the left of a right outer join, and a left outer join followed by a windowed
  count in append mode;
- stream-stream joins of ``clicks`` and ``impressions`` (both ``t, ad_id, v``: the same
  names on both sides) with a time range in ON, written with BETWEEN and with >= / <=,
  inner and left outer, on a hand-made input and seeded random ones;
- the joins Spark refuses, refused by streamkit with Spark's reason.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.sql import Catalog, UnsupportedSqlError
from tests.differential.engines import DEADLINE, order
from tests.differential.inputs import SCHEMA, SPARK_SCHEMA, random_files, rows_table, write_files
from tests.differential.test_joins_stream import SideFiles, random_side, write_side
from tests.streamkit.sql.test_spark_differential import Row, spark_rows, streamkit_rows

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.slow]

FILES = random_files(31, files=10)
USERS = pa.table(
    {
        "u": [1, 2, 2, 3, None, 9],
        "name": ["ann", "bob", "bea", "cy", "nil", "zed"],
        "v": [5, 0, 12, 8, 3, 1],
    }
)
"""``u`` 2 twice (two rows per match), 0, 4, 5 and 6 absent (unmatched events), a null
``u`` (never matched), 9 that no event has; ``v`` is also a column of ``events``."""
USERS_DDL = "u bigint, name string, v bigint"

BATCH = {
    "inner ON, qualified and overlapping names": "SELECT e.k, e.v, s.name, s.v AS sv, e.ts"
    " FROM events e JOIN users s ON e.u = s.u",
    "left outer ON with a residual condition": "SELECT e.k, e.u, e.v, s.name, s.v AS sv"
    " FROM events AS e LEFT OUTER JOIN users AS s ON e.u = s.u AND e.v > s.v",
    "right outer": "SELECT e.k, s.u AS su, s.name FROM events e RIGHT JOIN users s ON e.u = s.u",
    "full outer": "SELECT e.k, e.u, s.u AS su, s.name FROM events e FULL OUTER JOIN users s"
    " ON s.u = e.u",
    "USING, unqualified key": "SELECT u, k, name, events.v FROM events LEFT JOIN users USING (u)",
    "left semi": "SELECT k, v, u FROM events e LEFT SEMI JOIN users s ON e.u = s.u",
    "left anti": "SELECT e.* FROM events e LEFT ANTI JOIN users s ON e.u = s.u",
    "join, WHERE, GROUP BY": "SELECT s.name, count(*) AS n, sum(e.v) AS total FROM events e"
    " LEFT JOIN users s ON e.u = s.u WHERE e.v IS NOT NULL AND e.k <> 'c' GROUP BY s.name",
    "join, unaliased aggregates of renamed columns": "SELECT s.name, sum(s.v), max(e.v),"
    " avg(s.v + e.v) AS a FROM events e JOIN users s ON e.u = s.u GROUP BY s.name",
    "e.* beside the other view's renamed columns": "SELECT e.*, s.name, s.v AS sv"
    " FROM events e JOIN users s ON e.u = s.u",
    "join, windowed GROUP BY, HAVING": "SELECT window(e.ts, '10 seconds') AS w, name,"
    " count(*) AS n FROM events e JOIN users s USING (u) GROUP BY 1, 2 HAVING count(*) > 1",
}


@pytest.mark.parametrize("name", list(BATCH))
def test_batch_sql_join_equals_spark_sql(name: str, spark: Any) -> None:
    query = BATCH[name]
    spark.createDataFrame(
        [tuple(r.values()) for r in rows_table(_all(FILES)).to_pylist()], SPARK_SCHEMA
    ).createOrReplaceTempView("events")
    _spark_users(spark).createOrReplaceTempView("users")
    theirs = spark.sql(query)
    views = Catalog()
    views.register("events", sk.from_arrow(rows_table(_all(FILES))))
    views.register("users", sk.from_arrow(USERS))
    ours = sk.sql(query, catalog=views)
    assert ours.columns == theirs.columns
    mine = sorted(streamkit_rows(ours), key=order)
    assert mine == sorted(spark_rows(theirs), key=order)
    assert mine, "the query should select some rows"


def test_select_star_over_shared_names_spark_returns_twins_streamkit_refuses(
    spark: Any, events: Path
) -> None:
    """Spark's ``SELECT *`` over views that share ``u`` and ``v`` returns two columns of
    each name, on a batch and from a stream; streamkit refuses the query when it is built
    (a streamkit table cannot hold two columns of one name), naming the first twin."""
    query = "SELECT * FROM events e JOIN users s ON e.u = s.u"
    twins = ["ts", "k", "v", "u", "u", "name", "v"]
    spark.createDataFrame(
        [tuple(r.values()) for r in rows_table(_all(FILES)).to_pylist()], SPARK_SCHEMA
    ).createOrReplaceTempView("events")
    _spark_users(spark).createOrReplaceTempView("users")
    assert spark.sql(query).columns == twins
    spark.readStream.schema(SPARK_SCHEMA).json(str(events)).createOrReplaceTempView("events")
    assert spark.sql(query).columns == twins
    batch, stream = Catalog(), Catalog()
    batch.register("events", sk.from_arrow(rows_table(_all(FILES))))
    stream.register("events", sk.read_stream.files(str(events), format="json", schema=SCHEMA))
    for catalog in (batch, stream):
        catalog.register("users", sk.from_arrow(USERS))
        with pytest.raises(UnsupportedSqlError) as info:
            sk.sql(query, catalog=catalog)
        assert info.value.construct == "SELECT * over a join whose views share the column name 'v'"


def _all(files: list[Any]) -> list[Any]:
    return [r for rows in files for r in rows]


def _spark_users(spark: Any) -> Any:
    return spark.createDataFrame([tuple(r.values()) for r in USERS.to_pylist()], USERS_DDL)


# -- streams ---------------------------------------------------------------------------
Batches = list[tuple[int, list[Row]]]
SparkViews = Callable[[Any], None]
OurViews = Callable[[Catalog], None]


def run_spark(spark: Any, query: str, views: SparkViews) -> Batches:
    seen: Batches = []
    with tempfile.TemporaryDirectory(prefix="spark-ck-") as checkpoint:
        views(spark)
        handle = (
            spark.sql(query)
            .writeStream.outputMode("append")
            .trigger(availableNow=True)
            .option("checkpointLocation", checkpoint)
            .foreachBatch(lambda df, b: seen.append((b, sorted(spark_rows(df), key=order))))
            .start()
        )
        assert handle.awaitTermination(DEADLINE), f"Spark did not finish {query}"
        assert handle.exception() is None, handle.exception()
    return sorted(seen, key=lambda b: b[0])


def run_streamkit(query: str, views: OurViews) -> Batches:
    seen: Batches = []
    catalog = Catalog()
    views(catalog)
    handle = (
        sk.sql(query, catalog=catalog)
        .write_stream.output_mode("append")
        .trigger(available_now=True)
        .foreach_batch(lambda df, b: seen.append((b, sorted(streamkit_rows(df), key=order))))
        .start()
    )
    assert handle.await_termination(timeout=DEADLINE), f"streamkit did not finish {query}"
    assert handle.exception is None, repr(handle.exception)
    return sorted(seen, key=lambda b: b[0])


def assert_same_batches(ours: Batches, theirs: Batches) -> None:
    assert [b for b, _ in ours] == [b for b, _ in theirs], "batch ids differ"
    for (bid, rows), (_, their_rows) in zip(ours, theirs, strict=True):
        assert rows == their_rows, f"batch {bid}: streamkit {rows} vs Spark {their_rows}"
    assert any(rows for _, rows in theirs), "the stream should emit rows"


STREAM_STATIC = {
    "inner ON": "SELECT e.k, e.v, s.name, s.v AS sv FROM events e JOIN users s ON e.u = s.u",
    "left outer ON": "SELECT e.k, e.u, s.name, s.v AS sv FROM events e LEFT OUTER JOIN users s"
    " ON e.u = s.u",
    "left outer USING, WHERE": "SELECT u, k, name FROM events LEFT JOIN users USING (u)"
    " WHERE events.v > 0",
    "static on the left of a right outer join": "SELECT s.name, e.k, e.v FROM users s"
    " RIGHT JOIN events e ON s.u = e.u",
    "left outer join, then a windowed count": "SELECT window(e.ts, '10 seconds') AS w,"
    " s.name, count(*) AS n, sum(e.v) AS total FROM events e LEFT JOIN users s"
    " ON e.u = s.u GROUP BY 1, 2",
}


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_files(tmp_path_factory.mktemp("sql-joins") / "events", FILES, "json")


@pytest.mark.parametrize("name", list(STREAM_STATIC))
def test_stream_static_sql_join_emits_spark_batches(name: str, spark: Any, events: Path) -> None:
    query = STREAM_STATIC[name]

    def spark_views(session: Any) -> None:
        reader = session.readStream.schema(SPARK_SCHEMA).option("maxFilesPerTrigger", 1)
        reader.json(str(events)).withWatermark("ts", "10 seconds").createOrReplaceTempView("events")
        _spark_users(session).createOrReplaceTempView("users")

    def our_views(catalog: Catalog) -> None:
        stream = sk.read_stream.files(
            str(events), format="json", schema=SCHEMA, max_files_per_trigger=1
        )
        catalog.register("events", stream.with_watermark("ts", "10 seconds"))
        catalog.register("users", sk.from_arrow(USERS))

    assert_same_batches(run_streamkit(query, our_views), run_spark(spark, query, spark_views))


RANGE_BETWEEN = (
    "SELECT c.ad_id, c.t AS ct, c.v AS cv, i.t AS it, i.v AS iv FROM clicks c"
    " JOIN impressions i ON c.ad_id = i.ad_id"
    " AND c.t BETWEEN i.t AND i.t + INTERVAL 10 SECONDS"
)
RANGE_COMPARISONS = (
    "SELECT i.ad_id, i.t AS it, i.v AS iv, c.t AS ct, c.v AS cv FROM impressions i"
    " {how} JOIN clicks c ON i.ad_id = c.ad_id"
    " AND c.t >= i.t - INTERVAL 5 SECONDS AND c.t <= i.t + INTERVAL '10' SECOND"
)
STREAM_STREAM = {
    "inner, BETWEEN": RANGE_BETWEEN,
    "inner, >= and <=": RANGE_COMPARISONS.format(how="INNER"),
    "left outer, >= and <=": RANGE_COMPARISONS.format(how="LEFT OUTER"),
}
HAND: tuple[SideFiles, SideFiles] = (
    [[(100, "a", 1), (101, "b", 2)], [(130, "a", 3)], [], [(160, "c", 4)]],
    [[(104, "a", 10), (99, "b", 11)], [(135, "a", 12), (120, "b", 13)], [(170, "c", 14)]],
)
"""(impressions, clicks): a104 clicks a100 within 10 s; b99 is before b101 (no match in
the BETWEEN form, a match within the 5 s the other form allows before); a135 clicks a130;
b120 is too late for b101 and its impression goes unmatched (a left outer null row once
the watermark passes it); c170 clicks c160."""
INPUTS: dict[str, tuple[SideFiles, SideFiles]] = {"hand": HAND}
for _seed in (3, 4):
    _rng = random.Random(_seed)
    INPUTS[f"random{_seed}"] = (random_side(_rng, 6, 20), random_side(_rng, 6, 20))


@pytest.mark.parametrize("data", list(INPUTS))
@pytest.mark.parametrize("name", list(STREAM_STREAM))
def test_stream_stream_sql_join_emits_spark_batches(
    name: str, data: str, spark: Any, tmp_path: Path
) -> None:
    query = STREAM_STREAM[name]
    impressions, clicks = INPUTS[data]
    write_side(tmp_path / "impressions", impressions, "t", "ad_id", "v")
    write_side(tmp_path / "clicks", clicks, "t", "ad_id", "v")
    delays = {"impressions": "10 seconds", "clicks": "5 seconds"}

    def spark_views(session: Any) -> None:
        for view, delay in delays.items():
            reader = session.readStream.schema("t timestamp, ad_id string, v bigint")
            stream = reader.option("maxFilesPerTrigger", 1).json(str(tmp_path / view))
            stream.withWatermark("t", delay).createOrReplaceTempView(view)

    def our_views(catalog: Catalog) -> None:
        ts = pa.timestamp("us", "UTC")
        schema = pa.schema([("t", ts), ("ad_id", pa.string()), ("v", pa.int64())])
        for view, delay in delays.items():
            stream = sk.read_stream.files(
                str(tmp_path / view), format="json", schema=schema, max_files_per_trigger=1
            )
            catalog.register(view, stream.with_watermark("t", delay))

    theirs = run_spark(spark, query, spark_views)
    assert_same_batches(run_streamkit(query, our_views), theirs)


# -- refusals --------------------------------------------------------------------------
REFUSED = {
    "a stream on the right of a left outer join": (
        "SELECT s.name, e.k FROM users s LEFT JOIN events e ON s.u = e.u",
        "LeftOuter join with a streaming DataFrame/Dataset on the right and a static "
        "DataFrame/Dataset on the left is not supported",
    ),
    "a full outer stream-static join": (
        "SELECT s.name, e.k FROM events e FULL JOIN users s ON s.u = e.u",
        "FullOuter joins with streaming DataFrames/Datasets on the left and a static "
        "DataFrame/Dataset on the right is not supported",
    ),
    "a stream-stream join without an equality": (
        "SELECT e.k, f.k AS fk FROM events e JOIN more f ON e.ts BETWEEN f.ts AND"
        " f.ts + INTERVAL 10 SECONDS",
        "Stream-stream join without equality predicate is not supported",
    ),
}


def spark_refusal(spark: Any, query: str) -> str:
    """Spark's error for ``query``: raised by ``start()`` (the checker of unsupported
    operations) or by the query's first batch (its planner)."""
    try:
        with tempfile.TemporaryDirectory(prefix="spark-ck-") as checkpoint:
            handle = (
                spark.sql(query).writeStream.format("memory").queryName("refused")
                .option("checkpointLocation", checkpoint).trigger(availableNow=True).start()
            )  # fmt: skip
            handle.awaitTermination(DEADLINE)
            error = handle.exception()
    except Exception as exc:
        return str(exc)
    assert error is not None, f"Spark ran {query}"
    return str(error)


@pytest.mark.parametrize("name", list(REFUSED))
def test_joins_spark_refuses_are_refused_with_its_reason(
    name: str, spark: Any, events: Path
) -> None:
    query, reason = REFUSED[name]
    for view in ("events", "more"):
        reader = spark.readStream.schema(SPARK_SCHEMA).json(str(events))
        reader.withWatermark("ts", "10 seconds").createOrReplaceTempView(view)
    _spark_users(spark).createOrReplaceTempView("users")
    assert reason in spark_refusal(spark, query), "Spark's reason is not what this test expects"
    catalog = Catalog()
    for view in ("events", "more"):
        stream = sk.read_stream.files(str(events), format="json", schema=SCHEMA)
        catalog.register(view, stream.with_watermark("ts", "10 seconds"))
    catalog.register("users", sk.from_arrow(USERS))
    with pytest.raises(sk.PlanError, match="Spark refuses it too") as ours:
        sk.sql(query, catalog=catalog)
    assert reason in str(ours.value)
