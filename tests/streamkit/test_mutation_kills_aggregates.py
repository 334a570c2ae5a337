"""The aggregation kernel and its aggregates: what `make mutation` found untested in
streamkit/aggregate.py and streamkit/aggregates/.

Expected values come from DuckDB over the same rows, or are worked out here in plain
Python from the documented rules (SQL's: a global aggregate over no rows is one row,
counts 0 and everything else null; a grouped one over no rows is no row).
"""

from __future__ import annotations

import math
import random
from fractions import Fraction
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.aggregates import hll, kll
from streamkit.aggregates import slots as S
from streamkit.aggregates.approx_count_distinct import ApproxCountDistinct
from streamkit.aggregates.approx_percentile import ApproxPercentile
from streamkit.aggregates.avg import Avg
from streamkit.aggregates.count import Count
from streamkit.aggregates.minmax import Max, Min
from streamkit.aggregates.sum import Sum
from streamkit.errors import SchemaError
from streamkit.execute import aggregate_spec

SCHEMA = {
    "k": pa.int64(),
    "t": pa.timestamp("us", "UTC"),
    "v": pa.int32(),
    "f": pa.float32(),
    "s": pa.string(),
}


def table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.table({n: pa.array([r[n] for r in rows], t) for n, t in SCHEMA.items()})


def frame(result: sk.DataFrame) -> pl.DataFrame:
    out = pl.from_arrow(result.to_arrow())
    assert isinstance(out, pl.DataFrame)
    return out


def test_a_global_aggregate_over_no_rows_is_one_row_of_zero_counts_and_nulls() -> None:
    empty = table([])
    got = frame(
        sk.from_arrow(empty).agg(
            sk.count().alias("n"),
            sk.count("v").alias("nv"),
            sk.sum("v").alias("sv"),
            sk.avg("f").alias("af"),
            sk.min("s").alias("lo"),
            sk.max("v").alias("hi"),
            sk.count_distinct("s").alias("d"),
            sk.approx_count_distinct("v").alias("ad"),
            sk.approx_percentile("v", 0.5).alias("p"),
        )
    )
    con = duckdb.connect()
    con.register("e", empty)
    expected = con.sql(
        "SELECT count(*), count(v), sum(v), avg(f), min(s), max(v), count(DISTINCT s),"
        " approx_count_distinct(v), quantile_disc(v, 0.5) FROM e"
    ).fetchall()
    assert got.rows() == expected
    assert expected == [(0, 0, None, None, None, None, 0, 0, None)]


def test_session_windows_over_no_rows_are_no_rows() -> None:
    got = frame(
        sk.from_arrow(table([]))
        .group_by(sk.session_window("t", "10 minutes"), "k")
        .agg(
            sk.count().alias("n"),
            sk.sum("v").alias("sv"),
            sk.approx_count_distinct("v").alias("ad"),
            sk.approx_percentile("v", 0.5).alias("p"),
        )
    )
    assert got.height == 0
    assert got.columns == ["window", "k", "n", "sv", "ad", "p"]


def spark_sessions(rows: list[tuple[int, int]], gap: int) -> set[tuple[int, int, int, int]]:
    """(key, start, end, rows) per session by Spark's rule, in plain Python: a row at ``t``
    opens ``[t, t + gap)``; the next row of its key joins it when ``t_next <= end``."""
    out: set[tuple[int, int, int, int]] = set()
    for key in {k for k, _ in rows}:
        times = sorted(t for k, t in rows if k == key)
        start, end, n = times[0], times[0] + gap, 1
        for t in times[1:]:
            if t <= end:
                end, n = max(end, t + gap), n + 1
            else:
                out.add((key, start, end, n))
                start, end, n = t, t + gap, 1
        out.add((key, start, end, n))
    return out


def session_counts(rows: list[tuple[int, int]], unit: str) -> pl.DataFrame:
    """(k, session start, session end, count) of 10-minute sessions per key over ``rows``
    of (key, time in ``unit`` since the epoch), starts and ends as integers in ``unit``."""
    data = pa.table(
        {"k": [k for k, _ in rows], "t": pa.array([t for _, t in rows], pa.timestamp(unit, "UTC"))}
    )
    got = frame(
        sk.from_arrow(data)
        .group_by(sk.session_window("t", "10 minutes"), "k")
        .agg(sk.count().alias("n"))
    )
    return got.select(
        "k",
        pl.col("window").struct.field("start").cast(pl.Int64),
        pl.col("window").struct.field("end").cast(pl.Int64),
        "n",
    )


def test_nanosecond_sessions_split_and_merge_exactly() -> None:
    """Nanosecond times near 2026 are above 2**60: one ns apart is not one float64 apart
    (its step there is 256 ns), so session bounds must be compared as integers. Key 1: a
    row exactly at the previous end merges, one 1 ns after the next end splits. Key 2: a
    start 56 ns after the previous end splits (rounded to float64 they are equal)."""
    t0 = 1_767_225_600 * 10**9  # 2026-01-01, a multiple of 512 ns
    gap = 600 * 10**9
    rows = [(1, t0), (1, t0 + gap), (1, t0 + 3 * gap + 1), (2, t0 + 200), (2, t0 + gap + 256)]
    bounds = session_counts(rows, "ns")
    sessions = set(bounds.iter_rows())
    expected = spark_sessions(rows, gap)
    assert sessions == expected
    assert len(expected) == 4


