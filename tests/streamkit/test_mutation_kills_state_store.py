"""The state store: what `make mutation` found untested in streamkit/streaming/state.

Expected values are worked out by hand: the hash index maps hashes to any value >= 0
(0 included), keeps its load factor at most 1/2 and, on a rebuild, sizes its table to the
smallest power of two of at least 4 cells per live key (its memory); the keyed store's
slot path sums a Float32 column as Float64 (as ``aggregate.partial`` and Spark do), and
the rows it writes can be moved by later tidies like any others.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import polars as pl
import pyarrow as pa

import streamkit as sk
from streamkit import aggregate as K
from streamkit.execute import aggregate_spec
from streamkit.plan import Aggregate
from streamkit.streaming import agg_steps
from streamkit.streaming.state import KeyedStore
from streamkit.streaming.state.hash_index import U64, HashIndex

CELL_BYTES = 16
"""One cell of the index: hash and value, two int64."""


def hashes(n: int, start: int = 1) -> U64:
    """``n`` distinct nonzero hashes spread over the table."""
    return np.arange(start, start + n, dtype=np.uint64) * np.uint64(0x9E3779B1)


def test_a_hash_mapped_to_zero_is_held_counted_and_kept_by_a_rebuild() -> None:
    """Value 0 is a value (-1 is absence): counted by ``len`` and still found after the
    rebuild that 1500 more keys force (the first table has 1024 cells)."""
    index = HashIndex()
    index.put(hashes(1), np.array([0], np.int64))
    assert len(index) == 1
    index.put(hashes(1500, start=2), np.arange(1, 1501, dtype=np.int64))
    assert len(index) == 1501
    assert index.get(hashes(1)).tolist() == [0]
    assert index.get(hashes(2, start=1500)).tolist() == [1499, 1500]


def test_index_memory_is_four_cells_per_key_after_a_rebuild_up_to_load_half() -> None:
    """1024 keys into an empty index: one rebuild to 4 * 1024 = 4096 cells (64 KiB, not
    twice that); 1024 more fill it to 2048/4096 (load 1/2, the most allowed): no second
    rebuild."""
    table = 4096 * CELL_BYTES
    keys = hashes(2048)
    values = np.arange(2048, dtype=np.int64)
    tracemalloc.start()
    try:
        index = HashIndex()
        index.put(keys[:1024], values[:1024])
        first, _ = tracemalloc.get_traced_memory()
        index.put(keys[1024:], values[1024:])
        second, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert table <= first < table * 3 // 2
    assert table <= second < table * 3 // 2
    assert index.get(keys).tolist() == values.tolist()


def adding_store(value: pa.DataType) -> tuple[Aggregate, KeyedStore]:
    """``group_by("k").agg(count, sum("v"))`` with the slot path on from the second batch."""
    schema = pa.schema([("k", pa.int64()), ("v", value)])
    node = (
        sk.from_arrow(schema.empty_table())
        .group_by("k")
        .agg(sk.count().alias("n"), sk.sum("v").alias("s"))
        .plan
    )
    assert isinstance(node, Aggregate)
    store = KeyedStore(aggregate_spec(node))
    store.spread = -1.0
    assert store.adds_rows
    return node, store


def merge(
    node: Aggregate, store: KeyedStore, keys: list[int], values: list[float], dtype: pl.DataType
) -> None:
    frame = pl.DataFrame({"k": keys, "v": values}, schema={"k": pl.Int64, "v": dtype})
    store.merge_rows(agg_steps.input_rows(node, store.spec, frame))


def held(store: KeyedStore) -> dict[int, tuple[int, float]]:
    """Per key: (rows counted, the sum's total) as the store holds them."""
    rows = store.rows()
    total = rows[store.spec.states(1)[0]]
    return {k: (c, t) for k, c, t in zip(rows["k"], rows[K.ROWS], total, strict=True)}


def test_slot_path_sums_float32_values_as_float64() -> None:
    """The sum of a Float32 column is a Float64 total (as Spark's double): on the slot
    path, 2**24 + 1 + 0.5 for key 1 is 2**24 + 1.5, which Float32 (spacing 2 there)
    cannot hold in any order of additions (plain Python floats give the totals)."""
    node, store = adding_store(pa.float32())
    merge(node, store, [1, 2], [1.0, 1.0], pl.Float32())
    big = float(2**24)
    merge(node, store, [1, 1, 1, 2], [big, 1.0, 0.5, 3.0], pl.Float32())
    assert held(store) == {1: (4, 1.0 + big + 1.0 + 0.5), 2: (2, 1.0 + 3.0)}


def test_rows_written_by_the_slot_path_survive_two_rewrites() -> None:
    """5000 keys, then 3000 of them again (the first segment is mostly dead: its 2000
    live rows are rewritten), then 2000 of those and 1500 of the rewritten ones (both
    segments mostly dead: rewritten together). Counts follow by hand."""
    node, store = adding_store(pa.int64())
    for keys in (range(5000), range(3000), [*range(2000), *range(3000, 4500)], range(5000)):
        merge(node, store, list(keys), [1] * len(keys), pl.Int64())
    want = {k: 2 + (k < 3000) + (k < 2000 or 3000 <= k < 4500) for k in range(5000)}
    assert {k: c for k, (c, _) in held(store).items()} == want
    assert {k: t for k, (_, t) in held(store).items()} == want
