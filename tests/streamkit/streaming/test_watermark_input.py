"""The rows a filter rejects do not move the watermark when Spark's optimizer would run
that filter below its watermark node: conjuncts that do not read the event-time column,
and every filter declared before ``with_watermark`` (PySpark agrees: the SQL differential
case "window fields after a windowed count" filters with ``LIKE ... OR BETWEEN``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.streaming.incremental import IncrementalQuery
from tests.differential.inputs import SCHEMA

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def rows(*items: tuple[int, str | None]) -> pl.DataFrame:
    return pl.DataFrame(
        {"ts": [T0 + timedelta(seconds=s) for s, _ in items], "k": [k for _, k in items],
         "v": [1] * len(items), "u": [0] * len(items)},
        schema={"ts": pl.Datetime("us", "UTC"), "k": pl.String, "v": pl.Int64, "u": pl.Int64},
    )  # fmt: skip


def watermark_after(frame: sk.DataFrame) -> int | None:
    q = IncrementalQuery(frame.plan, "append")
    q.run(rows((10, "a"), (100, "b")))
    return q.watermark


def seconds(wm: int | None) -> float | None:
    return None if wm is None else wm / 1e6 - T0.timestamp()


STREAM = sk.read_stream.memory(SCHEMA)


def count(frame: sk.DataFrame) -> sk.DataFrame:
    return frame.group_by(sk.window("ts", "10 seconds")).agg(sk.count())


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda: count(STREAM.with_watermark("ts", "5 seconds")), 95),
        (lambda: count(STREAM.with_watermark("ts", "5 seconds").filter(sk.col("k") == "a")), 5),
        (lambda: count(STREAM.filter(sk.col("k").like("a")).with_watermark("ts", "5 seconds")), 5),
        # a conjunct reading ts stays above the watermark; the other one is pushed below
        (
            lambda: count(
                STREAM.with_watermark("ts", "5 seconds").filter(
                    (sk.col("ts") > T0) & (sk.col("k") == "a")
                )
            ),
            5,
        ),
        (
            lambda: count(
                STREAM.with_watermark("ts", "5 seconds").filter(
                    sk.col("ts") < T0 + timedelta(seconds=50)
                )
            ),
            95,
        ),
        # a filter on a column computed from others than ts is pushed through the projection
        # (PySpark: tests/differential/test_watermark_rows.py)
        (
            lambda: count(
                STREAM.with_watermark("ts", "5 seconds")
                .with_column("k2", sk.col("k") + "x")
                .filter(sk.col("k2") == "ax")
            ),
            5,
        ),
        # ... and not when the column is computed from ts; the other conjunct is
        (
            lambda: count(
                STREAM.with_watermark("ts", "5 seconds")
                .select(sk.col("ts").alias("t2"), "ts", "k")
                .filter((sk.col("t2") < T0 + timedelta(seconds=50)) & (sk.col("k") == "b"))
            ),
            95,
        ),
        (
            lambda: count(
                STREAM.with_watermark("ts", "5 seconds")
                .select(sk.col("ts").alias("t2"), "ts", "k")
                .filter((sk.col("t2") < T0 + timedelta(seconds=50)) & (sk.col("k") == "a"))
            ),
            5,
        ),
        (
            lambda: (
                STREAM.with_watermark("ts", "5 seconds")
                .filter(sk.col("k") == "a")
                .drop_duplicates(["k", "ts"])
            ),
            5,
        ),
    ],
)
def test_filtered_rows_move_the_watermark_only_where_spark_counts_them(
    build: object, expected: int
) -> None:
    assert callable(build)
    assert seconds(watermark_after(build())) == expected


STATIC = sk.from_arrow(pa.table({"k": ["a", "b"], "grp": ["x", "y"]}))
"""``a`` in group x, ``b`` in group y, no ``c``."""


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        # below the watermark the join and the filter on a static column run on the rows:
        # b (grp y), c (no match) and the null key never reach it
        (lambda: STREAM.join(STATIC, "k").filter(sk.col("grp") == "x"), 5),
        (lambda: STREAM.join(STATIC, "k", "left").filter(sk.col("grp") == "x"), 5),
        (lambda: STREAM.join(STATIC, "k"), 95),
        (lambda: STREAM.join(STATIC, "k", "left"), 95),
    ],
)
def test_a_stream_static_join_below_the_watermark_runs_first(build: object, expected: int) -> None:
    assert callable(build)
    frame = count(build().with_watermark("ts", "5 seconds"))
    q = IncrementalQuery(frame.plan, "append")
    q.run(rows((10, "a"), (100, "b"), (90, None), (80, "c")))
    assert seconds(q.watermark) == expected


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        # Spark infers ``k IS NOT NULL`` on the stream from an inner join's key ...
        (lambda s: s.join(STATIC, "k"), 75),
        (lambda s: s.join(STATIC, "k", "left_semi"), 75),
        # ... and ``k = 'a'`` from the static side's filter on its key
        (lambda s: s.join(STATIC.filter(sk.col("k") == "a"), "k"), 5),
        (lambda s: s.join(STATIC.filter(sk.col("k") == "a"), "k", "left"), 95),
        (lambda s: s.join(STATIC, "k", "left"), 95),
        # a filter on the stream's columns above the join is pushed through it
        (lambda s: s.join(STATIC, "k", "left").filter(sk.col("v") < 2), 5),
        # a filter on a static column rejecting nulls makes the left join inner
        (lambda s: s.join(STATIC, "k", "left").filter(sk.col("grp") == "x"), 75),
        (lambda s: s.join(STATIC, "k", "left").filter(sk.col("grp").is_null()), 95),
    ],
)
def test_a_join_above_the_watermark_filters_what_spark_infers(build: object, expected: int) -> None:
    assert callable(build)
    frame = count(build(STREAM.with_watermark("ts", "5 seconds")))
    batch = rows((10, "a"), (100, None), (80, "c")).with_columns(
        v=pl.Series([1, 5, 5], dtype=pl.Int64)
    )
    q = IncrementalQuery(frame.plan, "append")
    q.run(batch)
    assert seconds(q.watermark) == expected


def test_per_partition_maxima_count_only_the_rows_the_join_keeps() -> None:
    """Under the ``"min"`` policy a partition whose rows the join and filter all reject
    delivers no event time: W follows the other partition's kept rows (the row index
    threaded through the join keeps each kept row with its partition)."""
    frame = count(
        STREAM.join(STATIC, "k").filter(sk.col("grp") == "x").with_watermark("ts", "5 seconds")
    )
    q = IncrementalQuery(frame.plan, "append")
    batch = rows((60, "a"), (100, "b"), (30, "a"), (90, None))
    q.run(batch, pa.array(["p0", "p1", "p1", "p1"]))
    assert seconds(q.watermark) == 25  # min(p0: 60, p1: 30) - 5; every row: min(60, 100) - 5
