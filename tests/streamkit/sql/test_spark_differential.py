"""The same SQL text through PySpark's ``spark.sql`` and streamkit's ``sk.sql`` on the same
files: batch results equal, and streams (a file stream, one file per micro-batch, the
watermark declared on the view's DataFrame before registering it, append mode) emit the
same batches. Column names are compared only where both engines name them the same way
(Spark calls an unaliased ``count(*)`` ``count(1)``; streamkit follows its DataFrame API).

Rows are compared as tuples: a window struct as its start and end in epoch microseconds,
timestamps in microseconds, floats rounded to 9 places.
"""

from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import streamkit as sk
from streamkit.sql import Catalog
from tests.differential.engines import DEADLINE, Run, order
from tests.differential.inputs import SCHEMA, SPARK_SCHEMA, random_files, rows_table, write_files

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.slow]

FILES = random_files(23, files=10)
Row = tuple[Any, ...]

BATCH = {
    "windowed count by key": "SELECT window(ts, '10 seconds') AS w, k, count(*) AS n"
    " FROM events GROUP BY 1, 2",
    "sliding window sum": "SELECT window(ts, '20 seconds', '10 seconds') AS w, k, sum(v) AS s"
    " FROM events GROUP BY w, k",
    "session window": "SELECT session_window(ts, '5 seconds') AS w, k, count(*) AS n,"
    " max(v) AS hi FROM events GROUP BY 1, 2",
    "WHERE and GROUP BY alias": "SELECT k AS key, count(*) AS n, sum(v * 2) AS s2,"
    " avg(v) AS mean, min(u) AS lo FROM events WHERE v > 0 AND u IS NOT NULL GROUP BY key",
    "WHERE and GROUP BY ordinal, HAVING": "SELECT u, count(v) AS nv, count(DISTINCT k) AS dk"
    " FROM events WHERE k IN ('a', 'b') OR v BETWEEN 3 AND 9 GROUP BY 1 HAVING count(*) > 2",
    "projection": "SELECT k, v * 2 + 1 AS x, CAST(v AS DOUBLE) / 4 AS q, ts FROM events"
    " WHERE NOT (u < 2) AND v IS NOT NULL",
    "TIMESTAMP literal and timestamp_seconds": "SELECT k, timestamp_seconds(u * 60) AS t"
    " FROM events WHERE ts >= TIMESTAMP '2024-01-01 00:00:40' AND u IS NOT NULL",
    "HAVING an alias, ORDER BY an aggregate not selected": "SELECT k, count(*) AS n"
    " FROM events GROUP BY k HAVING n > 2 ORDER BY sum(v) DESC, k",
    "ORDER BY and LIMIT": "SELECT k, count(*) AS n FROM events GROUP BY k"
    " ORDER BY n DESC, k LIMIT 2",
    "CASE, IF, coalesce, LIKE, RLIKE": "SELECT k, CASE WHEN v > 5 THEN 'hi' WHEN v IS NULL"
    " THEN 'none' ELSE 'lo' END AS c, CASE k WHEN 'a' THEN 1 WHEN 'b' THEN 2 END AS kc,"
    " coalesce(v, u, 0) AS co, ifnull(k, 'z') AS kn, k LIKE 'a%' AS l, k NOT LIKE '_' AS nl,"
    " k RLIKE '^[ab]$' AS r, k ILIKE 'A%' AS il, IF(u > 2, v, -1) AS i FROM events",
    "GROUP BY a CASE, WHERE LIKE": "SELECT CASE WHEN v > 5 THEN 'hi' ELSE 'lo' END AS band,"
    " count(*) AS n, sum(coalesce(v, 0)) AS s FROM events WHERE k LIKE '%' OR k IS NULL"
    " GROUP BY 1",
    "window fields": "SELECT window(ts, '10 seconds').start AS s, window(ts, '10 seconds').end"
    " AS e, k, count(*) AS n FROM events GROUP BY window(ts, '10 seconds'), k",
    "NOT IN, NOT BETWEEN, LIKE ESCAPE": "SELECT k, v FROM events WHERE k NOT IN ('a')"
    " AND v NOT BETWEEN 2 AND 4 AND k NOT LIKE 'x!%%' ESCAPE '!'",
}
STREAM = {
    name: BATCH[name] for name in ("windowed count by key", "sliding window sum", "session window")
}
STREAM["append without aggregation"] = "SELECT k, v * 3 AS v3 FROM events WHERE v > 4"
STREAM["CASE, LIKE, RLIKE, coalesce without aggregation"] = (
    "SELECT k, CASE WHEN v > 5 THEN 'hi' ELSE 'lo' END AS c, coalesce(u, -1) AS cu FROM events"
    " WHERE k RLIKE '[a-c]' AND k NOT LIKE 'b%'"
)
STREAM["window fields after a windowed count"] = (
    "SELECT window(ts, '10 seconds').start AS s, window(ts, '10 seconds').end AS e, k,"
    " count(*) AS n FROM events WHERE k LIKE 'a%' OR v BETWEEN 1 AND 5"
    " GROUP BY window(ts, '10 seconds'), k"
)
STREAM["WHERE, HAVING and an expression over aggregates"] = (
    "SELECT window(ts, '10 seconds') AS w, k, count(*) AS n, sum(v) * 2 AS s2 FROM events"
    " WHERE v IS NOT NULL GROUP BY 1, 2 HAVING count(*) >= 2"
)


