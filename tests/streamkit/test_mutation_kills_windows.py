"""Window specs: what `make mutation` found untested in streamkit/windows.py.

Expected values are written from the documented forms and rules (module docstring of
``streamkit.windows``), computed here in plain Python.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streamkit as sk
from streamkit.errors import PlanError, StreamkitError
from streamkit.windows import BUCKET, WEND, WSTART, TimeWindow, WindowSpec, last_window_end

MINUTE_US = 60_000_000


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (sk.window("t", "10 minutes"), "window(col('t'), 10 minutes)"),
        (
            sk.window("t", "1 hour", "20 minutes"),
            "window(col('t'), 1 hour, slide=20 minutes)",
        ),
        (
            sk.window("t", "1 hour", "20 minutes", "5 minutes"),
            "window(col('t'), 1 hour, slide=20 minutes, start_offset=5 minutes)",
        ),
        (
            sk.window("t", "30 minutes", None, "5 minutes"),
            "window(col('t'), 30 minutes, start_offset=5 minutes)",
        ),
        (sk.session_window("t", "10 minutes"), "session_window(col('t'), 10 minutes)"),
    ],
)
def test_specs_print_as_the_call_that_makes_them(spec: object, expected: str) -> None:
    assert repr(spec) == expected


def test_a_slide_longer_than_the_size_is_refused_and_equal_is_tumbling() -> None:
    with pytest.raises(PlanError, match="slide"):
        sk.window("t", "10 minutes", "11 minutes")
    assert sk.window("t", "10 minutes", "10 minutes").is_tumbling
    assert not sk.window("t", "10 minutes", "5 minutes").is_tumbling


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 60),
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 500)), min_size=1, max_size=50),
)
def test_sessions_merge_unless_the_next_row_is_more_than_gap_after_the_last(
    gap_min: int, rows: list[tuple[int, int]]
) -> None:
    """Spark's rule: a row at ``t`` opens ``[t, t + gap)``; sessions that overlap or touch
    merge, so a new session starts only when ``t - last > gap``."""
    gap = gap_min * MINUTE_US
    keys = [k for k, _ in rows]
    times = [m * MINUTE_US for _, m in rows]
    table = pa.table({"k": keys, "t": pa.array(times, pa.timestamp("us", "UTC"))})
    got = sk.from_arrow(table).group_by(sk.session_window("t", f"{gap_min} minutes"), "k")
    out = pl.from_arrow(got.agg(sk.count().alias("n")).to_arrow())
    assert isinstance(out, pl.DataFrame)
    sessions = {
        (r["k"], r["window"]["start"], r["window"]["end"], r["n"])
        for r in out.iter_rows(named=True)
    }
    expected = set()
    for key in set(keys):
        ts = sorted(t for k, t in zip(keys, times, strict=True) if k == key)
        start, last, n = ts[0], ts[0], 1
        for t in ts[1:]:
            if t - last > gap:
                expected.add((key, start, last + gap, n))
                start, n = t, 0
            last, n = t, n + 1
        expected.add((key, start, last + gap, n))
    as_us = {(k, int(s.timestamp() * 1e6), int(e.timestamp() * 1e6), n) for k, s, e, n in sessions}
    assert as_us == expected


def test_specs_take_a_column_expression_as_well_as_a_name() -> None:
    by_expr = sk.session_window(sk.col("t"), "10 minutes")
    assert repr(by_expr) == "session_window(col('t'), 10 minutes)"
    assert by_expr.column.columns() == {"t"}
    tumbling = sk.window(sk.col("t"), "10 minutes")
    assert repr(tumbling) == "window(col('t'), 10 minutes)"
    assert tumbling.column.columns() == {"t"}


def _ms_table() -> sk.DataFrame:
    return sk.from_arrow(pa.table({"t": pa.array([0], pa.timestamp("ms", "UTC")), "s": ["x"]}))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (lambda: sk.window("s", "10 minutes"), r"^window\(\) needs a timestamp column"),
        (
            lambda: sk.session_window("s", "10 minutes"),
            r"^session_window\(\) needs a timestamp column",
        ),
        (lambda: sk.window("t", "1500 us"), r"^window size of 1500000 ns "),
        (lambda: sk.window("t", "2 ms", "1500 us"), r"^window slide of 1500000 ns "),
        (lambda: sk.window("t", "2 ms", None, "1500 us"), r"^window start offset of 1500000 ns "),
        (lambda: sk.session_window("t", "1500 us"), r"^session gap of 1500000 ns "),
    ],
)
def test_errors_name_the_function_and_the_duration_that_does_not_fit(
    spec: Callable[[], WindowSpec], message: str
) -> None:
    with pytest.raises(StreamkitError, match=message):
        _ms_table().group_by(spec()).agg(sk.count()).to_arrow()


@settings(max_examples=60, deadline=None)
@given(
    st.integers(2, 12),
    st.integers(1, 12),
    st.integers(0, 30),
    st.lists(st.integers(-200, 200), min_size=1, max_size=40),
)
def test_sliding_windows_hold_exactly_the_rows_in_start_to_end(
    size_min: int, slide_min: int, offset_min: int, minutes: list[int]
) -> None:
    """Any size, slide and offset, including sizes that are not a multiple of the slide
    (a window then ends inside a bucket of width gcd(size, slide)): a row at ``t`` counts
    in every window ``[offset + k * slide, ... + size)`` with ``start <= t < end``."""
    slide_min = min(slide_min, size_min)
    times = [m * MINUTE_US for m in minutes]
    table = pa.table({"t": pa.array(times, pa.timestamp("us", "UTC"))})
    offset = f"{offset_min} minutes" if offset_min else None
    spec = sk.window("t", f"{size_min} minutes", f"{slide_min} minutes", offset)
    out = pl.from_arrow(sk.from_arrow(table).group_by(spec).agg(sk.count().alias("n")).to_arrow())
    assert isinstance(out, pl.DataFrame)
    got = {
        (int(r["window"]["start"].timestamp() * 60) // 3600, r["n"])
        for r in out.iter_rows(named=True)
    }
    counts: dict[int, int] = {}
    for m in minutes:
        start = offset_min % slide_min + (m - offset_min % slide_min) // slide_min * slide_min
        while start + size_min > m:
            counts[start] = counts.get(start, 0) + 1
            start -= slide_min
    assert got == set(counts.items())


@settings(max_examples=60, deadline=None)
@given(
    st.integers(2, 12),
    st.integers(1, 12),
    st.integers(0, 30),
    st.lists(st.integers(-200, 200), min_size=1, max_size=20),
)
def test_last_window_end_is_the_latest_end_among_a_rows_windows(
    size_min: int, slide_min: int, offset_min: int, minutes: list[int]
) -> None:
    """The bound a streaming query compares with the watermark to drop a row as late:
    the end of the last window ``[offset + k * slide, ... + size)`` holding the row."""
    slide_min = min(slide_min, size_min)
    offset = f"{offset_min} minutes" if offset_min else None
    spec = sk.window("t", f"{size_min} minutes", f"{slide_min} minutes", offset)
    dtype = pl.Datetime("us", "UTC")
    frame = pl.DataFrame({"t": pl.Series([m * MINUTE_US for m in minutes]).cast(dtype)})
    got = frame.select(last_window_end(spec, dtype)).to_series().to_list()
    expected = []
    for m in minutes:
        starts = [s for s in range(-300, 300) if (s - offset_min) % slide_min == 0 and s <= m]
        expected.append((max(starts) + size_min) * MINUTE_US)
    assert got == expected


def test_expand_flags_the_last_window_of_each_bucket() -> None:
    """``window("t", "30 minutes", "10 minutes")``: buckets are 10 minutes wide; the
    bucket [00:20, 00:30) (index 2) lies in the windows starting 00:00, 00:10 and 00:20,
    and the flag marks only the last (the latest end, 00:50); other columns are kept."""
    spec = sk.window("t", "30 minutes", "10 minutes")
    assert isinstance(spec, TimeWindow)
    frame = pl.DataFrame({BUCKET: [2], "x": [7]})
    got = spec.expand(frame, pl.Datetime("us", "UTC"), last_flag="last")
    rows = sorted(got.select(WSTART, WEND, "last", "x").rows())
    assert rows == [
        (0, 30 * MINUTE_US, False, 7),
        (10 * MINUTE_US, 40 * MINUTE_US, False, 7),
        (20 * MINUTE_US, 50 * MINUTE_US, True, 7),
    ]
