"""Every aggregate and window kind compared with DuckDB on the same generated rows.

DuckDB computes window membership from the definition (a row is in every window with
``start <= t < start + size``; sessions split where the gap to the previous row is >= gap),
independently of streamkit's bucket arithmetic and interval merging.
"""

from __future__ import annotations

from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.durations import parse_duration_ns
from streamkit.testing.tables import assert_table_equal
from streamkit.windows import SessionWindow, TimeWindow
from tests.oracle.events import events

AGGS_SQL = """count(*) AS n, count(value) AS n_value, sum(value) AS s, avg(value) AS a,
    min(value) AS lo, max(value) AS hi, count(DISTINCT user_id) AS d,
    min(action) AS first_action"""


def sk_aggs() -> list[Any]:
    return [
        sk.count().alias("n"),
        sk.count("value").alias("n_value"),
        sk.sum("value").alias("s"),
        sk.avg("value").alias("a"),
        sk.min("value").alias("lo"),
        sk.max("value").alias("hi"),
        sk.count_distinct("user_id").alias("d"),
        sk.min("action").alias("first_action"),
    ]


def flat(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    if "window" in frame.columns:
        frame = frame.with_columns(
            pl.col("window").struct.field("start").alias("wstart"),
            pl.col("window").struct.field("end").alias("wend"),
        ).drop("window")
    return frame


def duck(sql: str, **tables: pa.Table) -> pl.DataFrame:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for name, table in tables.items():
        con.register(name, table)
    frame = pl.from_arrow(con.sql(sql).to_arrow_table())
    assert isinstance(frame, pl.DataFrame)
    return frame.with_columns(
        pl.col(c).dt.convert_time_zone("UTC") for c in ("wstart", "wend") if c in frame.columns
    )


WINDOWS = [
    ("10 minutes", None, None),
    ("1 hour", None, "7 minutes"),
    ("1 hour", "15 minutes", None),
    ("30 minutes", "20 minutes", "5 minutes"),
    ("25 minutes", "10 minutes", None),
]


@pytest.mark.parametrize(("size", "slide", "offset"), WINDOWS)
@pytest.mark.parametrize("seed", [1, 2])
def test_time_windows_match_duckdb(
    size: str, slide: str | None, offset: str | None, seed: int
) -> None:
    data = events(seed=seed)
    q = sk.from_arrow(data).group_by(sk.window("event_time", size, slide, offset), "action")
    got = flat(q.agg(*sk_aggs()).to_arrow())
    sz = parse_duration_ns(size) // 1000
    sl = parse_duration_ns(slide or size) // 1000
    off = parse_duration_ns(offset) // 1000 if offset else 0
    expected = duck(
        f"""
        WITH t AS (SELECT *, epoch_us(event_time) AS us FROM data WHERE event_time IS NOT NULL),
        starts AS (
            SELECT unnest(range(
                ((SELECT min(us) FROM t) - {sz} - {off}) // {sl} * {sl} + {off},
                (SELECT max(us) FROM t) + {sl}, {sl})) AS ws)
        SELECT make_timestamptz(ws) AS wstart, make_timestamptz(ws + {sz}) AS wend, action,
               {AGGS_SQL}
        FROM t JOIN starts ON ws <= us AND us < ws + {sz}
        GROUP BY ws, action""",
        data=data,
    )
    assert got.height > 0
    assert_table_equal(got, expected, sort_by=["wstart", "action"], rel_tol=1e-9)


@pytest.mark.parametrize("gap", ["5 minutes", "30 minutes"])
def test_session_windows_match_duckdb(gap: str) -> None:
    data = events(seed=3, n=400, span_hours=24)
    got = flat(
        sk.from_arrow(data)
        .group_by(sk.session_window("event_time", gap), "action")
        .agg(*sk_aggs())
        .to_arrow()
    )
    g = parse_duration_ns(gap) // 1000
    expected = duck(
        f"""
        WITH t AS (SELECT *, epoch_us(event_time) AS us FROM data WHERE event_time IS NOT NULL),
        marked AS (SELECT *, CASE WHEN us - lag(us) OVER w < {g} THEN 0 ELSE 1 END AS new
                   FROM t WINDOW w AS (PARTITION BY action ORDER BY us)),
        numbered AS (SELECT *, sum(new) OVER (PARTITION BY action ORDER BY us
                     ROWS UNBOUNDED PRECEDING) AS sid FROM marked)
        SELECT make_timestamptz(min(us)) AS wstart, make_timestamptz(max(us) + {g}) AS wend,
               action, {AGGS_SQL}
        FROM numbered GROUP BY action, sid""",
        data=data,
    )
    assert got.height > 10
    assert_table_equal(got, expected, sort_by=["action", "wstart"], rel_tol=1e-9)


def test_plain_group_by_and_global_aggregate_match_duckdb() -> None:
    data = events(seed=4)
    got = flat(sk.from_arrow(data).group_by("action").agg(*sk_aggs()).to_arrow())
    expected = duck(f"SELECT action, {AGGS_SQL} FROM data GROUP BY action", data=data)
    assert_table_equal(got, expected, sort_by=["action"])
    got_all = flat(sk.from_arrow(data).agg(*sk_aggs()).to_arrow())
    assert_table_equal(got_all, duck(f"SELECT {AGGS_SQL} FROM data", data=data))


def test_filter_and_derived_columns_match_duckdb() -> None:
    data = events(seed=5)
    q = (
        sk.from_arrow(data)
        .filter((sk.col("value") > 5) & ~sk.col("user_id").is_null())
        .with_column("v2", sk.col("value") * 2 + 1)
        .group_by(sk.window("event_time", "1 hour"), "action")
        .agg(sk.sum("v2").alias("s2"), sk.count().alias("n"))
    )
    expected = duck(
        """SELECT time_bucket(INTERVAL 1 hour, event_time) AS wstart,
                  time_bucket(INTERVAL 1 hour, event_time) + INTERVAL 1 hour AS wend,
                  action, sum(value * 2 + 1) AS s2, count(*) AS n
           FROM data WHERE value > 5 AND user_id IS NOT NULL AND event_time IS NOT NULL
           GROUP BY ALL""",
        data=data,
    )
    assert_table_equal(flat(q.to_arrow()), expected, sort_by=["wstart", "action"])


@pytest.mark.parametrize("window", ["tumbling", "sliding", "session"])
def test_approx_count_distinct_is_within_error_of_exact(window: str) -> None:
    data = events(seed=6, n=20_000, span_hours=2)
    specs: dict[str, TimeWindow | SessionWindow] = {
        "tumbling": sk.window("event_time", "30 minutes"),
        "sliding": sk.window("event_time", "30 minutes", "10 minutes"),
        "session": sk.session_window("event_time", "1 minute"),
    }
    got = flat(
        sk.from_arrow(data)
        .group_by(specs[window], "action")
        .agg(
            sk.approx_count_distinct("user_id").alias("approx"),
            sk.count_distinct("user_id").alias("exact"),
        )
        .to_arrow()
    )
    diff = (got["approx"] - got["exact"]).abs()
    # HyperLogLog: ~2% standard error; for tiny sets a register collision costs one value.
    bound = (got["exact"] * 0.08).clip(lower_bound=2)
    assert got.height > 0
    assert (diff <= bound).all(), got.filter(diff > bound)
    mean_rel = (diff / got["exact"].clip(lower_bound=1)).mean()
    assert isinstance(mean_rel, float)
    assert mean_rel <= 0.03


def test_sparse_sketch_path_equals_dense_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Key spaces too large for dense registers take the sparse path: same sketches."""
    from streamkit.aggregates import hll

    data = events(seed=8, n=5000)
    q = (
        sk.from_arrow(data)
        .group_by(sk.window("event_time", "20 minutes", "10 minutes"), "action", "user_id")
        .agg(sk.approx_count_distinct("value").alias("approx"), sk.count().alias("n"))
    )
    dense = q.to_arrow()
    monkeypatch.setattr(hll, "MAX_DENSE_BYTES", 0)
    sparse = q.to_arrow()
    assert dense.num_rows > 1000
    assert_table_equal(sparse, dense, sort_by=["window", "action", "user_id"])
