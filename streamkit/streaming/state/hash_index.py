"""A vectorised hash map from 64-bit row hashes to int64 values (numpy, no Python loop per
key): open addressing with linear probing, load factor at most 1/2.

Every operation takes arrays and costs O(n * probe length) for its n keys, independent of
how many keys the map holds, except a rebuild when the table fills (amortised O(1) per
insert). Deleting keeps the hash as a tombstone (value -1) until the next rebuild. Hash
``0`` marks an empty cell, so callers map a hash of 0 to another value
(:func:`nonzero`); two keys with one hash are the caller's problem (the state store
compares the keys themselves).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
MIN_CAPACITY = 1024
GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def nonzero(hashes: U64) -> U64:
    """``hashes`` with 0 replaced by 1 (0 marks an empty cell)."""
    return np.where(hashes == 0, np.uint64(1), hashes)


class HashIndex:
    """uint64 hash -> int64 value (-1: absent). Hashes passed to :meth:`put` must be
    distinct within one call and nonzero."""

    def __init__(self, capacity: int = MIN_CAPACITY) -> None:
        cap = MIN_CAPACITY
        while cap < capacity:
            cap *= 2
        self._keys: U64 = np.zeros(cap, np.uint64)
        self._vals: I64 = np.full(cap, -1, np.int64)
        self._used = 0
        """Cells holding a hash, tombstones included."""

    def __len__(self) -> int:
        return int(np.count_nonzero(self._vals >= 0))

    def _probe(self, hashes: U64) -> tuple[I64, npt.NDArray[np.bool_]]:
        """Per hash: the cell holding it (found) or the first empty cell on its path."""
        mask = self._keys.size - 1
        cell = np.empty(hashes.size, np.int64)
        found = np.zeros(hashes.size, np.bool_)
        todo = np.arange(hashes.size)
        at = self._home(hashes)
        while todo.size:
            held = self._keys[at]
            hit = held == hashes[todo]
            done = hit | (held == 0)
            cell[todo[done]] = at[done]
            found[todo[hit]] = True
            todo, at = todo[~done], (at[~done] + 1) & mask
        return cell, found

    def _home(self, hashes: U64) -> I64:
        """First cell of each hash: Fibonacci hashing (the top bits of hash * 2^64/phi),
        so hashes that differ only in their high bits still spread over the table."""
        bits = self._keys.size.bit_length() - 1
        return ((hashes * GOLDEN) >> np.uint64(64 - bits)).astype(np.int64)

    def get(self, hashes: U64) -> I64:
        """The value of every hash, -1 where absent or deleted."""
        return self.find(hashes)[0]

    def find(self, hashes: U64) -> tuple[I64, I64]:
        """(the value of every hash, -1 where absent or deleted; the cell holding it,
        valid for :meth:`set_at` until the next :meth:`put`)."""
        cell, found = self._probe(hashes)
        out = np.full(hashes.size, -1, np.int64)
        out[found] = self._vals[cell[found]]
        return out, cell

    def set_at(self, cells: I64, values: I64) -> None:
        """Give new values (>= 0) to hashes present at ``cells`` (from :meth:`find`,
        without a :meth:`put` since): no probing."""
        self._vals[cells] = values

    def put(self, hashes: U64, values: I64) -> None:
        """Set ``hashes`` (distinct, nonzero) to ``values`` (>= 0)."""
        if (self._used + hashes.size) * 2 > self._keys.size:
            self._rebuild(len(self) + hashes.size)
        cell, found = self._probe(hashes)
        self._vals[cell[found]] = values[found]
        hashes, values, cell = hashes[~found], values[~found], cell[~found]
        while hashes.size:
            _, first = np.unique(cell, return_index=True)
            self._keys[cell[first]] = hashes[first]
            self._vals[cell[first]] = values[first]
            self._used += first.size
            rest = np.ones(hashes.size, np.bool_)
            rest[first] = False
            hashes, values = hashes[rest], values[rest]
            cell, _ = self._probe(hashes)

    def delete(self, hashes: U64) -> None:
        """Forget ``hashes`` (absent ones are ignored)."""
        cell, found = self._probe(hashes)
        self._vals[cell[found]] = -1

    def _rebuild(self, live: int) -> None:
        keep = self._vals >= 0
        keys, vals = self._keys[keep], self._vals[keep]
        cap = MIN_CAPACITY
        while cap < 4 * max(live, 1):
            cap *= 2
        self._keys, self._vals = np.zeros(cap, np.uint64), np.full(cap, -1, np.int64)
        self._used = 0
        if keys.size:
            self.put(keys, vals)