def spark_rows(frame: Any) -> list[Row]:
    """A Spark result as tuples (conversion done inside Spark, in UTC)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StructType, TimestampType

    cols = []
    for field in frame.schema.fields:
        if isinstance(field.dataType, StructType):
            cols += [F.unix_micros(F.col(f"`{field.name}`.{p}")) for p in ("start", "end")]
        elif isinstance(field.dataType, TimestampType):
            cols.append(F.unix_micros(F.col(f"`{field.name}`")))
        else:
            cols.append(F.col(f"`{field.name}`"))
    return [tuple(_normal(x) for x in row) for row in frame.select(*cols).collect()]


def streamkit_rows(frame: sk.DataFrame) -> list[Row]:
    """A streamkit result as the same tuples."""
    out = []
    for row in frame.to_arrow().to_pylist():
        values: list[Any] = []
        for x in row.values():
            values += [_micros(x["start"]), _micros(x["end"])] if isinstance(x, dict) else [x]
        out.append(tuple(_normal(_micros(x)) for x in values))
    return out


def _micros(x: Any) -> Any:
    return round(x.timestamp() * 1_000_000) if isinstance(x, datetime) else x


def _normal(x: Any) -> Any:
    return round(x, 9) if isinstance(x, float) else x


@pytest.fixture(scope="module")
def files() -> Any:
    with tempfile.TemporaryDirectory(prefix="sql-diff-") as tmp:
        yield write_files(Path(tmp) / "in", FILES, "json")


@pytest.mark.parametrize("name", list(BATCH))
def test_batch_sql_equals_spark_sql(name: str, spark: Any, files: Path) -> None:
    query = BATCH[name]
    spark.read.schema(SPARK_SCHEMA).json(str(files)).createOrReplaceTempView("events")
    theirs = spark.sql(query)
    views = Catalog()
    views.register("events", sk.from_arrow(rows_table([r for rows in FILES for r in rows])))
    ours = sk.sql(query, catalog=views)
    if "ORDER BY" in query:
        assert streamkit_rows(ours) == spark_rows(theirs)
    else:
        assert sorted(streamkit_rows(ours), key=order) == sorted(spark_rows(theirs), key=order)
    assert sorted(streamkit_rows(ours), key=order), "the query should select some rows"
    if "count(*) AS" in query:
        assert ours.columns == theirs.columns


CHAINS = {
    "windowed count, then a 30 s window over window_time": (
        "SELECT window(ts, '10 seconds'), k, count(*) AS n, max(v) AS top FROM events"
        " GROUP BY 1, 2",
        "SELECT window(window_time(window), '30 seconds') AS w, k, sum(n) AS n,"
        " max(top) AS top, count(*) AS windows FROM counts GROUP BY 1, 2",
    ),
}
"""A view ``counts`` registered from the first query over ``events``, then the second
query over ``counts``: two stateful operators in one stream."""


def run_spark(spark: Any, query: str, files: Path, counts: str | None = None) -> Run:
    seen: list[tuple[int, list[Row]]] = []
    with tempfile.TemporaryDirectory(prefix="spark-ck-") as checkpoint:
        stream = spark.readStream.schema(SPARK_SCHEMA).option("maxFilesPerTrigger", 1)
        stream.json(str(files)).withWatermark("ts", "10 seconds").createOrReplaceTempView("events")
        if counts is not None:
            spark.sql(counts).createOrReplaceTempView("counts")
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
    return Run(sorted(seen, key=lambda b: b[0]))


def run_streamkit(query: str, files: Path, counts: str | None = None) -> Run:
    seen: list[tuple[int, list[Row]]] = []
    source = sk.read_stream.files(str(files), format="json", schema=SCHEMA, max_files_per_trigger=1)
    views = Catalog()
    views.register("events", source.with_watermark("ts", "10 seconds"))
    if counts is not None:
        views.register("counts", sk.sql(counts, catalog=views))
    handle = (
        sk.sql(query, catalog=views)
        .write_stream.output_mode("append")
        .trigger(available_now=True)
        .foreach_batch(lambda df, b: seen.append((b, sorted(streamkit_rows(df), key=order))))
        .start()
    )
    assert handle.await_termination(timeout=DEADLINE), f"streamkit did not finish {query}"
    assert handle.exception is None, repr(handle.exception)
    return Run(sorted(seen, key=lambda b: b[0]))


@pytest.mark.parametrize("name", list(STREAM))
def test_stream_sql_emits_spark_sql_batches(name: str, spark: Any, files: Path) -> None:
    query = STREAM[name]
    theirs, ours = run_spark(spark, query, files), run_streamkit(query, files)
    assert ours.final("append") == theirs.final("append")
    assert ours.batches == theirs.batches
    assert ours.final("append"), "the stream should emit rows"


@pytest.mark.parametrize("name", list(CHAINS))
def test_stream_sql_over_an_aggregated_view_emits_spark_batches(
    name: str, spark: Any, files: Path
) -> None:
    counts, query = CHAINS[name]
    theirs = run_spark(spark, query, files, counts)
    ours = run_streamkit(query, files, counts)
    assert ours.batches == theirs.batches
    assert ours.final("append"), "the stream should emit rows"


@pytest.mark.parametrize("name", list(CHAINS))
def test_batch_sql_over_an_aggregated_view_equals_spark(name: str, spark: Any, files: Path) -> None:
    counts, query = CHAINS[name]
    spark.read.schema(SPARK_SCHEMA).json(str(files)).createOrReplaceTempView("events")
    spark.sql(counts).createOrReplaceTempView("counts")
    views = Catalog()
    views.register("events", sk.from_arrow(rows_table([r for rows in FILES for r in rows])))
    views.register("counts", sk.sql(counts, catalog=views))
    ours = sorted(streamkit_rows(sk.sql(query, catalog=views)), key=order)
    assert ours == sorted(spark_rows(spark.sql(query)), key=order)
    assert ours
