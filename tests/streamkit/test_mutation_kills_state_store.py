"""The state store: what `make mutation` found untested in streamkit/streaming/state.

Expected values are worked out by hand: the hash index maps hashes to any value >= 0
(0 included), keeps its load factor at most 1/2 and, on a rebuild, sizes its table to the
smallest power of two of at least 4 cells per live key (its memory); the keyed store's
slot path sums a Float32 column as Float64 (as ``aggregate.partial`` and Spark do), and
the rows it writes can be moved by later tidies like any others.
"""

from __future__ import annotations

import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

import streamkit as sk
from streamkit import aggregate as K
from streamkit.execute import aggregate_spec
from streamkit.plan import Aggregate
from streamkit.streaming import agg_steps
from streamkit.streaming.state import KeyedStore
from streamkit.streaming.state.changelog import DELETED, apply
from streamkit.streaming.state.dedup import EXPIRES, DedupStore
from streamkit.streaming.state.hash_index import U64, HashIndex, nonzero
from streamkit.streaming.state.indexed import Hasher, row_hash
from streamkit.streaming.state.row_log import RowLog
from streamkit.streaming.state.session import SessionStore
from streamkit.windows import WEND

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
    rebuild, not even a passing one: the second put's peak stays under the 8192-cell
    table (128 KiB) a rebuild for 2048 keys allocates before settling."""
    table = 4096 * CELL_BYTES
    keys = hashes(2048)
    values = np.arange(2048, dtype=np.int64)
    tracemalloc.start()
    try:
        index = HashIndex()
        index.put(keys[:1024], values[:1024])
        first, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        index.put(keys[1024:], values[1024:])
        second, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert table <= first < table * 3 // 2
    assert table <= second < table * 3 // 2
    assert peak - first < 2 * table
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


# -- late marks, the path choice, overflow eviction ------------------------------------
T0 = datetime(2026, 1, 1, tzinfo=UTC)
MIN_US = 60_000_000
T0_US = int(T0.timestamp() * 1_000_000)


def us(minutes: int) -> int:
    return T0_US + minutes * MIN_US


def timed_rows(*rows: tuple[int | None, str]) -> pl.DataFrame:
    """Rows ``(minutes after T0 or None, key)``, each with ``v = 1``."""
    return pl.DataFrame(
        {
            "t": [None if m is None else T0 + timedelta(minutes=m) for m, _ in rows],
            "k": [k for _, k in rows],
            "v": [1] * len(rows),
        },
        schema={"t": pl.Datetime("us", "UTC"), "k": pl.String, "v": pl.Int64},
    )


def timed_store(
    by: list[Any], hasher: Hasher = row_hash, expiry: str | None = None
) -> tuple[Aggregate, KeyedStore]:
    """``group_by(*by).agg(count)`` over ``t, k, v``."""
    schema = pa.schema([("t", pa.timestamp("us", "UTC")), ("k", pa.string()), ("v", pa.int64())])
    node = sk.from_arrow(schema.empty_table()).group_by(*by).agg(sk.count().alias("n")).plan
    assert isinstance(node, Aggregate)
    return node, KeyedStore(aggregate_spec(node), hasher, expiry)


def counts(frame: pl.DataFrame, *keys: str) -> set[tuple[Any, ...]]:
    return set(frame.select(*keys, K.ROWS).iter_rows())


@pytest.mark.parametrize("slot_path", [False, True], ids=["grouped", "slots"])
def test_a_window_ending_at_the_late_mark_is_late(slot_path: bool) -> None:
    """``merge_rows(rows, late_mark)`` keeps the groups whose window ends *after* the
    mark: with the mark at 00:10, a row at 00:06 (window [00:00, 00:10)) is dropped and
    one at 00:16 counted, whether the batch is grouped first or added by slot."""
    node, store = timed_store([sk.window("t", "10 minutes"), "k"])
    store.merge_rows(agg_steps.input_rows(node, store.spec, timed_rows((5, "a"), (15, "a"))))
    store.spread = -1.0 if slot_path else 2.0
    second = agg_steps.input_rows(node, store.spec, timed_rows((6, "a"), (16, "a")))
    got = store.merge_rows(second, us(10))
    assert counts(got, WEND, "k") == {(us(20), "a", 2)}
    assert counts(store.rows(), WEND, "k") == {(us(10), "a", 1), (us(20), "a", 2)}


def test_merge_rows_groups_after_a_batch_of_at_most_spread_groups_per_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``spread`` 0.5: a batch is grouped first (``aggregate.partial`` runs on it) when
    the previous one had at most 0.5 groups per row, on either path; counted by hand:
    2 rows 1 group (0.5: group next), 1 row 1 group (1.0: add by slot next), again 1.0,
    4 rows 1 group by slot (0.25: group next)."""
    node, store = adding_store(pa.int64())
    store.spread = 0.5
    real, grouped = K.partial, []

    def counting(lazy: pl.LazyFrame, spec: K.AggregateSpec) -> pl.DataFrame:
        out = real(lazy, spec)
        grouped.append(int(out[K.ROWS].sum()))
        return out

    monkeypatch.setattr(K, "partial", counting)
    calls = []
    for keys in ([1, 1], [1], [1], [1, 1, 1, 1], [1]):
        grouped.clear()
        merge(node, store, keys, [1] * len(keys), pl.Int64())
        calls.append(list(grouped))
    assert calls == [[2], [1], [], [], [1]]
    assert held(store) == {1: (9, 9)}


