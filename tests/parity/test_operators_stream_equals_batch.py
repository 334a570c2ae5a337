"""Parity for ``drop_duplicates`` and for filter / select / with_column after an
aggregation: the same plan run incrementally over random micro-batch boundaries gives the
batch result on the same rows. The batch side is checked against plain Python first, so
both halves rest on an independent answer."""

from __future__ import annotations

import itertools

import polars as pl
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

import streamkit as sk
from streamkit.streaming.incremental import IncrementalQuery
from streamkit.testing.tables import assert_table_equal
from tests.oracle.events import events

DATA = events(n=800, seed=33, span_hours=4)
EMPTY = sk.from_arrow(DATA.slice(0, 0))
CUTS = st.lists(st.integers(0, DATA.num_rows), max_size=8)


def frame(table: pa.Table) -> pl.DataFrame:
    out = pl.from_arrow(table)
    assert isinstance(out, pl.DataFrame)
    return out


def run(df: sk.DataFrame, mode: str, cuts: list[int]) -> list[pl.DataFrame]:
    q = IncrementalQuery(df.plan, mode)  # type: ignore[arg-type]
    rows = frame(DATA)
    bounds = [0, *sorted(set(cuts)), rows.height]
    return [q.run(rows.slice(lo, hi - lo)).output for lo, hi in itertools.pairwise(bounds)]


def dedup(df: sk.DataFrame) -> sk.DataFrame:
    return df.drop_duplicates(["action", "user_id"])


def test_batch_drop_duplicates_is_the_first_row_per_key() -> None:
    seen: set[tuple[object, object]] = set()
    first = []
    for row in DATA.to_pylist():
        key = (row["action"], row["user_id"])
        if key not in seen:
            seen.add(key)
            first.append(row)
    assert dedup(sk.from_arrow(DATA)).to_arrow().to_pylist() == first


@settings(max_examples=10, deadline=None)
@given(cuts=CUTS)
def test_stream_drop_duplicates_equals_batch(cuts: list[int]) -> None:
    got = pl.concat(run(dedup(EMPTY), "append", cuts))
    assert_table_equal(got, dedup(sk.from_arrow(DATA)).to_polars())


def after_agg(df: sk.DataFrame) -> sk.DataFrame:
    counts = df.group_by(sk.window("event_time", "30 minutes"), "action").agg(
        sk.count().alias("n"), sk.sum("value").alias("s")
    )
    return (
        counts.filter(sk.col("n") > 20)
        .with_column("mean", sk.col("s") / sk.col("n"))
        .select("window", "action", "n", "mean")
    )


def test_batch_after_agg_matches_plain_python() -> None:
    groups: dict[tuple[object, str], list[float]] = {}
    for row in DATA.to_pylist():
        t = row["event_time"]
        if t is None:  # in no window
            continue
        start = t.replace(minute=t.minute // 30 * 30, second=0, microsecond=0)
        groups.setdefault((start, row["action"]), []).append(row["value"])
    want = sorted(
        (start, action, len(vs), sum(v for v in vs if v is not None) / len(vs))
        for (start, action), vs in groups.items()
        if len(vs) > 20
    )
    got = after_agg(sk.from_arrow(DATA)).to_polars()
    rows = sorted((w["start"], a, n, m) for w, a, n, m in got.rows())
    assert [r[:3] for r in rows] == [r[:3] for r in want]
    assert all(abs(a[3] - b[3]) < 1e-9 for a, b in zip(rows, want, strict=True))


@settings(max_examples=8, deadline=None)
@given(cuts=CUTS)
def test_after_agg_complete_mode_equals_batch(cuts: list[int]) -> None:
    outputs = run(after_agg(EMPTY), "complete", cuts)
    expected = after_agg(sk.from_arrow(DATA)).to_polars()
    assert_table_equal(outputs[-1], expected, sort_by=["window", "action"], rel_tol=1e-9)
