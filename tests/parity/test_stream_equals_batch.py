"""Parity: the stream's final result equals the batch result on the same rows, for every
window kind and aggregate, with random micro-batch boundaries and out-of-order data."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streamkit as sk
from streamkit.streaming.incremental import IncrementalQuery
from streamkit.testing.tables import assert_table_equal
from tests.oracle.events import events

DATA = events(n=1200, seed=21, span_hours=8)
EMPTY = sk.from_arrow(DATA.slice(0, 0))

WINDOWS: dict[str, Any] = {
    "tumbling": sk.window("event_time", "30 minutes"),
    "sliding": sk.window("event_time", "1 hour", "20 minutes"),
    "offset": sk.window("event_time", "45 minutes", "15 minutes", "5 minutes"),
    "session": sk.session_window("event_time", "10 minutes"),
}


def aggs() -> list[Any]:
    return [
        sk.count().alias("n"),
        sk.count("value").alias("n_value"),
        sk.sum("value").alias("s"),
        sk.avg("value").alias("a"),
        sk.min("value").alias("lo"),
        sk.max("value").alias("hi"),
        sk.count_distinct("user_id").alias("d"),
        sk.approx_count_distinct("user_id").alias("ad"),
    ]


def query(base: sk.DataFrame, window: str, watermark: bool) -> sk.DataFrame:
    df = base.with_watermark("event_time", "12 hours") if watermark else base
    return df.filter(sk.col("value") > 0).group_by(WINDOWS[window], "action").agg(*aggs())


def frame(table: pa.Table) -> pl.DataFrame:
    out = pl.from_arrow(table)
    assert isinstance(out, pl.DataFrame)
    return out


def run_stream(
    window: str, mode: str, cuts: list[int], order: list[int]
) -> tuple[IncrementalQuery, list[pl.DataFrame]]:
    rows = frame(DATA.take(order))
    q = IncrementalQuery(query(EMPTY, window, watermark=mode != "complete").plan, mode)  # type: ignore[arg-type]
    bounds = [0, *sorted(set(cuts)), rows.height]
    outputs = []
    for lo, hi in itertools.pairwise(bounds):
        result = q.run(rows.slice(lo, hi - lo))
        assert result.late_rows.height == 0
        outputs.append(result.output)
    return q, outputs


def shuffled(seed: int) -> list[int]:
    """Row order shuffled within blocks of 50 rows: out of order by up to ~20 minutes."""
    import random

    order = list(range(DATA.num_rows))
    rng = random.Random(seed)
    for i in range(0, len(order), 50):
        block = order[i : i + 50]
        rng.shuffle(block)
        order[i : i + 50] = block
    return order


def upsert(outputs: list[pl.DataFrame], keys: list[str]) -> pl.DataFrame:
    table = outputs[0]
    for out in outputs[1:]:
        if out.height:
            table = pl.concat([table.join(out, on=keys, how="anti", nulls_equal=True), out])
    return table


TIME_WINDOWS = sorted(k for k in WINDOWS if k != "session")


@settings(max_examples=12, deadline=None)
@given(
    window=st.sampled_from(TIME_WINDOWS),
    cuts=st.lists(st.integers(0, DATA.num_rows), max_size=8),
    seed=st.integers(0, 2**16),
)
def test_update_mode_upserted_equals_batch(window: str, cuts: list[int], seed: int) -> None:
    _, outputs = run_stream(window, "update", cuts, shuffled(seed))
    expected = query(sk.from_arrow(DATA), window, watermark=True).to_polars()
    got = upsert(outputs, ["window", "action"])
    # rows evicted by the watermark were emitted earlier; nothing may be missing or extra
    assert_table_equal(got, expected, sort_by=["window", "action"], rel_tol=1e-9)


@settings(max_examples=8, deadline=None)
@given(cuts=st.lists(st.integers(0, DATA.num_rows), max_size=8), seed=st.integers(0, 2**16))
def test_session_append_mode_emitted_and_held_equal_batch(cuts: list[int], seed: int) -> None:
    # (update mode is refused for sessions, as in Spark): what append mode emitted plus
    # what it still holds equals the batch result
    q, outputs = run_stream("session", "append", cuts, shuffled(seed))
    got = pl.concat([*outputs, q.current_result()])
    expected = query(sk.from_arrow(DATA), "session", watermark=True).to_polars()
    assert_table_equal(got, expected, sort_by=["window", "action"], rel_tol=1e-9)


@pytest.mark.parametrize("window", sorted(WINDOWS))
def test_complete_mode_last_output_equals_batch(window: str) -> None:
    _, outputs = run_stream(window, "complete", [100, 101, 600, 1000], list(range(DATA.num_rows)))
    expected = query(sk.from_arrow(DATA), window, watermark=False).to_polars()
    assert_table_equal(outputs[-1], expected, sort_by=["window", "action"], rel_tol=1e-9)


@pytest.mark.parametrize("window", sorted(WINDOWS))
def test_append_mode_emits_each_closed_window_once_with_final_values(window: str) -> None:
    q = IncrementalQuery(query(EMPTY, window, watermark=True).plan, "append")
    rows = frame(DATA)
    emitted = []
    for lo in range(0, rows.height, 97):
        emitted.append(q.run(rows.slice(lo, 97)).output)
    # a far-future row advances the watermark past every window (it passes the filter:
    # as in Spark, a row the filter drops does not move the watermark)
    flush = rows.head(1).with_columns(pl.lit(1.0, dtype=pl.Float64).alias("value"))
    flush = flush.with_columns(pl.col("event_time").dt.offset_by("30d"))
    emitted.append(q.run(flush).output)
    assert q.owes_batch  # the flush moved the watermark: Spark's no-data batch emits
    emitted.append(q.run_no_data().output)
    got = pl.concat([e for e in emitted if e.height])
    expected = query(sk.from_arrow(DATA), window, watermark=True).to_polars()
    assert got.select("window", "action").is_duplicated().sum() == 0
    assert_table_equal(got, expected, sort_by=["window", "action"], rel_tol=1e-9)


def test_late_rows_are_counted_kept_and_not_aggregated() -> None:
    """Expected values in plain Python: the watermark after the first batch is its largest
    event time minus 10 minutes; after the no-data batch it causes, a row of the second
    batch is late when its hour window ended at or before that watermark (Spark's rule), is
    kept in ``late_rows`` and is absent from the per-hour counts."""
    base = EMPTY.with_watermark("event_time", "10 minutes")
    q = IncrementalQuery(
        base.group_by(sk.window("event_time", "1 hour")).agg(sk.count().alias("n")).plan, "update"
    )
    rows = frame(DATA).filter(pl.col("event_time").is_not_null()).sort("event_time")
    middle, others = rows.slice(600, 300), pl.concat([rows.slice(0, 600), rows.slice(900)])
    first = q.run(middle)  # the watermark jumps ahead of the first 600 rows
    assert first.late_rows.height == 0
    assert q.owes_batch
    nothing = q.run_no_data()
    assert nothing.output.height == 0  # update mode: no group changed
    second = q.run(others)  # late rows and on-time rows in one batch
    times = {"middle": middle["event_time"].to_list(), "others": others["event_time"].to_list()}
    watermark = max(times["middle"]) - timedelta(minutes=10)

    def hour(t: datetime) -> datetime:
        return t.replace(minute=0, second=0, microsecond=0)

    late = [t for t in times["others"] if hour(t) + timedelta(hours=1) <= watermark]
    assert 0 < len(late) < len(times["others"])
    assert sorted(second.late_rows["event_time"].to_list()) == sorted(late)
    counted = times["middle"] + [t for t in times["others"] if t not in late]
    expected: dict[datetime, int] = {}
    for t in counted:
        expected[hour(t)] = expected.get(hour(t), 0) + 1
    got: dict[datetime, int] = {}
    for out in (first.output, second.output):  # update mode: the latest emission wins
        for row in out.to_dicts():
            got[row["window"]["start"]] = row["n"]
    assert got == expected
