"""The vectorised hash index agrees with a Python dict over random puts, deletes and gets,
through several rebuilds, with small hash values (long probe chains) and with hashes
that share their low bits (the same home cell)."""

from __future__ import annotations

import numpy as np
import pytest

from streamkit.streaming.state.hash_index import HashIndex, nonzero


@pytest.mark.parametrize("spread", [2**64 - 1, 5000, 1 << 40])
def test_index_equals_dict(spread: int) -> None:
    rng = np.random.default_rng(spread % 1000)
    index, model = HashIndex(), dict[int, int]()
    for round_ in range(60):
        raw = rng.integers(0, spread, 700, dtype=np.uint64, endpoint=True)
        if spread == 1 << 40:
            raw = raw << np.uint64(20)  # low 20 bits all zero: every hash starts at cell 0
        keys = np.unique(nonzero(raw))
        if round_ % 3 == 2:
            index.delete(keys)
            for k in keys.tolist():
                model.pop(k, None)
        else:
            values = rng.integers(0, 1 << 40, keys.size, dtype=np.int64)
            index.put(keys, values)
            model.update(zip(keys.tolist(), values.tolist(), strict=True))
        probe = nonzero(rng.integers(0, spread, 900, dtype=np.uint64, endpoint=True))
        if spread == 1 << 40:
            probe = probe << np.uint64(20)
        probe = np.concatenate([probe, keys])
        want = [model.get(k, -1) for k in probe.tolist()]
        assert index.get(probe).tolist() == want
        assert len(index) == len(model)


@pytest.mark.parametrize("spread", [2**64 - 1, 5000, 1 << 40])
def test_find_then_set_at_updates_the_hash_found(spread: int) -> None:
    """``find`` gives the cell holding each hash present (``set_at`` there changes that
    hash's value and no other), whether the hash sits at its home cell or further along a
    probe chain; the model is a Python dict."""
    rng = np.random.default_rng(spread % 997)
    index, model = HashIndex(), dict[int, int]()
    for _ in range(20):
        raw = rng.integers(0, spread, 600, dtype=np.uint64, endpoint=True)
        if spread == 1 << 40:
            raw = raw << np.uint64(20)  # every hash starts at cell 0: long chains
        keys = np.unique(nonzero(raw))
        values = rng.integers(0, 1 << 40, keys.size, dtype=np.int64)
        index.put(keys, values)
        model.update(zip(keys.tolist(), values.tolist(), strict=True))
        held = np.array(list(model), dtype=np.uint64)
        chosen = held[rng.random(held.size) < 0.3]
        got, cells = index.find(chosen)
        assert got.tolist() == [model[k] for k in chosen.tolist()]
        fresh = rng.integers(0, 1 << 40, chosen.size, dtype=np.int64)
        index.set_at(cells, fresh)
        model.update(zip(chosen.tolist(), fresh.tolist(), strict=True))
        assert index.get(held).tolist() == [model[k] for k in held.tolist()]
