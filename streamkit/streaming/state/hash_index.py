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
    distinct within one call and nonzero.

    A cell is one row of a (capacity, 2) int64 table, hash bits then value, so a probe
    reads one cache line: at millions of keys every lookup is a cache miss, and keeping
    the value beside its hash halves them."""

    def __init__(self) -> None:
        self._cells = _empty(MIN_CAPACITY)
        self._used = 0
        """Cells holding a hash, tombstones included."""

    def __len__(self) -> int:
        return int(np.count_nonzero(self._cells[:, 1] >= 0))

    def _probe(self, hashes: U64) -> tuple[I64, npt.NDArray[np.bool_], I64]:
        """Per hash: the cell holding it (found) or the first empty cell on its path, and
        the value held there (-1 when not found). At a load of at most 1/2 most hashes end
        at their home cell, so that first step runs on whole arrays, without the index
        arrays and masked writes of the steps after it (~2x faster at 100,000 hashes)."""
        mask = self._cells.shape[0] - 1
        want = hashes.view(np.int64)
        cell = self._home(hashes)  # a new array: cells still probing are overwritten below
        held = np.take(self._cells, cell, axis=0)
        found = held[:, 0] == want
        value = np.where(found, held[:, 1], -1)
        todo = np.flatnonzero(~found & (held[:, 0] != 0))
        at = (cell[todo] + 1) & mask
        while todo.size:
            held = np.take(self._cells, at, axis=0)
            hit = held[:, 0] == want[todo]
            done = hit | (held[:, 0] == 0)
            cell[todo[done]] = at[done]
            found[todo[hit]] = True
            value[todo[hit]] = held[hit, 1]
            todo, at = todo[~done], (at[~done] + 1) & mask
        return cell, found, value

    def _home(self, hashes: U64) -> I64:
        """First cell of each hash: Fibonacci hashing (the top bits of hash * 2^64/phi),
        so hashes that differ only in their high bits still spread over the table."""
        bits = self._cells.shape[0].bit_length() - 1
        return ((hashes * GOLDEN) >> np.uint64(64 - bits)).astype(np.int64)

    def get(self, hashes: U64) -> I64:
        """The value of every hash, -1 where absent or deleted."""
        return self.find(hashes)[0]

    def find(self, hashes: U64) -> tuple[I64, I64]:
        """(the value of every hash, -1 where absent or deleted; the cell holding it,
        valid for :meth:`set_at` until the next :meth:`put`)."""
        cell, _, value = self._probe(hashes)
        return value, cell

    def set_at(self, cells: I64, values: I64) -> None:
        """Give new values (>= 0) to hashes present at ``cells`` (from :meth:`find`,
        without a :meth:`put` since): no probing."""
        self._cells[cells, 1] = values

    def put(self, hashes: U64, values: I64) -> None:
        """Set ``hashes`` (distinct, nonzero) to ``values`` (>= 0)."""
        if (self._used + hashes.size) * 2 > self._cells.shape[0]:
            self._rebuild(len(self) + hashes.size)
        cell, found, _ = self._probe(hashes)
        self._cells[cell[found], 1] = values[found]
        hashes, values, cell = hashes[~found], values[~found], cell[~found]
        while hashes.size:
            _, first = np.unique(cell, return_index=True)
            self._cells[cell[first], 0] = hashes[first].view(np.int64)
            self._cells[cell[first], 1] = values[first]
            self._used += first.size
            rest = np.ones(hashes.size, np.bool_)
            rest[first] = False
            hashes, values = hashes[rest], values[rest]
            cell, _, _ = self._probe(hashes)

    def delete(self, hashes: U64) -> None:
        """Forget ``hashes`` (absent ones are ignored)."""
        cell, found, _ = self._probe(hashes)
        self._cells[cell[found], 1] = -1

    def _rebuild(self, live: int) -> None:
        keep = self._cells[:, 1] >= 0
        keys, vals = self._cells[keep, 0].view(np.uint64), self._cells[keep, 1]
        cap = MIN_CAPACITY
        while cap < 4 * max(live, 1):
            cap *= 2
        self._cells = _empty(cap)
        self._used = 0
        if keys.size:
            self.put(keys, vals)


def _empty(cap: int) -> I64:
    """A table of ``cap`` empty cells (hash 0, value -1)."""
    cells = np.empty((cap, 2), np.int64)
    cells[:, 0] = 0
    cells[:, 1] = -1
    return cells
