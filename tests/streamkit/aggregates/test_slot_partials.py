"""count/sum/avg/approx_count_distinct computed over dense group slots (no hash group-by)
equal a plain-Python derivation from the rows put.

Expected values are computed row by row in Python: counts, integer sums wrapped to int64
(Polars' and the group-by path's overflow rule), float sums added in row order from 0.0
(the slot path's documented order), averages as that sum over the count, nulls skipped,
a group of nulls summing to null. Keys cover integers, dictionary strings (Polars
categoricals) and booleans, with nulls, a window bucket, one global group, many groups;
``approx_count_distinct`` must be bit-identical to the group-by path's. Each test checks
that the slot path really ran (or, for keys too spread out, that it stepped aside).
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute
import pytest

import streamkit as sk
from streamkit import aggregate as K
from streamkit.aggregates import slots as S

N = 30_000
HOUR_US = 3_600_000_000
Key = tuple[Any, ...]


def rows_table(seed: int, groups: int = 40) -> pa.Table:
    """Keys with nulls; int32 and float64 values with nulls; key 7 has only null values."""
    rng = np.random.default_rng(seed)
    k = rng.integers(-5, groups, N)
    null = rng.random(N) < 0.1
    only_null = (k == 7) | null
    return pa.table(
        {
            "k": pa.array(k, pa.int64(), mask=rng.random(N) < 0.05),
            "c": pa.array(rng.choice(["ab", "cd", "ef", "gh"], N), mask=rng.random(N) < 0.05)
            .cast(pa.string())
            .dictionary_encode(),
            "b": pa.array(rng.random(N) < 0.3),
            "t": pa.array(rng.integers(0, 10 * HOUR_US, N), pa.timestamp("us", "UTC")),
            "vi": pa.array(rng.integers(-1000, 1000, N), pa.int32(), mask=only_null),
            "vf": pa.array(np.round(rng.lognormal(3, 1, N), 2), pa.float64(), mask=only_null),
            "u": pa.array(rng.integers(0, 3000, N), pa.int64()),
        }
    )


def python_groups(table: pa.Table, key: Callable[[dict[str, Any]], Key]) -> dict[Key, list[Any]]:
    """Per key: [rows, count(vi), sum(vi), avg(vi), sum(vf), avg(vf)] by Spark's rules, in
    row order; integer sums wrap to int64 as Polars' do."""
    acc: dict[Key, dict[str, Any]] = defaultdict(
        lambda: {"n": 0, "ci": 0, "si": 0, "fi": 0.0, "cf": 0, "sf": 0.0}
    )
    for row in table.to_pylist():
        a = acc[key(row)]
        a["n"] += 1
        if row["vi"] is not None:
            a["ci"], a["si"], a["fi"] = a["ci"] + 1, a["si"] + row["vi"], a["fi"] + row["vi"]
        if row["vf"] is not None:
            a["cf"], a["sf"] = a["cf"] + 1, a["sf"] + row["vf"]
    out = {}
    for k, a in acc.items():
        si = (a["si"] + 2**63) % 2**64 - 2**63 if a["ci"] else None
        avg_i = a["fi"] / a["ci"] if a["ci"] else None
        sf, avg_f = (a["sf"], a["sf"] / a["cf"]) if a["cf"] else (None, None)
        out[k] = [a["n"], a["ci"], si, avg_i, sf, avg_f]
    return out


AGGS = (
    sk.count().alias("n"),
    sk.count("vi").alias("ci"),
    sk.sum("vi").alias("si"),
    sk.avg("vi").alias("ai"),
    sk.sum("vf").alias("sf"),
    sk.avg("vf").alias("af"),
    sk.approx_count_distinct("u").alias("d"),
)
VALUES = ["n", "ci", "si", "ai", "sf", "af"]


