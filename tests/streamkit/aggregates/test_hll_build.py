"""The vectorised sketch build equals a plain-Python build of the registers.

The reference takes only Polars' 64-bit hash of each value (the hash is the sketch's
definition) and does the rest row by row with Python integers: register = top ``p`` bits,
rank = leading zeros of the remaining bits + 1 (capped at ``64 - p + 1``), register-wise
maximum per group, nulls skipped. Keys cover the numpy fast path (integers, categoricals,
booleans, uint64 beyond int64) and the Polars path (nulls in keys, strings), with the dense
buffer and with the sparse fallback.
"""

from __future__ import annotations

import itertools
from collections import defaultdict

import numpy as np
import polars as pl
import pytest

from streamkit.aggregates import hll
from streamkit.aggregates import slots as S
from streamkit.groupids import GroupCoder

P = 8
M = 1 << P
N = 20_000


def reference(
    frame: pl.DataFrame, keys: list[str], value: str, p: int
) -> dict[tuple[object, ...], list[int]]:
    """Registers per key tuple, row by row in Python."""
    hashes = frame.select(pl.col(value).hash(hll.SEED)).to_series().to_list()
    regs: dict[tuple[object, ...], list[int]] = defaultdict(lambda: [0] * (1 << p))
    rows = frame.select([*keys, value]).rows()
    for row, h in zip(rows, hashes, strict=True):
        key, v = row[:-1], row[-1]
        sketch = regs[key]  # a group whose values are all null still gets a sketch
        if v is None:
            continue
        index = h >> (64 - p)
        rest = (h << p) & ((1 << 64) - 1)
        rank = min(64 - rest.bit_length() + 1, 64 - p + 1)
        sketch[index] = max(sketch[index], rank)
    return regs


def frame(seed: int, null_keys: bool) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    values = rng.integers(-(2**62), 2**62, N)
    key_nulls = rng.random(N) < (0.05 if null_keys else 0.0)
    return pl.DataFrame(
        {
            "i": pl.Series(rng.integers(-3, 40, N)),  # negative low: offsets below zero
            "c": pl.Series(rng.choice(["x", "y", "z", "w"], N)).cast(pl.Categorical),
            "b": pl.Series(rng.random(N) < 0.5),
            "u": pl.Series(rng.integers(0, 5, N).astype(np.uint64) + np.uint64(2**63)),
            "s": pl.Series(rng.choice(["p", "q"], N)),
            "v": pl.Series(values),
        }
    ).with_columns(
        pl.lit(0, dtype=pl.Int32).alias("g0"),
        pl.when(pl.Series(key_nulls)).then(None).otherwise(pl.col("i")).alias("n"),
        pl.when(pl.Series(key_nulls)).then(None).otherwise(pl.col("s")).alias("s"),
        # 10% null values, and group i == 7 has only nulls
        pl.when((pl.Series(rng.random(N)) < 0.1) | (pl.col("i") == 7))
        .then(None)
        .otherwise(pl.col("v"))
        .alias("v"),
    )


def build(data: pl.DataFrame, keys: list[str]) -> dict[tuple[object, ...], list[int]]:
    reg, rho = hll.hash_rho(pl.col("v"), P)
    rows = data.with_columns(reg.alias("r"), rho.alias("h"))
    groups = rows.group_by(keys).agg(pl.len())
    registers = hll.build(rows, groups, keys=keys, hashes="r", rho="h", p=P)
    return {row: registers[i].tolist() for i, row in enumerate(groups.select(keys).rows())}


CASES = [
    (["i", "c"], False),  # numpy path: signed ints + categorical
    (["b", "u", "i"], False),  # booleans and uint64 above 2**63
    (["n", "c"], True),  # null keys: the Polars path
    (["s"], True),  # strings (with nulls)
    (["g0"], False),  # a global aggregate: one constant key, one group
]


