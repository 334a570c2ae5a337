"""approx_percentile against DuckDB: the rank of every answer (counted by DuckDB from the raw
rows) is within the documented bound, exact for small groups; the answer lies between
DuckDB's exact ``quantile_cont`` at ``q -+ eps``, as DuckDB's own ``approx_quantile`` does."""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pytest

import streamkit as sk
from tests.oracle.events import events
from tests.streamkit.aggregates.ranks import assert_within, ranks

QS = [0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 1.0]


def groups_table(seed: int) -> pa.Table:
    """Distributions per group, nulls (5%), a group of nulls only, a null key, tiny and
    mid-sized groups."""
    rng = np.random.default_rng(seed)
    n = 20_000
    parts = {
        "normal": rng.normal(10, 5, n),
        "lognormal": rng.lognormal(0, 2, n),
        "ties": rng.integers(0, 40, n).astype(float),
        "ascending": np.arange(n, dtype=float),
        "descending": np.arange(n, 0, -1, dtype=float),
        "tiny": rng.normal(0, 1, 3),
        "mid": rng.uniform(-1, 1, 700),
    }
    keys = np.concatenate([np.full(len(v), k, dtype=object) for k, v in parts.items()])
    values = np.concatenate(list(parts.values()))
    frame = pl.DataFrame({"g": keys.astype(str), "v": values})
    nulls = pl.Series(rng.random(frame.height) < 0.05)
    frame = frame.with_columns(pl.when(nulls).then(None).otherwise(pl.col("v")).alias("v"))
    extra = pl.DataFrame(
        {"g": ["nulls"] * 50 + [None] * 100, "v": [None] * 50 + list(rng.normal(size=100))}
    )
    return pl.concat([frame, extra.cast({"v": pl.Float64})]).to_arrow()


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batch runs read 7,000-row chunks, so partial sketches are merged as in a stream."""
    monkeypatch.setattr("streamkit.io.CHUNK_ROWS", 7_000)


@pytest.mark.parametrize("accuracy", [20, 100])
def test_rank_error_within_bound_per_group(accuracy: int) -> None:
    data = groups_table(seed=accuracy)
    aggs = [sk.approx_percentile("v", q, accuracy).alias(f"p{i}") for i, q in enumerate(QS)]
    got = pl.from_arrow(sk.from_arrow(data).group_by("g").agg(*aggs).to_arrow())
    assert isinstance(got, pl.DataFrame)
    rows = pl.from_arrow(data)
    assert isinstance(rows, pl.DataFrame)
    assert got.height == 9
    for i, q in enumerate(QS):
        answers = got.select("g", pl.col(f"p{i}").alias("x"))
        assert_within(ranks(answers, rows, ["g"], "v"), q, accuracy, exact_up_to=8 * accuracy)


def test_answers_lie_between_exact_quantiles_like_duckdb_approx_quantile() -> None:
    accuracy = 50
    data = groups_table(seed=5)
    eps = 1 / accuracy + 0.002  # + 2 ranks of interpolation slack for groups of >= 1000
    con = duckdb.connect()
    con.register("data", data)
    for q in [0.05, 0.25, 0.5, 0.75, 0.95]:
        lo, hi = max(q - eps, 0.0), min(q + eps, 1.0)
        expected = pl.from_arrow(
            con.sql(
                f"""SELECT g, quantile_cont(v, {lo}) AS lo, quantile_cont(v, {hi}) AS hi,
                           approx_quantile(v, {q}) AS duck
                    FROM data GROUP BY g HAVING count(v) >= 1000"""
            ).to_arrow_table()
        )
        got = pl.from_arrow(
            sk.from_arrow(data)
            .group_by("g")
            .agg(sk.approx_percentile("v", q, accuracy).alias("x"))
            .to_arrow()
        )
        assert isinstance(expected, pl.DataFrame)
        assert isinstance(got, pl.DataFrame)
        both = expected.join(got, on="g")
        assert both.height == 5
        inside = (pl.col("lo") <= pl.col("x")) & (pl.col("x") <= pl.col("hi"))
        assert both.filter(~inside).is_empty(), (q, both)
        duck_inside = (pl.col("lo") <= pl.col("duck")) & (pl.col("duck") <= pl.col("hi"))
        assert both.filter(~duck_inside).is_empty(), (q, both)  # the oracle's own sketch agrees


def windowed_rows(data: pa.Table, size_min: int, slide_min: int) -> pl.DataFrame:
    """Every row once per window containing it (``start <= t < start + size``), by DuckDB."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("data", data)
    sz, sl = size_min * 60_000_000, slide_min * 60_000_000
    frame = pl.from_arrow(
        con.sql(
            f"""WITH t AS (SELECT *, epoch_us(event_time) AS us FROM data
                           WHERE event_time IS NOT NULL),
                starts AS (SELECT unnest(range(((SELECT min(us) FROM t) - {sz}) // {sl} * {sl},
                                               (SELECT max(us) FROM t) + {sl}, {sl})) AS ws)
                SELECT ws AS wstart, action, value FROM t JOIN starts
                ON ws <= us AND us < ws + {sz}"""
        ).to_arrow_table()
    )
    assert isinstance(frame, pl.DataFrame)
    return frame


@pytest.mark.parametrize(("size", "slide"), [(30, 30), (30, 10)])
@pytest.mark.parametrize("q", [0.1, 0.5, 0.9])
def test_windows_match_exact_ranks(size: int, slide: int, q: float) -> None:
    accuracy = 10
    data = events(n=20_000, seed=size + slide, span_hours=3)
    window = sk.window("event_time", f"{size} minutes", f"{slide} minutes")
    out = (
        sk.from_arrow(data)
        .group_by(window, "action")
        .agg(sk.approx_percentile("value", q, accuracy).alias("x"))
    )
    got = pl.from_arrow(out.to_arrow())
    assert isinstance(got, pl.DataFrame)
    got = got.with_columns(pl.col("window").struct.field("start").dt.epoch("us").alias("wstart"))
    checked = ranks(
        got.select("wstart", "action", "x"),
        windowed_rows(data, size, slide),
        ["wstart", "action"],
        "value",
    )
    assert (checked["n"] > 8 * accuracy).any()  # some windows are compacted
    assert_within(checked, q, accuracy, exact_up_to=8 * accuracy)


def test_global_aggregate_of_no_rows_is_null_and_integer_input_keeps_its_type() -> None:
    empty = sk.from_arrow(events(n=10).slice(0, 0))
    assert empty.agg(sk.approx_percentile("value", 0.5)).to_arrow().to_pylist() == [
        {"approx_percentile(value, 0.5, 100)": None}
    ]
    ints = sk.from_arrow(pa.table({"k": [1, 1, 1, 1, 2], "v": [4, 1, 3, 2, None]}))
    got = ints.group_by("k").agg(sk.approx_percentile("v", 0.5).alias("m")).to_arrow()
    assert got.schema.field("m").type == pa.int64()
    assert sorted(got.to_pylist(), key=lambda r: r["k"]) == [{"k": 1, "m": 2}, {"k": 2, "m": None}]


def test_bad_arguments_are_refused() -> None:
    df = sk.from_arrow(pa.table({"s": ["a"], "v": [1.0]}))
    with pytest.raises(sk.SchemaError, match=r"approx_percentile\(\) needs a numeric column"):
        df.agg(sk.approx_percentile("s", 0.5))
    with pytest.raises(ValueError, match="percentage"):
        sk.approx_percentile("v", 1.5)
    with pytest.raises(ValueError, match="accuracy"):
        sk.approx_percentile("v", 0.5, accuracy=0)
