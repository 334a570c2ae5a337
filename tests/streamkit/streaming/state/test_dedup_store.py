"""The dedup store against a plain-Python model (a dict from key to expiry): which rows
are admitted, which keys are evicted and re-admitted, the state rebuilt from its deltas,
with Polars' hash and with a 3-bit hash (nearly every key collides, exercising the
overflow path); and its per-batch cost follows the batch, not the keys held."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import polars as pl
import pytest

from streamkit.streaming.state.changelog import apply
from streamkit.streaming.state.dedup import EXPIRES, DedupStore
from streamkit.streaming.state.hash_index import U64
from streamkit.streaming.state.indexed import Hasher, row_hash

KEYS = ["k", "n"]


def weak_hash(keys: pl.DataFrame) -> U64:
    return row_hash(keys) & np.uint64(7)


def batch(rng: random.Random, clock: int) -> list[tuple[Any, Any, int | None]]:
    """Rows ``(k, n, expiry)``: few keys (so duplicates are common), some nulls."""
    rows = []
    for _ in range(rng.randint(0, 30)):
        k = rng.choice(["a", "b", None])
        n = rng.choice([1, 2, 3, None])
        expiry = None if rng.random() < 0.1 else clock + rng.randint(0, 20)
        rows.append((k, n, expiry))
    return rows


def frame(rows: list[tuple[Any, Any, int | None]]) -> pl.DataFrame:
    schema = {"k": pl.String, "n": pl.Int64, EXPIRES: pl.Int64}
    return pl.DataFrame(rows, schema=schema, orient="row")


def canon(state: pl.DataFrame) -> list[tuple[Any, ...]]:
    if not state.height:
        return []
    rows = state.select(*KEYS, EXPIRES).rows()
    return sorted(rows, key=lambda r: tuple((x is None, x or 0) for x in r))


@pytest.mark.parametrize("hasher", [row_hash, weak_hash], ids=["polars-hash", "3-bit-hash"])
@pytest.mark.parametrize("seed", range(4))
def test_store_matches_a_dict_model(hasher: Hasher, seed: int) -> None:
    rng = random.Random(seed)
    store = DedupStore(KEYS, hasher)
    model: dict[tuple[Any, Any], int | None] = {}
    snapshot, deltas = pl.DataFrame(), []
    admitted = evicted = 0
    for step in range(40):
        rows = batch(rng, step * 3)
        want = []
        for k, n, expiry in rows:  # first row wins; a held key is a duplicate
            want.append((k, n) not in model)
            model.setdefault((k, n), expiry)
        got = store.admit(frame(rows)).to_list() if rows else []
        assert got == want
        admitted += sum(want)
        mark = step * 3 - 5
        gone = [key for key, e in model.items() if e is not None and e <= mark]
        for key in gone:
            del model[key]
        assert store.evict(mark) == len(gone)
        evicted += len(gone)
        assert canon(store.rows()) == sorted(
            ((k, n, e) for (k, n), e in model.items()),
            key=lambda r: tuple((x is None, x or 0) for x in r),
        )
        delta = store.take_changes()
        assert delta is not None
        deltas.append(delta)
        if step == 17:  # a reload from a snapshot starts a new chain of deltas
            snapshot, deltas = store.rows(), []
            store.load(snapshot)
    rebuilt = snapshot
    for delta in deltas:
        rebuilt = apply(rebuilt, delta, KEYS)
    assert canon(rebuilt) == canon(store.rows())
    assert admitted > 20  # the case exercises admission
    assert evicted > 10  # and eviction


def test_batch_cost_follows_the_batch_not_the_keys_held() -> None:
    """With 200 000 keys held, admitting 100 rows and evicting a few touches O(100) rows."""
    store = DedupStore(["id"])
    held = 200_000
    ids = np.arange(held)
    store.admit(pl.DataFrame({"id": ids, EXPIRES: ids}))
    store.take_changes()
    before = store.work
    fresh = pl.DataFrame({"id": np.arange(held - 50, held + 50), EXPIRES: np.full(100, held)})
    mask = store.admit(fresh)
    assert mask.sum() == 50
    assert store.evict(9) == 10  # expiries 0..9
    assert store.work - before <= 1_000
    assert store.height == held + 50 - 10
