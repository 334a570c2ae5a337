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

import streamkit as sk
from streamkit import aggregate as K
from streamkit.execute import aggregate_spec
from streamkit.plan import Aggregate
from streamkit.streaming import agg_steps
from streamkit.streaming.state import KeyedStore, StateStore
from streamkit.streaming.state.changelog import apply
from streamkit.streaming.state.hash_index import U64
from streamkit.streaming.state.indexed import Hasher, row_hash
from streamkit.windows import WEND
from tests.streamkit.streaming.state._cases import (
    HOUR_US,
    WINDOWS,
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


def adding_plan(kind: str, schema_rows: pa.Table) -> Aggregate:
    """Only aggregates that add up (count, count(col), sum and avg of a float and an
    integer): the ones ``merge_rows`` adds onto slots without a group-by."""
    base = sk.from_arrow(schema_rows.slice(0, 0))
    aggs = [
        sk.count().alias("n"),
        sk.count("value").alias("nv"),
        sk.sum("value").alias("s"),
        sk.avg("value").alias("a"),
        sk.sum("user_id").alias("su"),
        sk.avg("user_id").alias("au"),
    ]
    if kind == "global":
        frame = base.agg(*aggs)
    elif kind == "keys":
        frame = base.group_by("action", "user_id").agg(*aggs)
    else:
        frame = base.group_by(WINDOWS[kind], "action").agg(*aggs)
    node = frame.plan
    assert isinstance(node, Aggregate)
    return node


@pytest.mark.parametrize("kind", ["tumbling", "sliding", "keys", "global"])
@pytest.mark.parametrize("hasher", [row_hash, weak_hash], ids=["polars", "weak"])
@pytest.mark.parametrize("seed", [3, 11])
def test_merge_rows_equals_regroup(kind: str, hasher: Hasher, seed: int) -> None:
    """``merge_rows`` of a batch's input rows (dropping groups behind the previous
    watermark) gives the regroup's rows, on the slot path for every batch after the
    first (spread -1) where the spec allows it, with a reload in the middle; its
    deltas replay to the state."""
    rows, parts = batches(seed)
    node = adding_plan(kind, rows)
    spec = aggregate_spec(node)
    store = KeyedStore(spec, hasher)
    store.spread = -1.0
    assert store.adds_rows == (kind != "sliding")
    ref, keys, mark, snapshot = Reference(spec), spec.state_keys, None, pl.DataFrame()
    for i, part in enumerate(parts):
        frame = pl.from_arrow(part)
        assert isinstance(frame, pl.DataFrame)
        fresh = partials(node, part)
        if mark is not None and spec.window is not None:
            fresh = fresh.filter(pl.col(WEND) > mark)
        got = store.merge_rows(agg_steps.input_rows(node, spec, frame), mark)
        same(got, ref.merge(fresh), keys)
        mark = watermark(parts[: i + 1])
        same(store.evict(mark), ref.evict(mark), keys)
        assert ref.state is not None
        same(store.rows(), ref.state, keys)
        delta = store.take_changes()
        assert delta is not None
        if i == 2:
            snapshot = store.rows()
        elif i > 2:
            snapshot = apply(snapshot, delta, store.change_keys)
            same(snapshot, store.rows(), keys)
        if i == 6:
            store.load(store.rows())


def test_merge_rows_picks_the_path_by_the_last_spread(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a batch with at most ``spread`` groups per row the next batch is grouped
    first (all its rows go to ``aggregate.partial``); after one with more, rows of held
    keys skip it (a batch of held keys only: no call)."""
    rows, parts = batches(3)
    node = adding_plan("keys", rows)
    spec = aggregate_spec(node)
    frame = agg_steps.input_rows(node, spec, pl.DataFrame(parts[0]))
    grouped: list[int] = []
    real = K.partial

    def counting(lazy: pl.LazyFrame, spec: K.AggregateSpec) -> pl.DataFrame:
        out = real(lazy, spec)
        grouped.append(int(out[K.ROWS].sum()))
        return out

    monkeypatch.setattr(K, "partial", counting)
    store, ref = KeyedStore(spec), Reference(spec)
    for spread, want in [(2.0, [frame.height]), (2.0, [frame.height]), (0.0, [])]:
        store.spread, grouped[:] = spread, []
        fresh = real(frame.lazy(), spec)
        same(store.merge_rows(frame), ref.merge(fresh), spec.state_keys)
        assert grouped == want
    assert ref.state is not None
    same(store.rows(), ref.state, spec.state_keys)
