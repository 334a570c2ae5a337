"""Property tests of window assignment against the definition, on random specs and times."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
from hypothesis import example, given, settings
from hypothesis import strategies as st

import streamkit as sk

MINUTE_US = 60_000_000


@st.composite
def window_case(draw: st.DrawFn) -> tuple[int, int, int, list[int]]:
    slide = draw(st.integers(1, 120)) * MINUTE_US // draw(st.sampled_from([1, 2, 4]))
    size = slide * draw(st.integers(1, 5)) + draw(st.sampled_from([0, 0, MINUTE_US, 7_000_000]))
    size = max(size, slide)
    offset = draw(st.integers(0, slide - 1))
    times = draw(st.lists(st.integers(-(10**13), 10**13), min_size=1, max_size=40))
    return size, slide, offset, times


@settings(max_examples=150, deadline=None)
@given(window_case())
def test_rows_land_in_exactly_the_windows_that_contain_them(
    case: tuple[int, int, int, list[int]],
) -> None:
    size, slide, offset, times = case
    table = pa.table({"t": pa.array(times, pa.timestamp("us", "UTC")), "i": range(len(times))})
    w = sk.window("t", f"{size} us", f"{slide} us", f"{offset} us" if offset else None)
    got = pl.from_arrow(sk.from_arrow(table).group_by(w, "i").agg(sk.count()).to_arrow())
    assert isinstance(got, pl.DataFrame)
    got = got.select(
        pl.col("i"),
        pl.col("window").struct.field("start").dt.epoch("us").alias("s"),
        pl.col("window").struct.field("end").dt.epoch("us").alias("e"),
    )
    actual = {(r["i"], r["s"], r["e"]) for r in got.iter_rows(named=True)}
    expected = set()
    for i, t in enumerate(times):
        k = (t - offset) // slide
        for j in range(k - size // slide - 1, k + 1):
            start = offset + j * slide
            if start <= t < start + size:
                expected.add((i, start, start + size))
    assert actual == expected
    per_row = -(-size // slide)
    counts = got.group_by("i").len()["len"].to_list()
    assert max(counts) <= per_row  # at most ceil(size / slide) windows per row


SESSION_ROWS = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 500)), min_size=1, max_size=50)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 60), SESSION_ROWS)
def test_sessions_split_exactly_where_gaps_exceed_gap(
    gap_min: int, rows: list[tuple[int, int]]
) -> None:
    check_sessions(gap_min, rows, "us", 0)


DECADES_NS = 40 * 365 * 86_400 * 10**9


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 60), SESSION_ROWS)
@example(10, [(0, 0), (0, 10), (1, 0), (2, 5), (2, 25), (3, 30), (3, 40), (3, 51)])
def test_sessions_split_exactly_with_keys_decades_apart(
    gap_min: int, rows: list[tuple[int, int]]
) -> None:
    """Nanosecond times 40 years apart per key: too far apart for the merge's single
    running max in 64 bits, so its per-key fallback runs."""
    check_sessions(gap_min, rows, "ns", DECADES_NS)


def check_sessions(gap_min: int, rows: list[tuple[int, int]], unit: str, spread: int) -> None:
    """Sessions per key of ``rows`` ((key, minute)); key ``k``'s times move by ``k *
    spread`` ticks of ``unit``; checked against sessions cut by hand."""
    per_min = {"us": MINUTE_US, "ns": MINUTE_US * 1000}[unit]
    gap = gap_min * per_min
    keys = [k for k, _ in rows]
    times = [k * spread + m * per_min for k, m in rows]
    table = pa.table({"k": keys, "t": pa.array(times, pa.timestamp(unit, "UTC"))})
    got = sk.from_arrow(table).group_by(sk.session_window("t", f"{gap_min} minutes"), "k")
    out = pl.from_arrow(got.agg(sk.count().alias("n")).to_arrow())
    assert isinstance(out, pl.DataFrame)
    out = out.select(
        "k",
        pl.col("window").struct.field("start").dt.epoch(unit),  # type: ignore[arg-type]
        pl.col("window").struct.field("end").dt.epoch(unit).alias("end"),  # type: ignore[arg-type]
        "n",
    )
    sessions = set(out.iter_rows())
    expected = set()
    for key in set(keys):
        ts = sorted(t for k, t in zip(keys, times, strict=True) if k == key)
        start, last, n = ts[0], ts[0], 1
        for t in ts[1:]:
            if t - last > gap:  # Spark: a row at last + gap still joins (t <= last + gap)
                expected.add((key, start, last + gap, n))
                start, n = t, 0
            last, n = t, n + 1
        expected.add((key, start, last + gap, n))
    assert sessions == expected


def test_sessions_that_touch_merge_in_a_batch_job_as_in_spark() -> None:
    times = [0, 10 * MINUTE_US, 30 * MINUTE_US]  # 10 = 0 + gap: one session; 30 > 20: new
    table = pa.table({"t": pa.array(times, pa.timestamp("us", "UTC"))})
    got = sk.from_arrow(table).group_by(sk.session_window("t", "10 minutes")).agg(sk.count())
    rows = got.to_arrow().to_pylist()
    bounds = [(r["window"]["start"].timestamp(), r["window"]["end"].timestamp()) for r in rows]
    assert bounds == [(0, 1200), (1800, 2400)]
    assert [r["count"] for r in rows] == [2, 1]