@pytest.mark.parametrize(("keys", "null_keys"), CASES)
@pytest.mark.parametrize("dense", [True, False])
def test_build_equals_python_reference(
    keys: list[str], null_keys: bool, dense: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not dense:
        monkeypatch.setattr(hll, "MAX_DENSE_BYTES", 0)
    data = frame(seed=len(keys) * 7 + null_keys, null_keys=null_keys)
    got = build(data, keys)
    expected = reference(data, keys, "v", P)
    assert got.keys() == expected.keys()
    for key, regs in expected.items():
        assert got[key] == regs, key
    assert any(any(r) for r in got.values())
    has_all_null_group = bool({"i", "n"} & set(keys))  # i == 7 has only null values
    assert any(not any(r) for r in got.values()) == has_all_null_group


@pytest.mark.parametrize(("keys", "null_keys"), [c for c in CASES if c[0] != ["s"]])
def test_build_over_slots_equals_python_reference(keys: list[str], null_keys: bool) -> None:
    """The sketches built on dense slot ids (the aggregation's slot path), keyed by the keys
    the slots decode to, equal the Python registers (strings have no slot path)."""
    data = frame(seed=len(keys) * 7 + null_keys, null_keys=null_keys)
    reg, rho = hll.hash_rho(pl.col("v"), P)
    rows = data.with_columns(reg.alias("r"), rho.alias("h"))
    slots = S.fit(rows, keys, max_slots=N)
    assert slots is not None
    decoded = slots.keys(rows)
    assert decoded is not None
    registers = hll.build_slots(slots, rows["r"], rows["h"], P)
    got = {k: registers[i].tolist() for i, k in enumerate(pl.DataFrame(decoded).rows())}
    assert got == reference(data, keys, "v", P)


def test_cells_in_uint32_equal_int64_slots_times_scale_plus() -> None:
    """The in-place uint32 index equals slot * scale + plus computed in Python ints."""
    data = frame(seed=3, null_keys=False)
    keys = ["i", "c", "b"]
    coder = GroupCoder.fit(data, keys)
    assert coder is not None
    plus = np.random.default_rng(1).integers(0, M, data.height).astype(np.uint32)
    cells = coder.cells(data, M, plus)
    assert cells.dtype == np.uint32
    slots = coder.ids(data)
    assert slots.dtype == np.int64
    expected = [int(s) * M + int(x) for s, x in zip(slots.tolist(), plus.tolist(), strict=True)]
    assert cells.tolist() == expected
    assert len(set(slots.tolist())) == data.select(keys).unique().height  # slots tell groups apart
    # each column in chunks, cut at different rows per column: the same cells
    cuts = {"i": [0, 7, 5000, N], "c": [0, 12_000, N], "b": [0, 1, 2, 9_999, N]}
    pieces = [
        pl.concat([data[k][a:b] for a, b in itertools.pairwise(cuts[k])], rechunk=False)
        for k in keys
    ]
    chunked = pl.DataFrame(pieces)
    assert [chunked[k].n_chunks() for k in keys] == [3, 2, 4]
    assert coder.cells(chunked, M, plus).tolist() == expected


def _python_reg_rank(h: int, p: int) -> tuple[int, int]:
    rest = (h << p) & ((1 << 64) - 1)
    return h >> (64 - p), min(64 - rest.bit_length() + 1, 64 - p + 1)


@pytest.mark.parametrize("p", [4, 12, 16])
def test_register_and_rank_of_chosen_hashes_match_python(p: int) -> None:
    """Hashes no real value would give in a test: all the rest's bits zero (the capped
    rank), only its lowest or highest bit set, all ones, plus random ones."""
    low = 64 - p
    chosen = [0, 1, (1 << 64) - 1, 1 << low, (1 << low) - 1, 1 << (low - 1), 5 << low]
    chosen += [(7 << low) | 1, ((1 << p) - 1) << low]
    rng = np.random.default_rng(p)
    chosen += [int(x) for x in rng.integers(0, 2**64 - 1, 200, dtype=np.uint64, endpoint=True)]
    ranks = pl.DataFrame({"h": pl.Series(chosen, dtype=pl.UInt64)}).select(hll.rank(pl.col("h"), p))
    assert ranks.to_series().dtype == pl.UInt8
    hashes = pl.Series(chosen, dtype=pl.UInt64)
    registers = hll.registers_of(pl.concat([hashes[:100], hashes[100:]], rechunk=False), p)
    assert registers.dtype == np.uint32
    got = list(zip(registers.tolist(), ranks.to_series().to_list(), strict=True))
    expected = [_python_reg_rank(h, p) for h in chosen]
    assert got == expected
    assert max(r for _, r in expected) == 64 - p + 1  # the cap was reached


@pytest.mark.parametrize("sketches", [1, 8, 21])
def test_estimate_equals_the_textbook_formula(sketches: int) -> None:
    """HyperLogLog's raw estimate with the small-range correction, in plain numpy over the
    whole matrix; any number of sketches against the estimator's blocks of rows."""
    rng = np.random.default_rng(sketches)
    # per sketch: ranks from few to many distinct values (raw and linear-counting ranges)
    q = np.geomspace(0.9, 0.01, sketches)[:, None]
    regs = np.minimum(rng.geometric(q, (sketches, M)), 64 - P + 1).astype(np.uint8)
    regs[rng.random(regs.shape) < np.linspace(0.0, 0.5, sketches)[:, None] * (q > 0.3)] = 0
    raw = 0.7213 / (1 + 1.079 / M) * M * M / np.power(2.0, -regs.astype(np.float64)).sum(axis=1)
    zeros = (regs == 0).sum(axis=1)
    linear = M * np.log(M / np.maximum(zeros, 1))
    expected = np.rint(np.where((raw <= 2.5 * M) & (zeros > 0), linear, raw))
    got = hll.estimate(pl.Series("s", regs, pl.Array(pl.UInt8, M)))
    assert got.to_list() == expected.astype(np.int64).tolist()
    assert sketches == 1 or ((raw > 2.5 * M).any() and (raw <= 2.5 * M).any())