def test_sessions_of_later_keys_do_not_see_the_ends_of_earlier_keys() -> None:
    """Sessions of several keys are merged in one pass over all keys' rows; each key's
    sessions must depend on its own rows only. Key 1 holds the latest end of all, key 2 the
    earliest, then a row 1 us after that end (a new session); times before 1970 (negative)."""
    gap = 600 * 10**6
    b0 = -3_600 * 10**6
    rows = [(2, b0), (2, b0 + gap + 1), (1, b0 + 5 * gap)]
    bounds = session_counts(rows, "us")
    expected = spark_sessions(rows, gap)
    assert set(bounds.iter_rows()) == expected
    assert len(expected) == 3


def test_sessions_of_keys_140_years_apart_in_nanoseconds() -> None:
    """Three keys whose session ends lie 140 years apart in nanoseconds (near 2**62 ns): too
    far apart to offset every key into one int64 range, so each key's sessions are merged
    on their own. Key 3 has a row an hour after another (two sessions)."""
    ns = 10**9
    gap = 600 * ns
    y1900, y1950, y2040 = -2_208_988_800 * ns, -631_152_000 * ns, 2_208_988_800 * ns
    rows = [(1, y1900), (2, y1950), (3, y2040), (3, y2040 + 6 * gap), (3, y2040 + 7 * gap)]
    bounds = session_counts(rows, "ns")
    expected = spark_sessions(rows, gap)
    assert set(bounds.iter_rows()) == expected
    assert len(expected) == 4


