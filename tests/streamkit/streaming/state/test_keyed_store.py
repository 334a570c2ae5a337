"""The keyed store gives exactly the whole-state regroup's rows, batch for batch: touched
groups, evicted groups and the state held, on random micro-batches with nulls, duplicates
and out-of-order rows, for every window kind and aggregate, with Polars' hash and with a
3-bit hash (most keys collide, so the overflow path is exercised), and after a reload."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from polars.testing import assert_frame_equal

from streamkit.execute import aggregate_spec
from streamkit.streaming.state import KeyedStore, StateStore
from streamkit.streaming.state.changelog import apply
from streamkit.streaming.state.hash_index import U64
from streamkit.streaming.state.indexed import Hasher, row_hash
from tests.streamkit.streaming.state._cases import (
    HOUR_US,
    Reference,
    batches,
    canon,
    partials,
    plan,
)

KINDS = ["tumbling", "sliding", "offset", "keys", "global"]


def weak_hash(keys: pl.DataFrame) -> U64:
    """Eight distinct hashes in all: nearly every key collides with another."""
    return row_hash(keys) & np.uint64(7)


def watermark(seen: list[pa.Table]) -> int:
    """Max event time seen (us) minus one hour, computed in plain Python."""
    times = [t for b in seen for t in b.column("event_time").to_pylist() if t is not None]
    top = max(times)
    return int(top.timestamp() * 1_000_000) - HOUR_US


def same(got: pl.DataFrame, want: pl.DataFrame, keys: list[str]) -> None:
    assert got.height == want.height
    assert_frame_equal(canon(got, keys), canon(want, keys), check_dtypes=False)


def run(
    kind: str,
    seed: int,
    store: StateStore,
    reload_at: int | None = None,
    row_wise: bool = False,
) -> int:
    """Feed both paths; returns how many groups were evicted (so a case can't be empty)."""
    rows, parts = batches(seed)
    node = plan(kind, rows, row_wise)
    spec = aggregate_spec(node)
    ref, keys, evicted = Reference(spec), spec.state_keys, 0
    for i, part in enumerate(parts):
        fresh = partials(node, part)
        same(store.merge(fresh), ref.merge(fresh), keys)
        mark = watermark(parts[: i + 1])
        gone = ref.evict(mark)
        same(store.evict(mark), gone, keys)
        evicted += gone.height
        assert ref.state is not None
        same(store.rows(), ref.state, keys)
        assert store.height == ref.state.height
        if i == reload_at:
            store.load(store.rows())
    return evicted


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("hasher", [row_hash, weak_hash], ids=["polars", "weak"])
@pytest.mark.parametrize("seed", [3, 11])
def test_keyed_store_equals_regroup(kind: str, hasher: Hasher, seed: int) -> None:
    rows, _ = batches(seed)
    evicted = run(kind, seed, KeyedStore(aggregate_spec(plan(kind, rows)), hasher))
    windowed = kind not in ("keys", "global")
    assert (evicted > 0) == windowed


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("hasher", [row_hash, weak_hash], ids=["polars", "weak"])
def test_row_wise_merge_equals_regroup(kind: str, hasher: Hasher) -> None:
    """Aggregates that merge row by row (no group-by for the groups a batch updates)."""
    rows, _ = batches(7)
    spec = aggregate_spec(plan(kind, rows, row_wise=True))
    store = KeyedStore(spec, hasher)
    assert run(kind, 7, store, reload_at=6, row_wise=True) >= 0


@pytest.mark.parametrize("hasher", [row_hash, weak_hash], ids=["polars", "weak"])
def test_reload_mid_stream(hasher: Hasher) -> None:
    rows, _ = batches(5)
    spec = aggregate_spec(plan("sliding", rows))
    assert run("sliding", 5, KeyedStore(spec, hasher), reload_at=4) > 0


@pytest.mark.parametrize("kind", ["tumbling", "sliding", "keys"])
@pytest.mark.parametrize("hasher", [row_hash, weak_hash], ids=["polars", "weak"])
def test_deltas_replay_to_the_state(kind: str, hasher: Hasher) -> None:
    """A snapshot plus every later delta, applied in order, is the state held."""
    rows, parts = batches(13)
    node = plan(kind, rows)
    spec = aggregate_spec(node)
    store = KeyedStore(spec, hasher)
    snapshot = pl.DataFrame()
    for i, part in enumerate(parts):
        store.merge(partials(node, part))
        store.evict(watermark(parts[: i + 1]))
        delta = store.take_changes()
        assert delta is not None
        if i == 3:
            snapshot = store.rows()
        elif i > 3:
            snapshot = apply(snapshot, delta, store.change_keys)
            same(snapshot, store.rows(), spec.state_keys)
    store.evict(2**62)  # a delta of deletions only (time windows), or an empty one
    delta = store.take_changes()
    assert delta is not None
    snapshot = apply(snapshot, delta, store.change_keys)
    same(snapshot, store.rows(), spec.state_keys)