def slot_runs(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Records, per partial computed, whether the slot path gave it."""
    taken: list[bool] = []
    real = K._slot_partial

    def spy(data: pl.DataFrame, group: list[str], spec: K.AggregateSpec) -> pl.DataFrame | None:
        states = real(data, group, spec)
        taken.append(states is not None)
        return states

    monkeypatch.setattr(K, "_slot_partial", spy)
    return taken


def result(query: sk.DataFrame, keys: list[str]) -> dict[Key, tuple[Any, ...]]:
    """Per group key: the values of ``VALUES`` then the distinct estimate; a window key
    stands for its start in microseconds since the epoch."""
    out = pl.from_arrow(query.to_arrow())
    assert isinstance(out, pl.DataFrame)
    if "window" in out.columns:
        out = out.with_columns(
            pl.col("window").struct.field("start").dt.epoch("us").alias("window")
        )
    rows = out.select(*keys, *VALUES, "d").rows()
    return {r[: len(keys)]: r[len(keys) :] for r in rows}


def check(
    query: sk.DataFrame,
    keys: list[str],
    expected: dict[Key, list[Any]],
    monkeypatch: pytest.MonkeyPatch,
    *,
    slots: bool = True,
) -> None:
    """The result with the slot path on equals ``expected``, and its distinct estimates
    equal the group-by path's."""
    taken = slot_runs(monkeypatch)
    monkeypatch.setattr(K, "SLOT_MIN_ROWS", 1)
    got = result(query, keys)
    assert taken == [slots]
    monkeypatch.setattr(K, "SLOT_MIN_ROWS", 2**62)  # the group-by path
    before = result(query, keys)
    assert taken == [slots, False]
    values = {k: list(v[:-1]) for k, v in got.items()}
    if slots:
        assert values == expected  # float sums too: added in row order
    else:  # the group-by adds floats in its own order (threads): equal to the last bits
        assert values.keys() == expected.keys()
        for key, row in expected.items():
            assert values[key] == [x if x is None else pytest.approx(x, rel=1e-12) for x in row]
    assert {k: v[-1] for k, v in got.items()} == {k: v[-1] for k, v in before.items()}


@pytest.mark.parametrize(
    "keys", [["k"], ["c"], ["c", "k"], ["b", "c"]], ids=["int", "dict", "dict-int", "bool-dict"]
)
def test_groups_with_null_keys_and_values_equal_python(
    keys: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    table = rows_table(seed=len(keys))
    expected = python_groups(table, lambda r: tuple(r[k] for k in keys))
    assert any(None in k for k in expected)
    assert len(expected) > 4
    assert ("k" in keys) == any(v[1] == 0 for v in expected.values())  # k == 7: null values
    query = sk.from_arrow(table).group_by(*keys).agg(*AGGS)
    check(query, keys, expected, monkeypatch)


def test_windows_and_many_groups_equal_python(monkeypatch: pytest.MonkeyPatch) -> None:
    table = rows_table(seed=5, groups=2000)
    epoch = pa.compute.cast(table.column("t"), pa.int64()).to_pylist()
    table = table.append_column("tu", pa.array(epoch, pa.int64()))
    expected = python_groups(table, lambda r: (r["tu"] // HOUR_US * HOUR_US, r["k"]))
    assert len(expected) > 10_000
    query = sk.from_arrow(table).group_by(sk.window("t", "1 hour"), "k").agg(*AGGS)
    check(query, ["window", "k"], expected, monkeypatch)


def test_one_global_group_and_an_int_sum_that_wraps(monkeypatch: pytest.MonkeyPatch) -> None:
    table = rows_table(seed=9)
    big = pa.array(np.full(N, 2**62 - 3, np.int64))
    table = table.set_column(table.schema.get_field_index("vi"), "vi", big)
    expected = python_groups(table, lambda r: ())
    assert not -(2**63) <= N * (2**62 - 3) < 2**63  # the sum wraps
    check(sk.from_arrow(table).agg(*AGGS), [], expected, monkeypatch)


def test_keys_more_spread_than_rows_take_the_group_by(monkeypatch: pytest.MonkeyPatch) -> None:
    table = rows_table(seed=11)
    spread = pa.compute.multiply(table.column("k"), 10**9)
    table = table.set_column(table.schema.get_field_index("k"), "k", spread)
    expected = python_groups(table, lambda r: (r["k"],))
    query = sk.from_arrow(table).group_by("k").agg(*AGGS)
    check(query, ["k"], expected, monkeypatch, slots=False)


def test_no_rows_give_no_groups_and_one_global_row(monkeypatch: pytest.MonkeyPatch) -> None:
    empty = sk.from_arrow(rows_table(seed=1).slice(0, 0))
    monkeypatch.setattr(K, "SLOT_MIN_ROWS", 0)
    assert empty.group_by("k", "c").agg(*AGGS).to_arrow().num_rows == 0
    whole = pl.from_arrow(empty.agg(*AGGS).to_arrow())
    assert isinstance(whole, pl.DataFrame)
    assert whole.rows() == [(0, 0, None, None, None, None, 0)]


def test_slots_decode_to_the_distinct_keys_of_every_codable_type() -> None:
    """Enum, date, timestamp, int8 and uint64 (above 2**63) keys, with nulls: the occupied
    slots decode to exactly the frame's distinct key tuples, typed as the frame's, and the
    rows per slot are the group sizes (Polars' ``group_by().len()``)."""
    rng = np.random.default_rng(3)
    n = 5_000

    def nulls(values: pl.Series) -> pl.Series:
        return values.scatter(np.flatnonzero(rng.random(n) < 0.05), None)

    ticks = rng.integers(0, 5, n) + 1_700_000_000_000_000  # microseconds: codes are ticks
    frame = pl.DataFrame(
        {
            "e": nulls(pl.Series(rng.choice(["x", "y", "z"], n)).cast(pl.Enum(["z", "y", "x"]))),
            "d": nulls(pl.Series(rng.integers(19_000, 19_010, n), dtype=pl.Int32).cast(pl.Date)),
            "t": pl.Series(ticks).cast(pl.Datetime("us", "UTC")),
            "i8": nulls(pl.Series(rng.integers(-3, 3, n), dtype=pl.Int8)),
            "u64": pl.Series(rng.integers(0, 4, n).astype(np.uint64) + np.uint64(2**63 + 5)),
        }
    )
    for keys in (["e", "d"], ["t", "i8"], ["u64", "e"]):
        slots = S.fit(frame, keys, max_slots=n)
        assert slots is not None
        decoded = slots.keys(frame)
        assert decoded is not None
        got = pl.DataFrame(decoded)
        assert got.schema == frame.select(keys).schema
        sizes = {r[:-1]: r[-1] for r in frame.group_by(keys).len().rows()}
        assert dict(zip(got.rows(), slots.rows.tolist(), strict=True)) == sizes


@pytest.mark.parametrize("block", [S.ROW_BLOCK, 7], ids=["one-block", "857-blocks"])
def test_categorical_keys_come_back_as_the_rows_values_among_many_other_categories(
    block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A categorical key made after 20,000 other strings joined the process's categories:
    the occupied slots' keys are the frame's distinct (key, int) pairs, typed as the frame's,
    with the group sizes of Polars' ``group_by().len()``; also when the row of each slot is
    found in many blocks of rows, the last one short."""
    monkeypatch.setattr(S, "ROW_BLOCK", block)
    others = pl.Series([f"other-{i}" for i in range(20_000)], dtype=pl.Categorical())
    rng = np.random.default_rng(11)
    n = 6_000
    frame = pl.DataFrame(
        {
            "c": pl.Series(
                [("red", "green", "blue", None)[i] for i in rng.integers(0, 4, n)],
                dtype=pl.Categorical(),
            ),
            "i": pl.Series(rng.integers(-2, 2, n), dtype=pl.Int16),
        }
    )
    slots = S.fit(frame, ["c", "i"], max_slots=n)
    assert slots is not None
    got = pl.DataFrame(slots.keys(frame))
    assert got.schema == frame.schema
    sizes = {r[:-1]: r[-1] for r in frame.group_by(["c", "i"]).len().rows()}
    assert dict(zip(got.rows(), slots.rows.tolist(), strict=True)) == sizes
    assert others.len() == 20_000  # (kept alive while the slots are read)


def test_columns_with_their_own_nulls_count_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two value columns whose nulls fall on different rows: each one's counts, sums and
    averages skip its own nulls (the per-column counts are not shared)."""
    table = rows_table(seed=13)
    rng = np.random.default_rng(13)
    vf = pa.array(np.round(rng.lognormal(3, 1, N), 2), pa.float64(), mask=rng.random(N) < 0.3)
    table = table.set_column(table.schema.get_field_index("vf"), "vf", vf)
    nulls_i = table.column("vi").is_null().to_pylist()
    nulls_f = table.column("vf").is_null().to_pylist()
    assert any(i and not f for i, f in zip(nulls_i, nulls_f, strict=True))
    assert any(f and not i for i, f in zip(nulls_i, nulls_f, strict=True))
    expected = python_groups(table, lambda r: (r["k"],))
    check(sk.from_arrow(table).group_by("k").agg(*AGGS), ["k"], expected, monkeypatch)


def test_uint64_and_decimal_inputs_take_the_group_by(monkeypatch: pytest.MonkeyPatch) -> None:
    """sum/avg of UInt64 and Decimal columns (numeric, but not summed over slots) step
    aside to the group-by and equal Python; a UInt64 sum above the Int64 range is refused
    there, not wrapped. An Int64 column of the same rows takes the slot path."""
    rng = np.random.default_rng(17)
    keys = rng.integers(0, 5, N)
    big = rng.integers(0, 2**40, N).tolist()
    cents = rng.integers(-10_000, 10_000, N).tolist()
    table = pa.table(
        {
            "k": pa.array(keys, pa.int64()),
            "u": pa.array(big, pa.uint64()),
            "i": pa.array(big, pa.int64()),
            "d": pa.array([Decimal(c).scaleb(-2) for c in cents], pa.decimal128(10, 2)),
        }
    )
    taken = slot_runs(monkeypatch)
    monkeypatch.setattr(K, "SLOT_MIN_ROWS", 1)
    groups: dict[int, list[int]] = defaultdict(list)
    for row, key in enumerate(keys.tolist()):
        groups[key].append(row)
    for column, values in (("u", big), ("d", [Decimal(c).scaleb(-2) for c in cents])):
        for agg in (sk.sum, sk.avg):  # one query each: either alone must step aside
            query = sk.from_arrow(table).group_by("k").agg(agg(column).alias("x"))
            got = {r["k"]: r["x"] for r in query.to_arrow().to_pylist()}
            assert got.keys() == groups.keys()
            for key, rows in groups.items():
                total = sum(values[r] for r in rows)
                if agg is sk.avg:
                    assert got[key] == pytest.approx(float(total) / len(rows), rel=1e-12)
                else:
                    assert got[key] == (total if column == "u" else pytest.approx(float(total)))
    assert taken == []  # the slot path was not even tried
    sk.from_arrow(table).group_by("k").agg(sk.sum("i").alias("s")).to_arrow()
    assert taken == [True]
    above = table.set_column(1, "u", pa.array([2**63 + b for b in big], pa.uint64()))
    with pytest.raises(pl.exceptions.InvalidOperationError):
        sk.from_arrow(above).group_by("k").agg(sk.sum("u").alias("s")).to_arrow()


def test_fit_takes_up_to_max_slots_key_combinations_and_steps_aside_beyond() -> None:
    """The possible key combinations are each key's range plus a null code, multiplied:
    ``fit`` numbers the rows when they are at most ``max_slots`` and gives None beyond;
    the rows per slot (int64) are the group sizes."""
    a = [-3, 6, 0, None, 0, 6]
    b = [1, 2, 2, 1, 2, 2]
    frame = pl.DataFrame({"a": a, "b": pl.Series(b, dtype=pl.Int8)})
    combinations = (6 - -3 + 2) * (2 - 1 + 2)
    assert S.fit(frame, ["a", "b"], max_slots=combinations - 1) is None
    slots = S.fit(frame, ["a", "b"], max_slots=combinations)
    assert slots is not None
    assert slots.size == combinations
    decoded = slots.keys(frame)
    assert decoded is not None
    sizes: dict[Key, int] = defaultdict(int)
    for pair in zip(a, b, strict=True):
        sizes[pair] += 1
    assert slots.rows.dtype == np.int64
    assert dict(zip(pl.DataFrame(decoded).rows(), slots.rows.tolist(), strict=True)) == sizes


def test_a_chunk_of_exactly_slot_min_rows_takes_the_slot_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``SLOT_MIN_ROWS`` is the fewest rows the slot path takes: a chunk of exactly that
    many takes it, one of a row fewer the group-by; both equal Python."""
    table = rows_table(seed=23)
    taken = slot_runs(monkeypatch)
    monkeypatch.setattr(K, "SLOT_MIN_ROWS", N)
    for rows in (table, table.slice(0, N - 1)):
        expected = python_groups(rows, lambda r: (r["k"],))
        got = result(sk.from_arrow(rows).group_by("k").agg(*AGGS), ["k"])
        assert got.keys() == expected.keys()
        for key, row in expected.items():
            approx = [x if x is None else pytest.approx(x, rel=1e-12) for x in row]
            assert list(got[key][:-1]) == approx
    assert taken == [True, False]


def test_chunks_of_both_paths_merge_with_a_sketch_listed_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A query read in two chunks, one large enough for the slot path and one not, with
    the sketch aggregate listed before the others: the two chunks' states line up (the
    slot path lays out its columns as the group-by does) and the result equals Python,
    its distinct estimates the group-by path's."""
    table = rows_table(seed=29)
    first = (sk.approx_count_distinct("u").alias("d"), *AGGS[:-1])
    query = sk.from_arrow(table).group_by("k").agg(*first)
    monkeypatch.setattr(sk.io, "CHUNK_ROWS", 20_000)
    taken = slot_runs(monkeypatch)
    monkeypatch.setattr(K, "SLOT_MIN_ROWS", 15_000)
    got = result(query, ["k"])
    assert sorted(taken) == [False, True]
    monkeypatch.setattr(K, "SLOT_MIN_ROWS", 2**62)  # the group-by path only
    before = result(query, ["k"])
    expected = python_groups(table, lambda r: (r["k"],))
    assert got.keys() == expected.keys()
    for key, row in expected.items():
        approx = [x if x is None else pytest.approx(x, rel=1e-12) for x in row]
        assert list(got[key][:-1]) == approx
    assert {k: v[-1] for k, v in got.items()} == {k: v[-1] for k, v in before.items()}


def test_float_sums_reach_nan_and_inf_without_a_numpy_warning() -> None:
    """Slot sums of inf + -inf (NaN) and of two values whose sum overflows (inf) give
    IEEE's results, as the group-by does, and raise no RuntimeWarning (with warnings as
    errors, as a user's ``-W error`` would)."""
    frame = pl.DataFrame(
        {"k": [0, 0, 1, 1, 2], "v": [float("inf"), float("-inf"), 1e308, 1e308, 2.5]}
    )
    slots = S.fit(frame, ["k"], max_slots=frame.height)
    assert slots is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sums = slots.total(frame["v"], np.float64)
    assert math.isnan(sums[0])
    assert sums[1] == float("inf")
    assert sums[2] == 2.5


def test_categorical_keys_of_the_slot_path_are_read_from_a_row_of_each_slot() -> None:
    """70,000 rows (the slot path, two ROW_BLOCKs of 65,536) keyed by a categorical: a key
    only in the first row and one only in the last keep their values, counts and sums (by
    hand: ``a`` at the odd rows 1..69,997, ``b`` at the even rows 2..69,998)."""
    n = 70_000
    keys = ["solo"] + ["a", "b"] * ((n - 2) // 2) + ["late"]
    frame = pl.DataFrame(
        {"k": keys, "v": list(range(n))}, schema={"k": pl.Categorical, "v": pl.Int64}
    )
    query = sk.from_arrow(frame.to_arrow()).group_by("k")
    out = query.agg(sk.count().alias("n"), sk.sum("v").alias("s")).to_arrow()
    got = {r["k"]: (r["n"], r["s"]) for r in out.to_pylist()}
    a, b = range(1, n - 1, 2), range(2, n - 1, 2)
    assert got == {
        "solo": (1, 0), "a": (len(a), sum(a)), "b": (len(b), sum(b)), "late": (1, n - 1),
    }  # fmt: skip
