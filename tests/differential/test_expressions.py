"""The DataFrame API's ``when/otherwise``, ``coalesce``, ``like``/``ilike``/``rlike``,
``isin``, ``between``, struct fields and ``window_time`` against PySpark's functions of
the same names, on the same rows (nulls included), as batch jobs."""

from __future__ import annotations

from typing import Any

import pytest

from tests.differential.engines import order
from tests.differential.inputs import micros, random_files, rows_table

pytestmark = [pytest.mark.integration, pytest.mark.spark]

ROWS = [r for f in random_files(31, files=6) for r in f] + [
    (5, "a%b", 3, 1), (6, "A_", None, None), (7, "ab\nc", 9, 2),
]  # fmt: skip


def spark_frame(spark: Any) -> Any:
    data = [(None if r[0] is None else micros(r[0]), *r[1:]) for r in ROWS]
    frame = spark.createDataFrame(data, "ts_us bigint, k string, v bigint, u bigint")
    return frame.selectExpr("timestamp_micros(ts_us) AS ts", "k", "v", "u")


def test_row_expressions_match_spark(spark: Any) -> None:
    from pyspark.sql import functions as F

    import streamkit as sk

    theirs = spark_frame(spark).select(
        F.when(F.col("v") > 5, "hi").when(F.col("v").isNull(), "none").otherwise("lo"),
        F.when(F.col("u") > 2, F.col("v")),
        F.coalesce("v", "u", F.lit(-1)),
        F.col("k").like("a%"), F.col("k").like("a\\%b"), F.col("k").like("_"),
        F.col("k").ilike("a%"), F.col("k").rlike("^[ab]"), F.col("k").rlike("b$"),
        F.col("v").isin(1, 3, 5), F.col("v").between(2, 6),
    )  # fmt: skip
    ours = sk.from_arrow(rows_table(ROWS)).select(
        sk.when(sk.col("v") > 5, "hi")
        .when(sk.col("v").is_null(), "none")
        .otherwise("lo")
        .alias("a"),
        sk.when(sk.col("u") > 2, sk.col("v")).alias("b"),
        sk.coalesce("v", "u", sk.lit(-1)).alias("c"),
        sk.col("k").like("a%").alias("d"), sk.col("k").like("a\\%b").alias("e"),
        sk.col("k").like("_").alias("f"), sk.col("k").ilike("a%").alias("g"),
        sk.col("k").rlike("^[ab]").alias("h"), sk.col("k").rlike("b$").alias("i"),
        sk.col("v").isin(1, 3, 5).alias("j"), sk.col("v").between(2, 6).alias("l"),
    )  # fmt: skip
    expected = sorted((tuple(r) for r in theirs.collect()), key=order)
    assert (
        sorted(zip(*ours.to_polars().to_dict(as_series=False).values(), strict=True), key=order)
        == expected
    )


def test_window_fields_and_window_time_match_spark(spark: Any) -> None:
    from pyspark.sql import functions as F

    import streamkit as sk

    theirs = (
        spark_frame(spark).groupBy(F.window("ts", "10 seconds"), "k").count()
        .select(F.unix_micros(F.col("window").getField("start")), F.unix_micros("window.end"),
                F.unix_micros(F.window_time("window")), "k", "count")
    )  # fmt: skip
    counts = (
        sk.from_arrow(rows_table(ROWS)).group_by(sk.window("ts", "10 seconds"), "k").agg(sk.count())
    )
    ours = counts.select(
        sk.col("window").get_field("start").alias("s"),
        sk.col("window").get_field("end").alias("e"),
        sk.window_time("window").alias("t"),
        "k",
        "count",
    ).to_polars()
    got = [
        (int(s.timestamp() * 1e6), int(e.timestamp() * 1e6), round(t.timestamp() * 1e6), k, n)
        for s, e, t, k, n in ours.iter_rows()
    ]
    assert sorted(got, key=order) == sorted((tuple(r) for r in theirs.collect()), key=order)