def zero_hash(keys: pl.DataFrame) -> U64:
    """Every key has hash 0: the first key held is in the main log, the others overflow."""
    return np.zeros(keys.height, np.uint64)


def test_overflow_keys_expire_at_the_watermark_and_null_keys_never() -> None:
    """A store expiring keys by their ``t`` with every key on one hash: key a (null t)
    fills the main log, b (null t) and c (t = 00:10) overflow. The watermark 00:10
    evicts c (its t is at the watermark) and neither null key."""
    node, store = timed_store(["t", "k"], zero_hash, expiry="t")
    store.merge_rows(agg_steps.input_rows(node, store.spec, timed_rows((None, "a"))))
    batch = timed_rows((None, "b"), (10, "c"))
    store.merge_rows(agg_steps.input_rows(node, store.spec, batch))
    t10 = T0 + timedelta(minutes=10)
    assert counts(store.evict(us(10)), "t", "k") == {(t10, "c", 1)}
    assert counts(store.rows(), "t", "k") == {(None, "a", 1), (None, "b", 1)}


def test_a_delta_applies_onto_a_snapshot_whose_column_was_all_null() -> None:
    """A state column that held only nulls when snapshotted (Polars types it ``Null``,
    as for a frame built from Python ``None`` values) takes the delta's ``Int64`` values:
    key 2's upsert lands with its value, key 3 is deleted, key 1 keeps its null."""
    state = pl.DataFrame({"k": [1, 3], "v": [None, None]})
    assert state.schema["v"] == pl.Null
    delta = pl.DataFrame(
        {"k": [2, 3], "v": [5, None], DELETED: [False, True]},
        schema={"k": pl.Int64, "v": pl.Int64, DELETED: pl.Boolean},
    )
    got = apply(state, delta, ["k"])
    assert got.schema["v"] == pl.Int64
    assert sorted(got.rows()) == [(1, None), (2, 5)]


def test_two_held_keys_in_the_reverse_of_their_slot_order_merge_onto_their_state() -> None:
    """Keys 1 and 2 are stored in that order; a batch naming them 2, 1 (both held) adds
    onto each key's own row: counts and sums 2 each, one row per key."""
    node, store = adding_store(pa.int64())
    for order in (False, True):
        frame = pl.DataFrame({"k": [1, 2], "v": [1, 1]})
        rows = agg_steps.input_rows(node, store.spec, frame)
        store.merge(K.partial(rows.lazy(), store.spec).sort("k", descending=order))
    assert held(store) == {1: (2, 2), 2: (2, 2)}
    assert store.rows().height == 2


def test_two_partial_rows_of_one_held_window_merge_into_one_row() -> None:
    """Sliding windows of 20 minutes every 10: rows at 00:05 and 00:15 both lie in
    [00:00, 00:20), whose state is held (from a row at 00:05; its other window,
    [-00:10, 00:10), evicted at 00:10). The batch's two partial rows of that window
    (one per 10-minute bucket) merge into one: count 1 + 2 = 3; the two windows new to
    the store count 1 each."""
    node, store = timed_store([sk.window("t", "20 minutes", "10 minutes"), "k"])
    store.merge_rows(agg_steps.input_rows(node, store.spec, timed_rows((5, "a"))))
    assert counts(store.evict(us(10)), WEND, "k") == {(us(10), "a", 1)}
    batch = agg_steps.input_rows(node, store.spec, timed_rows((5, "a"), (15, "a")))
    want = {(us(10), "a", 1), (us(20), "a", 3), (us(30), "a", 1)}
    assert sorted(store.merge_rows(batch).select(WEND, "k", K.ROWS).rows()) == sorted(want)
    assert sorted(store.rows().select(WEND, "k", K.ROWS).rows()) == sorted(want)