def test_sessions_near_2116_in_nanoseconds() -> None:
    """Times near 2**62 ns (the year 2116), where twice a time overflows int64: key 2's
    two rows half a gap apart are one session, whatever key 1 before it holds."""
    gap = 600 * 10**9
    b = 2**62
    rows = [(1, b - 4 * gap), (2, b), (2, b + gap // 2)]
    bounds = session_counts(rows, "ns")
    expected = spark_sessions(rows, gap)
    assert set(bounds.iter_rows()) == expected
    assert len(expected) == 2


def check_sketch(values: list[float], levels: list[int], rows: list[float], k: int) -> None:
    """The documented shape of a KLL sketch of ``rows`` with ``k`` items per level: at most
    ``k`` items per level, top level ``H`` with ``2**H < 2n/k``, total weight exactly ``n``
    (a compaction keeps half of an even count at twice the weight), every value an input
    value; a group of at most ``k`` values is kept whole (exact)."""
    n = len(rows)
    per_level = {h: levels.count(h) for h in set(levels)}
    assert max(per_level.values()) <= k
    assert sum(2**h for h in levels) == n
    assert set(values) <= set(rows)
    if n <= k:
        assert sorted(values) == sorted(rows)
        assert set(levels) == {0}
    else:
        assert 2 ** max(levels) < 2 * n / k


def compacted(counts: dict[int, int], k: int) -> dict[int, int]:
    """Items per level after KLL compaction by the documented rule, in plain Python: each
    round, every buffer holding more than ``k`` items keeps its odd one out (if any) and
    sends half of the rest one level up; rounds go on until no buffer is over ``k``."""
    while any(c > k for c in counts.values()):
        after: dict[int, int] = {}
        for h, c in counts.items():
            after[h] = after.get(h, 0) + (c % 2 if c > k else c)
            if c > k:
                after[h + 1] = after.get(h + 1, 0) + c // 2
        counts = after
    return {h: c for h, c in counts.items() if c}


def level_counts(levels: list[int]) -> dict[int, int]:
    return {h: levels.count(h) for h in set(levels)}


def test_percentile_sketches_compact_only_full_buffers() -> None:
    """How many items a sketch keeps per level follows from the counts alone: built from
    rows (all at level 0) and merged from two sketches (their items pooled per level).
    Merging sketches of 80 and 161 rows pools 81 items at level 0 and exactly k = 80 at
    level 1: only the first buffer is over capacity."""
    fn = ApproxPercentile(0.5, accuracy=10)
    k = fn.capacity
    groups = pl.DataFrame({"g": [1]})
    sketches = []
    for n in (80, 161, 2_560):
        rows = pl.DataFrame({"g": [1] * n, "x": [float(i) for i in range(n)]})
        sketch = fn.build_sketch(rows, groups, ["g"], ["x"], ["v", "l"])
        assert level_counts(sketch["l"][0].to_list()) == compacted({0: n}, k)
        sketches.append(sketch)
    pooled: dict[int, int] = {}
    for sketch in sketches[:2]:
        for h, c in level_counts(sketch["l"][0].to_list()).items():
            pooled[h] = pooled.get(h, 0) + c
    assert pooled == {0: 81, 1: 80}
    merged = fn.merge_sketch(pl.concat(sketches[:2]), groups, ["g"], ["v", "l"])
    assert level_counts(merged["l"][0].to_list()) == compacted(pooled, k)


def test_percentile_sketches_are_bounded_when_built_and_merged() -> None:
    """A sketch keeps at most ``8 * accuracy`` items per level, built from rows and merged
    from states alike; small groups stay exact."""
    fn = ApproxPercentile(0.5, accuracy=10)
    rng = random.Random(7)
    big = [float(x) for x in rng.sample(range(100_000), 5_000)]
    small = [float(x) for x in rng.sample(range(1_000), 50)]
    rows = pl.DataFrame(
        {"g": [1] * len(big) + [2] * len(small), "x": big + small},
        schema={"g": pl.Int64, "x": pl.Float64},
    )
    groups = pl.DataFrame({"g": [1, 2]})
    built = fn.build_sketch(rows, groups, ["g"], ["x"], ["v", "l"])
    halves = [fn.build_sketch(rows[i::2], groups, ["g"], ["x"], ["v", "l"]) for i in range(2)]
    merged = fn.merge_sketch(pl.concat(halves), groups, ["g"], ["v", "l"])
    for sketch in (built, merged):
        by_group = {r["g"]: (r["v"], r["l"]) for r in sketch.iter_rows(named=True)}
        check_sketch(*by_group[1], big, fn.capacity)
        check_sketch(*by_group[2], small, fn.capacity)


def test_numeric_aggregates_name_the_input_by_default_when_refusing_a_type() -> None:
    """``result_dtype``'s ``argument`` defaults to "the input" (the protocol's contract)."""
    for function in (Sum(), Avg(), ApproxPercentile(0.5)):
        with pytest.raises(SchemaError, match="but the input has type"):
            function.result_dtype(pl.String())


def test_numeric_aggregates_name_the_column_they_refuse() -> None:
    data = sk.from_arrow(pa.table({"s": ["a", "b"]}))
    aggs = {
        "sum": sk.sum("s"),
        "avg": sk.avg("s"),
        "approx_percentile": sk.approx_percentile("s", 0.5),
    }
    for name, agg in aggs.items():
        refused = rf"^{name}\(\) needs a numeric column, but col\('s'\) has type String"
        with pytest.raises(SchemaError, match=refused):
            data.agg(agg).to_arrow()


def test_sum_of_integers_is_an_exact_int64() -> None:
    """Spark's rule: sum over an integral column is a bigint, exact past 2**53 (where a
    float64 sum would round 2**53 + 1 down)."""
    data = pa.table({"k": [1, 1, 2], "v": pa.array([2**53, 1, 3], pa.int64())})
    got = sk.from_arrow(data).group_by("k").agg(sk.sum("v").alias("s")).to_arrow()
    assert got.schema.field("s").type == pa.int64()
    assert dict(zip(got.column("k").to_pylist(), got.column("s").to_pylist(), strict=True)) == {
        1: 2**53 + 1,
        2: 3,
    }


def test_min_and_max_name_themselves_when_refusing_a_type() -> None:
    data = sk.from_arrow(pa.table({"s": [[1], [2]]}))
    for name, agg in {"min": sk.min("s"), "max": sk.max("s")}.items():
        with pytest.raises(SchemaError, match=rf"^{name}\(\) cannot order values of type"):
            data.agg(agg).to_arrow()


def precision_by_rule(rsd: float) -> int:
    """HyperLogLog's standard error with ``m`` registers is ``1.04 / sqrt(m)``: the least
    ``p`` in 4..16 with ``1.04 / sqrt(2**p) <= rsd``, 16 when none is that precise."""
    return next((p for p in range(4, 17) if 1.04 / math.sqrt(2**p) <= rsd), 16)


def test_hll_precision_is_the_least_exponent_meeting_the_requested_error() -> None:
    rsds = [0.9, 0.5, 0.3, 0.2, 0.1, 0.05, 0.03, 0.02, 0.0101, 0.007, 0.005, 0.001, 1e-6]
    got = {rsd: hll.precision_for(rsd) for rsd in rsds}
    assert got == {rsd: precision_by_rule(rsd) for rsd in rsds}
    assert {got[0.9], got[0.02], got[0.001]} == {4, 12, 16}


@pytest.mark.parametrize("rsd", [0.0, 1.0, -0.1, 1.5])
def test_hll_precision_refuses_an_error_outside_zero_to_one(rsd: float) -> None:
    with pytest.raises(ValueError, match="rsd must be between 0 and 1"):
        hll.precision_for(rsd)


def hll_estimate_by_rule(registers: list[int]) -> int:
    """The HyperLogLog estimate (Flajolet et al. 2007) in plain Python: ``alpha_m m**2 /
    sum(2**-r)`` with ``alpha_m = 0.7213 / (1 + 1.079 / m)``; when that is at most ``2.5 m``
    and some register is zero, linear counting ``m ln(m / zeros)`` instead; rounded half
    to even."""
    m = len(registers)
    raw = 0.7213 / (1 + 1.079 / m) * m * m / math.fsum(2.0**-r for r in registers)
    zeros = registers.count(0)
    return round(m * math.log(m / zeros) if raw <= 2.5 * m and zeros else raw)


def test_hll_estimates_follow_the_raw_and_the_small_range_formulas() -> None:
    """Register rows in every regime of the estimator: empty, sparse (linear counting),
    exactly one zero register among ones (linear counting with one zero), dense without
    zeros (raw), large registers with a few zeros (raw although zeros remain), and twos
    with two zeros (a raw estimate of about 2.9 m with 4096 registers: raw)."""
    rng = np.random.default_rng(11)
    for m in (16, 4096):
        rows = [
            [0] * m,
            [1] + [0] * (m - 1),
            [0] + [1] * (m - 1),
            list(rng.choice([0, 0, 0, 1, 2], m)),
            list(rng.integers(1, 7, m)),
            [0, 0, *rng.integers(9, 30, m - 2)],
            [0, 0] + [2] * (m - 2),
            list(rng.integers(0, 3, m)),
        ]
        sketches = pl.Series("regs", rows, dtype=pl.Array(pl.UInt8, m))
        got = hll.estimate(sketches)
        assert got.name == "regs"
        assert got.dtype == pl.Int64
        expected = [hll_estimate_by_rule([int(r) for r in row]) for row in rows]
        assert got.to_list() == expected
        assert expected[0] == 0
        assert hll.estimate(sketches[4:5]).to_list() == expected[4:5]  # one sketch
    empty = hll.estimate(pl.Series("regs", [], dtype=pl.Array(pl.UInt8, 16)))
    assert (empty.name, empty.len()) == ("regs", 0)
    assert empty.dtype == pl.Int64


def hll_registers_on_the_small_range_bound(m: int, bits: int) -> list[int]:
    """``m`` registers whose raw estimate is exactly ``2.5 m`` in double precision (and
    some zero): their sum of ``2**-r`` is a multiple of ``2**-bits`` (small enough to be
    summed exactly in any order) found by search next to ``alpha_m m / 2.5``, spelled as one
    register per binary digit below 1/4 and registers 0, 1 and 2 for the rest."""
    alpha_mm = 0.7213 / (1 + 1.079 / m) * m * m
    start = round(alpha_mm / (2.5 * m) * 2**bits)
    units = next(
        s
        for j in range(1 << 12)
        for s in (start + j, start - j)
        if alpha_mm / (s / 2**bits) == 2.5 * m
    )
    low = units % 2 ** (bits - 2)
    registers = [r for r in range(3, bits + 1) if low >> (bits - r) & 1]
    quarters, rest = (units - low) >> (bits - 2), m - len(registers)
    ones = (quarters - rest) % 3  # zeros, ones, twos: 4 z + 2 o + t = quarters, z + o + t = rest
    zeros = (quarters - rest - ones) // 3
    registers += [0] * zeros + [1] * ones + [2] * (rest - zeros - ones)
    assert zeros > 0
    assert math.fsum(2.0**-r for r in registers) == units / 2**bits
    return registers


def test_hll_estimate_on_the_small_range_bound_uses_linear_counting() -> None:
    """The small-range correction applies when the raw estimate is *at most* ``2.5 m``:
    register rows (m = 1024, 4096, 16384) whose raw estimate is exactly ``2.5 m`` get
    linear counting ``m ln(m / zeros)``, not the raw ``2.5 m``."""
    for m, bits in ((1024, 44), (4096, 42), (16384, 40)):
        registers = hll_registers_on_the_small_range_bound(m, bits)
        raw = 0.7213 / (1 + 1.079 / m) * m * m / math.fsum(2.0**-r for r in registers)
        assert raw == 2.5 * m
        linear = round(m * math.log(m / registers.count(0)))
        assert linear != round(raw)
        assert hll_estimate_by_rule(registers) == linear
        sketches = pl.Series("regs", [registers], dtype=pl.Array(pl.UInt8, m))
        assert hll.estimate(sketches).to_list() == [linear]


def test_hll_estimate_without_a_zero_register_is_raw_even_in_the_small_range() -> None:
    """Linear counting needs a zero register: rows of ones, or of ones and twos (raw
    estimates of about 1.44 m and 1.9 m, under 2.5 m) without any zero keep the raw
    estimate."""
    for m in (16, 4096):
        rows = [[1] * m, [1, 2] * (m // 2)]
        sketches = pl.Series("regs", rows, dtype=pl.Array(pl.UInt8, m))
        expected = [hll_estimate_by_rule(row) for row in rows]
        alpha = 0.7213 / (1 + 1.079 / m)
        assert expected == [round(alpha * m * 2), round(alpha * m * m / (0.375 * m))]
        assert hll.estimate(sketches).to_list() == expected


def combined(function: Any, old: dict[str, list[Any]], new: dict[str, list[Any]]) -> list[Any]:
    """``function.combine`` of the state columns ``old`` with ``new``, row by row."""
    data = pl.DataFrame(
        {**{f"a{n}": v for n, v in old.items()}, **{f"b{n}": v for n, v in new.items()}}
    )
    exprs = function.combine([pl.col(f"a{n}") for n in old], [pl.col(f"b{n}") for n in new])
    return data.select(e.alias(f"out{i}") for i, e in enumerate(exprs)).rows()


def test_min_and_max_combine_two_states_by_the_non_null_extremum() -> None:
    """Two states of one group, row by row: the smaller (larger) value, whichever side
    holds it; a null side (a group without values) gives the other side."""
    old = [3, 9, None, 4, None]
    new = [7, 2, 5, None, None]
    for function, pick in ((Min(), min), (Max(), max)):
        got = combined(function, {"v": old}, {"v": new})
        values = [[x for x in pair if x is not None] for pair in zip(old, new, strict=True)]
        assert got == [(pick(v) if v else None,) for v in values]


def test_counts_sums_and_averages_combine_two_states_by_adding_them() -> None:
    """count: the two counts added; sum and avg: the two sums and the two counts added,
    a null sum (no values on that side) adding nothing."""
    assert combined(Count(), {"v": [1, 0, 4]}, {"v": [2, 3, 0]}) == [(3,), (3,), (4,)]
    old: dict[str, list[Any]] = {"s": [1.5, None, 4.0], "c": [1, 0, 2]}
    new: dict[str, list[Any]] = {"s": [2.0, 3.0, None], "c": [2, 1, 0]}
    for function in (Sum(), Avg()):
        assert combined(function, old, new) == [(3.5, 3), (3.0, 1), (4.0, 2)]


Item = tuple[float, int]
"""One retained item of a KLL sketch: (value, level); it stands for ``2**level`` values."""


def kll_sketches(*sketches: list[Item] | None) -> pl.Series:
    """KLL states as `approx_percentile` hands them to `kll.quantile`: a struct of the
    values list and the levels list (UInt8) per sketch; None is a group without values."""
    dtype = pl.Struct({"v": pl.List(pl.Float64), "l": pl.List(pl.UInt8)})
    rows = [
        None if s is None else {"v": [v for v, _ in s], "l": [lv for _, lv in s]} for s in sketches
    ]
    return pl.Series("q", rows, dtype=dtype)


def kll_quantile_by_rule(items: list[Item] | None, threshold: Fraction) -> float | None:
    """KLL's quantile in plain Python: walking the items in value order, the first whose
    cumulative weight (sum of ``2**level``) reaches ``threshold`` (a fraction of the
    total weight); None without items."""
    if not items:
        return None
    total, seen = sum(2**level for _, level in items), 0
    for value, level in sorted(items):
        seen += 2**level
        if seen >= threshold * total:
            return value
    raise AssertionError("the last item always reaches the total weight")


def kll_on_tolerance(items: list[Item] | None, q: float) -> bool:
    """Whether a cumulative weight falls just under ``q`` times the total, within the
    relative rounding tolerance of `kll.quantile` (1e-12, widened here to 1e-11): there
    the exact rule and the code may differ by design."""
    total, seen = sum(2**level for _, level in items or []), 0
    for _, level in sorted(items or []):
        seen += 2**level
        if Fraction(q) * total * (1 - Fraction(1, 10**11)) <= seen < Fraction(q) * total:
            return True
    return False


def test_kll_quantile_weighs_an_item_two_to_its_level_in_64_bits() -> None:
    """Items at levels 31 and above weigh ``2**31``, ``2**40``... (not wrapped to 32
    bits): one heavy item outweighs all light ones; random sketches with levels up to 45,
    against the rule in exact arithmetic (no cumulative weight falls just under the
    threshold, within the code's relative rounding tolerance of 1e-12)."""
    rng = random.Random(19)
    cases: list[tuple[list[Item] | None, float]] = [
        ([(1.0, 0), (2.0, 40)], 0.5),
        ([(1.0, 31), (2.0, 0), (3.0, 0)], 0.5),
        ([(1.0, 0), (2.0, 0), (3.0, 31)], 0.5),
        ([(5.0, 33), (-1.0, 32), (7.0, 0)], 0.4),
        (None, 0.5),
    ]
    while len(cases) < 45:
        drawn = [(rng.uniform(-100, 100), rng.randint(0, 45)) for _ in range(rng.randint(1, 12))]
        q = rng.choice([0.0, 0.1, 0.25, 0.5, 0.77, 0.9, 1.0])
        if not kll_on_tolerance(drawn, q):
            cases.append((drawn, q))
    for items, q in cases:
        assert not kll_on_tolerance(items, q)
        got = kll.quantile(kll_sketches(items), q)
        assert got.to_list() == [kll_quantile_by_rule(items, Fraction(q))], (items, q)
    several = kll_sketches(*(case for case, _ in cases[:5]))
    assert kll.quantile(several, 0.5).to_list() == [2.0, 1.0, 3.0, 5.0, None]


def test_kll_quantile_counts_a_rank_on_its_rounding_tolerance_as_reached() -> None:
    """The rank threshold is ``q * total * (1 - 1e-12)`` (so that ``0.3 * 10``, which
    rounds above 3, still picks the 3rd value); a cumulative weight exactly equal to it
    counts as reached. For 10 values of weight 1 and each ``c``, the ``q`` whose threshold
    is exactly ``c`` (found here among the doubles next to ``c / 10``) picks the ``c``-th
    value, not the next."""
    items: list[Item] = [(float(v), 0) for v in range(10, 0, -1)]
    for c in (3, 7):
        q = c / 10 / (1 - 1e-12)
        while q * 10 * (1 - 1e-12) > c:
            q = math.nextafter(q, 0.0)
        while q * 10 * (1 - 1e-12) < c:
            q = math.nextafter(q, 1.0)
        assert q * 10 * (1 - 1e-12) == c, "no double lands on the threshold"
        assert q * 10 > c  # without the tolerance, the c-th value would not be reached
        got = kll.quantile(kll_sketches(items, None, items), q)
        assert got.to_list() == [float(c), None, float(c)]


def test_approx_percentile_takes_accuracy_one_and_refuses_non_ints() -> None:
    """``accuracy`` is an int of at least 1: 1 itself (buffers of 8 values, so exact up
    to 8 values) is accepted; a bool or a float is refused with TypeError, 0 and negatives
    with ValueError. Expected: Spark's rule in plain Python, the smallest value with at
    least ``q n`` values at or below it."""
    values = [5, 3, 8, 1, 7, 2, 6, 4]
    df = sk.from_arrow(pa.table({"v": pa.array(values, pa.int64())}))
    for q in (0.25, 0.5, 1.0):
        got = df.agg(sk.approx_percentile("v", q, accuracy=1).alias("m")).to_arrow()
        expected = next(x for x in sorted(values) if sum(v <= x for v in values) >= q * 8)
        assert got.to_pylist() == [{"m": expected}]
    for bad in (True, 2.5):
        with pytest.raises(TypeError, match="accuracy must be an int"):
            ApproxPercentile(0.5, bad)  # type: ignore[arg-type]
    for bad_int in (0, -3):
        with pytest.raises(ValueError, match="accuracy must be at least 1"):
            ApproxPercentile(0.5, bad_int)


@pytest.mark.parametrize("dense", [True, False])
def test_hll_build_gives_uint8_registers_also_for_no_rows(
    dense: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Registers are uint8 (one byte each, as the state column stores them) on the dense
    and on the sparse path; with no rows and no groups (string keys: the Polars path),
    zero sketches of ``2**p`` registers. A group's registers are the maximum rank per
    register index of its non-null values, from their hashes in plain Python."""
    if not dense:
        monkeypatch.setattr(hll, "MAX_DENSE_BYTES", 0)
    p = 4
    data = pl.DataFrame({"k": [1, 2, 1, 2, 1], "v": [10, 20, None, 30, 10]})
    reg, rho = hll.hash_rho(pl.col("v"), p)
    rows = data.with_columns(reg.alias("r"), rho.alias("h"))
    groups = pl.DataFrame({"k": [2, 1]})
    got = hll.build(rows, groups, keys=["k"], hashes="r", rho="h", p=p)
    assert got.dtype == np.uint8
    expected = np.zeros((2, 16), dtype=np.uint8)
    for k, v, h in zip(data["k"], data["v"], data["v"].hash(hll.SEED), strict=True):
        if v is not None:
            rest = (h << p) & ((1 << 64) - 1)
            cell = (0 if k == 2 else 1, h >> (64 - p))
            expected[cell] = max(expected[cell], min(64 - rest.bit_length() + 1, 64 - p + 1))
    assert got.tolist() == expected.tolist()
    empty = pl.DataFrame(
        {"s": [], "r": [], "h": []}, schema={"s": pl.String, "r": pl.UInt64, "h": pl.UInt8}
    )
    none = hll.build(empty, empty.select("s"), keys=["s"], hashes="r", rho="h", p=p)
    assert none.dtype == np.uint8
    assert none.shape == (0, 16)


def test_hll_build_with_keys_too_wide_to_code_densely() -> None:
    """Keys spanning more than 2**40 values cannot be coded into dense slots: the registers
    come from the general path, the maximum rank per register index of each group's
    values (from their hashes in plain Python)."""
    p = 4
    data = pl.DataFrame({"k": [0, 2**41, 0], "v": [10, 20, 30]})
    reg, rho = hll.hash_rho(pl.col("v"), p)
    rows = data.with_columns(reg.alias("r"), rho.alias("h"))
    got = hll.build(rows, pl.DataFrame({"k": [0, 2**41]}), keys=["k"], hashes="r", rho="h", p=p)
    expected = np.zeros((2, 16), dtype=np.uint8)
    for k, h in zip(data["k"], data["v"].hash(hll.SEED), strict=True):
        rest = (h << p) & ((1 << 64) - 1)
        cell = (0 if k == 0 else 1, h >> (64 - p))
        expected[cell] = max(expected[cell], min(64 - rest.bit_length() + 1, 64 - p + 1))
    assert got.tolist() == expected.tolist()


def compact_by_hand(items: list[tuple[int, float, int]], k: int) -> list[tuple[int, float, int]]:
    """KLL compaction as the kll module docstring states it, in plain Python: per round,
    every buffer (group, level) over ``k`` is sorted; with an odd count its largest item
    stays; the others at odd or even ranks (coin: the smallest hash of the buffer's values
    plus the level, mod 2) move up a level, the rest are dropped. Only the coin's hash
    comes from Polars (the seeded hash is the documented pseudo-random source)."""
    buffers: dict[tuple[int, int], list[float]] = {}
    for g, v, level in items:
        buffers.setdefault((g, level), []).append(v)
    while any(len(values) > k for values in buffers.values()):
        after: dict[tuple[int, int], list[float]] = {}
        for (g, level), values in buffers.items():
            if len(values) <= k:
                after.setdefault((g, level), []).extend(values)
                continue
            ordered = sorted(values)
            hashes = pl.Series(ordered).hash(kll.SEED)
            coin = (int(hashes.min()) + level) % 2  # type: ignore[arg-type]
            if len(ordered) % 2:
                after.setdefault((g, level), []).append(ordered.pop())
            up = [v for rank, v in enumerate(ordered) if rank % 2 == coin]
            after.setdefault((g, level + 1), []).extend(up)
        buffers = after
    return sorted((g, v, level) for (g, level), values in buffers.items() for v in values)


def test_kll_compaction_of_several_groups_and_full_levels_at_once_matches_the_rules() -> None:
    # two groups; group 0 has levels 0 and 1 over k in the same round (as after merging
    # partial sketches), odd and even counts; group 1 is over k at level 0 only; a few
    # seeds, so that the coins of different buffers differ somewhere
    for seed in range(6):
        rng = random.Random(seed)
        items = [(0, float(rng.randrange(1000)), 0) for _ in range(11)]
        items += [(0, float(rng.randrange(1000)), 1) for _ in range(8)]
        items += [(1, float(rng.randrange(1000)), 0) for _ in range(9)]
        items += [(1, float(rng.randrange(1000)), 1) for _ in range(2)]
        schema = {kll.G: pl.UInt32, kll.V: pl.Float64, kll.L: pl.UInt8}
        long = pl.DataFrame(items, schema=schema, orient="row")
        assert sorted(kll.compact(long, 4).iter_rows()) == compact_by_hand(items, 4), seed


def test_an_aggregation_over_exactly_two_chunks_counts_both_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("streamkit.io.CHUNK_ROWS", 2)  # an in-memory table: 2 rows a chunk
    both = pa.table(
        {"k": pa.array([1, 2, 1, 3], pa.int64()), "v": pa.array([10, 20, 5, 7], pa.int32())}
    )
    grouped = sk.from_arrow(both).group_by("k").agg(sk.count().alias("n"), sk.sum("v").alias("s"))
    # by hand: key 1 in both chunks (10 + 5), keys 2 and 3 once each
    assert sorted(frame(grouped).rows()) == [(1, 2, 15), (2, 1, 20), (3, 1, 7)]
    assert frame(sk.from_arrow(both).agg(sk.count().alias("n"))).rows() == [(4,)]


def test_grouped_results_come_sorted_by_key_with_the_null_key_last() -> None:
    keys = [7, None, 3, 9, 3, 1, 8, 2, 6, 5, 4, 0]
    rows = pa.table({"k": pa.array(keys, pa.int64()), "v": pa.array(range(12), pa.int32())})
    got = frame(sk.from_arrow(rows).group_by("k").agg(sk.count().alias("n"))).rows()
    # by hand: keys 0-9 in order (3 twice), then the null key
    assert got == [(k, 2 if k == 3 else 1) for k in range(10)] + [(None, 1)]


def test_a_key_with_one_value_and_nulls_still_sorts_its_null_group_last() -> None:
    rows = pa.table(
        {"a": pa.array([1, None, 1, 1], pa.int64()), "b": pa.array([3, 1, 2, 3], pa.int64())}
    )
    got = frame(sk.from_arrow(rows).group_by("a", "b").agg(sk.count().alias("n"))).rows()
    assert got == [(1, 2, 1), (1, 3, 2), (None, 1, 1)]  # by a (nulls last), then b


def test_string_keys_are_sorted_too() -> None:
    rows = pa.table({"s": pa.array(["pear", "apple", "fig", "apple", "kiwi"])})
    got = frame(sk.from_arrow(rows).group_by("s").agg(sk.count().alias("n"))).rows()
    assert got == [("apple", 2), ("fig", 1), ("kiwi", 1), ("pear", 1)]


def _keyed() -> Any:
    """The plan node of ``group_by("k").agg(count, sum("v"))``."""
    from streamkit.plan import Aggregate

    empty = sk.from_arrow(pa.table({"k": pa.array([], pa.int64()), "v": pa.array([], pa.int64())}))
    node = empty.group_by("k").agg(sk.count().alias("n"), sk.sum("v").alias("s")).plan
    assert isinstance(node, Aggregate)
    return node


def _states(node: Any, spec: Any, rows: list[tuple[int, int]]) -> pl.DataFrame:
    """The partial states of ``rows`` (k, v), one per key, sorted by key."""
    from streamkit import aggregate as K
    from streamkit.execute import aggregate_rows, compile_plan, given

    data = pl.DataFrame({"k": [k for k, _ in rows], "v": [v for _, v in rows]})
    lazy = compile_plan(node.input, None, set(), given(data))
    states = K.partial(aggregate_rows(lazy, node, spec), spec)
    return K.sort_groups(states, spec.state_keys)


def test_combine_adds_two_frames_of_states_row_by_row_without_a_group_by() -> None:
    """``aggregate.combine`` of two state frames of the same keys (same columns and types)
    is their merge: counts and sums added per key, not None (the regroup fallback)."""
    from streamkit import aggregate as K

    node = _keyed()
    spec = aggregate_spec(node)
    first, second = [(1, 5), (2, 7), (1, 1), (3, 2)], [(2, 10), (3, 4), (1, 3), (3, 1)]
    old, new = _states(node, spec, first), _states(node, spec, second)
    got = K.combine(old, new, spec)
    assert got is not None, "combine fell back to a regroup for counts and sums"
    want: dict[int, list[int]] = {}
    for k, v in first + second:
        want.setdefault(k, [0, 0])
        want[k][0] += 1
        want[k][1] += v
    out = K.finalize(got, spec)
    assert sorted(zip(out["k"], out["n"], out["s"], strict=True)) == [
        (k, n, s) for k, (n, s) in sorted(want.items())
    ]
    rows = sorted(zip(got["k"], got[K.ROWS], strict=True))  # the hidden row count, too
    assert rows == [(k, n) for k, (n, _) in sorted(want.items())]


def test_merge_sums_the_extra_columns_it_is_given_per_group() -> None:
    """``aggregate.merge(states, spec, sums)`` (the fleet's source stage merges sliding
    windows with a per-row late count this way): one row per key, the aggregates merged and
    each column named in ``sums`` added up per key; without ``sums`` it is not kept."""
    from streamkit import aggregate as K

    node = _keyed()
    spec = aggregate_spec(node)
    first, second = [(1, 5), (2, 7)], [(2, 10), (1, 3), (3, 1)]
    extra = {1: (4, 6), 2: (1, 2)}  # key -> its extra count in the first / second frame
    old = _states(node, spec, first)
    old = old.with_columns(x=pl.col("k").replace_strict({k: a for k, (a, _) in extra.items()}))
    new = _states(node, spec, second)
    new = new.with_columns(
        x=pl.col("k").replace_strict({k: b for k, (_, b) in extra.items()}, default=9)
    )
    got = K.merge(pl.concat([old, new]), spec, ("x",))
    want_x = {1: 4 + 6, 2: 1 + 2, 3: 9}
    assert sorted(zip(got["k"], got["x"], strict=True)) == sorted(want_x.items())
    out = K.finalize(got, spec)
    assert sorted(zip(out["k"], out["n"], out["s"], strict=True)) == [
        (1, 2, 8),
        (2, 2, 17),
        (3, 1, 1),
    ]


def test_combine_refuses_frames_that_are_not_the_specs_state_or_differ_in_types() -> None:
    """None (the caller regroups) when the frames hold a column the state has not, even
    when both frames agree, and when the two frames' types differ."""
    from streamkit import aggregate as K

    node = _keyed()
    spec = aggregate_spec(node)
    old = _states(node, spec, [(1, 5), (2, 7)])
    extra = pl.lit(1).alias("extra")
    assert K.combine(old.with_columns(extra), old.with_columns(extra), spec) is None
    wider = old.with_columns(pl.col(c).cast(pl.Float64) for c in old.columns if c != "k")
    assert K.combine(old, wider, spec) is None


def test_an_aggregate_without_slot_hooks_declines_them_and_says_so_when_called() -> None:
    """The base hooks: ``by_slots`` says False whatever the slot count, and
    ``slot_states`` (which the kernel then never calls) raises naming the aggregate."""
    frame = pl.DataFrame({"k": [1, 2, 1], "v": [3, None, 5]})
    slots = S.fit(frame, ["k"], max_slots=frame.height)
    assert slots is not None
    for function in (Min(), Max()):
        assert not function.by_slots(pl.Int64(), 0)
        assert not function.by_slots(pl.Int64(), slots.size)
        with pytest.raises(NotImplementedError, match=f"^{function.name} has no dense-slot state$"):
            function.slot_states(slots, [frame["v"]], pl.Int64())


def test_approx_count_distinct_takes_slots_while_their_registers_fit_256_mib() -> None:
    """The sketch over dense slots needs ``slots * 2**p`` register bytes in one buffer of
    at most 256 MiB: the hook says yes up to exactly that many slots, no beyond."""
    for rsd in (0.1, 0.02, 0.005):
        function = ApproxCountDistinct(rsd)
        limit = (256 << 20) // (1 << function.precision)  # slots whose registers fill it
        assert function.by_slots(pl.Utf8(), 0)
        assert function.by_slots(pl.Utf8(), limit)
        assert not function.by_slots(pl.Utf8(), limit + 1)
        assert not function.by_slots(pl.Utf8(), limit << 8)


def _hll_estimate_by_hand(registers: list[int]) -> int:
    """HyperLogLog's estimate of one sketch, in plain Python: ``alpha m^2 / sum 2^-r``,
    or ``m ln(m / zeros)`` when that is at most ``2.5 m`` and some register is zero."""
    m = len(registers)
    raw = 0.7213 / (1 + 1.079 / m) * m * m / sum(2.0**-r for r in registers)
    zeros = registers.count(0)
    return round(m * math.log(m / zeros) if raw <= 2.5 * m and zeros else raw)


def test_hll_estimates_many_more_sketches_than_registers_each_as_alone() -> None:
    """A batch of 100 sketches of 16 registers (p = 4): every row's estimate is the
    hand formula's; the harmonic sums are taken a few rows at a time, over all rows."""
    rng = random.Random(7)
    sketches = [[rng.choice([0, 0, 1, 2, 3, 5, 9]) for _ in range(16)] for _ in range(100)]
    got = hll.estimate(pl.Series("s", sketches, dtype=pl.Array(pl.UInt8, 16)))
    assert got.to_list() == [_hll_estimate_by_hand(r) for r in sketches]