def test_merge_returns_and_holds_no_touched_column() -> None:
    """Partial states carrying ``__touched`` (as a session merge's do) are merged without
    it: the rows returned and held have exactly the state columns."""
    node, store = adding_store(pa.int64())
    rows = agg_steps.input_rows(node, store.spec, pl.DataFrame({"k": [1, 2], "v": [3, 4]}))
    fresh = K.partial(rows.lazy(), store.spec).with_columns(pl.lit(True).alias(K.TOUCHED))
    want = K.state_columns(store.spec)
    assert K.TOUCHED not in want
    assert store.merge(fresh).columns == want
    assert store.rows().columns == want
    assert held(store) == {1: (1, 3), 2: (1, 4)}


def test_the_first_batch_is_grouped_whole_and_late_rows_count_in_its_spread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new store groups its first batch (``aggregate.partial`` of all 3 rows, the two
    in [00:00, 00:10) dropped after as late at 00:10): 1 group for 3 rows is under the
    0.5 spread, so the second batch is grouped too."""
    node, store = timed_store([sk.window("t", "10 minutes"), "k"])
    assert store.adds_rows
    real, grouped = K.partial, []

    def counting(lazy: pl.LazyFrame, spec: K.AggregateSpec) -> pl.DataFrame:
        out = real(lazy, spec)
        grouped.append(int(out[K.ROWS].sum()))
        return out

    monkeypatch.setattr(K, "partial", counting)
    first = agg_steps.input_rows(node, store.spec, timed_rows((1, "a"), (2, "b"), (15, "a")))
    assert counts(store.merge_rows(first, us(10)), WEND, "k") == {(us(20), "a", 1)}
    assert grouped == [3]
    grouped.clear()
    store.merge_rows(agg_steps.input_rows(node, store.spec, timed_rows((16, "a"))), us(10))
    assert grouped == [1]
    assert counts(store.rows(), WEND, "k") == {(us(20), "a", 2)}


def test_a_windowed_store_evicts_by_window_end_whatever_its_expiry() -> None:
    """``expiry`` is for stores without a window: with one, the window end decides. A row
    at 00:05 grouped by its window [00:00, 00:10) and by ``t`` itself, with ``t`` given as
    expiry: the watermark 00:07 (past ``t``) keeps it, 00:10 (its window end) evicts it."""
    node, store = timed_store([sk.window("t", "10 minutes"), "t"], expiry="t")
    store.merge_rows(agg_steps.input_rows(node, store.spec, timed_rows((5, "a"))))
    assert store.evict(us(7)).height == 0
    assert counts(store.evict(us(10)), WEND) == {(us(10), 1)}
    assert store.rows().height == 0


def test_a_new_row_logs_work_counts_the_rows_it_appends() -> None:
    """``handled`` (the log's work, for the cost tests) starts at 0: three rows appended,
    three rows of work; gathering two of them, two more."""
    log = RowLog()
    assert log.handled == 0
    slots = log.append(pl.DataFrame({"k": [1, 2, 3]}), hashes(3))
    assert log.handled == 3
    assert log.gather(slots[:2])["k"].to_list() == [1, 2]
    assert log.handled == 5
    log.append(pl.DataFrame({"k": [4, 5, 6, 7]}), hashes(4, 4))
    assert log.handled == 9  # a second append adds its 4 rows to the work so far


def test_a_tidy_drops_a_dead_segment_and_rewrites_a_mostly_dead_one() -> None:
    """The log's memory follows its live rows: after a tidy, a segment whose rows all died
    is gone (``rows()`` holds no frame for it) and one with more dead rows than live (at
    least 1024 dead) is rewritten to its live rows; the live count is the rows alive."""
    log = RowLog()
    gone = log.append(pl.DataFrame({"k": list(range(3000))}), hashes(3000))
    kept = log.append(pl.DataFrame({"k": list(range(3000, 6000))}), hashes(3000, 3001))
    log.kill(gone)
    log.kill(kept[:2000])
    moved = log.tidy()
    frames = log.rows()
    assert [f.height for f in frames] == [1000]
    assert frames[0]["k"].to_list() == list(range(5000, 6000))
    assert log.live == 1000
    assert moved.slots.size == 1000


def test_a_segment_is_rewritten_from_1024_dead_rows_more_than_its_live_ones() -> None:
    """Segment a: 1024 dead, 1023 live (rewritten: its 1023 live rows move); b: 1023
    dead, 1022 live (under 1024 dead); c: 1024 dead, 1024 live (not more dead than live).
    b and c are kept as they are; all three keep their live rows."""
    log = RowLog()
    a = log.append(pl.DataFrame({"k": list(range(2047))}), hashes(2047))
    b = log.append(pl.DataFrame({"k": list(range(2047, 4092))}), hashes(2045, 2048))
    c = log.append(pl.DataFrame({"k": list(range(4092, 6140))}), hashes(2048, 4093))
    log.kill(np.concatenate([a[:1024], b[:1023], c[:1024]]))
    moved = log.tidy()
    assert moved.slots.size == 1023
    assert log.gather(np.sort(moved.slots))["k"].to_list() == list(range(1024, 2047))
    assert log.live == 1023 + 1022 + 1024


@pytest.mark.parametrize("at", [30, 63], ids=["middle", "last"])
def test_a_tidy_merges_the_smallest_adjacent_pair_beyond_max_segments(at: int) -> None:
    """65 segments (one more than ``MAX_SEGMENTS``): segment i holds i + 1 rows except
    segments ``at`` and ``at + 1`` (1 row each; 63, 64 is the last pair). The adjacent
    pair with the fewest live rows is that one, 2 rows, fewer than (0, 1)'s 3: a tidy
    merges exactly those two, moves their 2 rows to new slots, and keeps every row in
    order; with 64 segments nothing merges."""
    log = RowLog()
    sizes = [1 if i in {at, at + 1} else i + 1 for i in range(65)]
    start = 0
    for size in sizes:
        log.append(pl.DataFrame({"k": list(range(start, start + size))}), hashes(size, start + 1))
        start += size
    moved = log.tidy()
    frames = log.rows()
    assert len(frames) == 64
    assert [f.height for f in frames] == [*sizes[:at], 2, *sizes[at + 2 :]]
    merged_first = sum(sizes[:at])
    assert frames[at]["k"].to_list() == [merged_first, merged_first + 1]
    assert pl.concat(frames)["k"].to_list() == list(range(start))
    assert moved.slots.size == 2
    assert log.gather(np.sort(moved.slots))["k"].to_list() == [merged_first, merged_first + 1]
    again = log.tidy()  # 64 segments: at the bound, nothing merges or moves
    assert (again.hashes.size, again.slots.size) == (0, 0)
    assert (again.hashes.dtype, again.slots.dtype) == (np.dtype(np.uint64), np.dtype(np.int64))
    assert len(log.rows()) == 64


def test_a_key_hashing_to_zero_is_kept_when_another_hash_lands_on_its_cell() -> None:
    """Hash 0 marks an empty cell, so the store maps it to 1 (``nonzero``) before the
    index sees it. Hash 610's first cell in a 1,024-cell table is cell 0, hash 0's too: a
    0 stored as 0 would be taken for an empty cell by 610's put and overwritten."""
    index = HashIndex()
    zero, other = nonzero(np.array([0], np.uint64)), np.array([610], np.uint64)
    assert index._home(other).tolist() == index._home(np.array([0], np.uint64)).tolist()
    index.put(zero, np.array([7], np.int64))
    index.put(other, np.array([8], np.int64))
    assert index.get(np.concatenate([zero, other])).tolist() == [7, 8]
    assert len(index) == 2


def ids(values: list[int], dtype: type[pl.DataType]) -> pl.DataFrame:
    """Keys ``values`` of type ``dtype``, none expiring."""
    return pl.DataFrame({"id": values, EXPIRES: [None] * len(values)}).with_columns(
        pl.col("id").cast(dtype), pl.col(EXPIRES).cast(pl.Int64)
    )


def test_the_key_types_first_hashed_are_the_stores_until_a_load() -> None:
    """Int64 keys 1, 2 held: Int32 keys raise TypeError (equal keys of other types would
    hash apart and be admitted twice). A load of those keys as Int32 makes Int32 the
    store's type: 2 is held, 3 is new, and Int64 keys now raise."""
    store = DedupStore(["id"])
    assert store.admit(ids([1, 2], pl.Int64)).to_list() == [True, True]
    with pytest.raises(TypeError, match="key types"):
        store.admit(ids([2, 3], pl.Int32))
    store.load(ids([1, 2], pl.Int32))
    assert store.admit(ids([2, 3], pl.Int32)).to_list() == [False, True]
    with pytest.raises(TypeError, match="key types"):
        store.admit(ids([3], pl.Int64))


def test_a_time_key_expiry_evicts_its_key_from_the_main_log() -> None:
    """``group_by("t", "k")`` expiring by ``t``, distinct hashes (both keys in the main
    log): the watermark 00:10 evicts (00:10, a), the key at its mark, and keeps
    (00:20, b)."""
    node, store = timed_store(["t", "k"], expiry="t")
    store.merge_rows(agg_steps.input_rows(node, store.spec, timed_rows((10, "a"), (20, "b"))))
    t10, t20 = T0 + timedelta(minutes=10), T0 + timedelta(minutes=20)
    assert counts(store.evict(us(10)), "t", "k") == {(t10, "a", 1)}
    assert counts(store.rows(), "t", "k") == {(t20, "b", 1)}


def test_a_load_of_no_snapshot_empties_the_store() -> None:
    """``load(None)`` (a restart with no state written) drops the keys held: none left,
    and a key seen again is new (counted once)."""
    node, store = timed_store(["k"])
    store.merge_rows(agg_steps.input_rows(node, store.spec, timed_rows((1, "a"), (2, "b"))))
    store.load(None)
    assert store.height == 0
    store.merge_rows(agg_steps.input_rows(node, store.spec, timed_rows((3, "a"))))
    assert counts(store.rows(), "k") == {("a", 1)}


def test_a_session_store_without_changes_gives_a_delta_that_applies_as_nothing() -> None:
    """No merge since the last take: the delta is empty but still has its deleted flag
    (Boolean), so applying it (a restore replaying deltas) leaves the state as it was."""
    schema = pa.schema([("t", pa.timestamp("us", "UTC")), ("k", pa.string()), ("v", pa.int64())])
    session = sk.session_window("t", "10 minutes")
    node = (
        sk.from_arrow(schema.empty_table()).group_by(session, "k").agg(sk.count().alias("n")).plan
    )
    assert isinstance(node, Aggregate)
    delta = SessionStore(aggregate_spec(node)).take_changes()
    assert delta is not None
    assert delta.height == 0
    assert delta.schema[DELETED] == pl.Boolean
    state = pl.DataFrame({"k": ["a", "b"], "n": [1, 2]})
    assert sorted(apply(state, delta, ["k"]).rows()) == [("a", 1), ("b", 2)]


def test_a_window_struct_key_expires_by_its_end() -> None:
    """``group_by("w", "k")`` where ``w`` is a window struct carrying the watermark (an
    aggregation above a windowed one): a key expires by ``w.end``, not ``w.start``. The
    watermark 00:10 evicts window [00:00, 00:10) and keeps [00:05, 00:15), whose start is
    before the mark."""
    ts = pa.timestamp("us", "UTC")
    window = pa.struct([("start", ts), ("end", ts)])
    schema = pa.schema([("w", window), ("k", pa.string())])
    node = sk.from_arrow(schema.empty_table()).group_by("w", "k").agg(sk.count().alias("n")).plan
    assert isinstance(node, Aggregate)
    store = KeyedStore(aggregate_spec(node), expiry="w")
    at = [(T0 + timedelta(minutes=a), T0 + timedelta(minutes=b)) for a, b in [(0, 10), (5, 15)]]
    rows = pl.DataFrame(
        {"w": [{"start": a, "end": b} for a, b in at], "k": ["a", "b"]},
        schema={
            "w": pl.Struct({"start": pl.Datetime("us", "UTC"), "end": pl.Datetime("us", "UTC")}),
            "k": pl.String,
        },
    )
    store.merge_rows(agg_steps.input_rows(node, store.spec, rows))
    gone = store.evict(us(10))
    assert gone["k"].to_list() == ["a"]
    assert store.rows()["k"].to_list() == ["b"]


def test_hashes_differing_only_in_their_high_bits_start_in_every_cell() -> None:
    """Fibonacci hashing spreads hashes over the whole table: 4096 hashes that differ
    only in their top 24 bits (``i << 40``) have their first cells in all 1024 cells of
    a new index, not in part of it."""
    index = HashIndex()
    high = np.arange(1, 4097, dtype=np.uint64) << np.uint64(40)
    assert np.unique(index._home(high)).size == 1024


def test_a_probe_reaches_cells_of_either_parity() -> None:
    """512 hashes whose first cells are all even fill a 1,024-cell index to load 1/2 (no
    rebuild). An absent hash whose first cell is even is still found absent: its probe
    goes on through the odd cells, where the empty ones are."""
    index = HashIndex()
    many = hashes(20_000)
    even = many[index._home(many) % 2 == 0]
    index.put(even[:512], np.arange(512, dtype=np.int64))
    assert len(index) == 512
    assert index._cells.shape[0] == 1024
    assert index.get(even[512:513]).tolist() == [-1]
    assert index.get(even[:3]).tolist() == [0, 1, 2]
