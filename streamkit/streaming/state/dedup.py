"""The keys a streaming ``drop_duplicates`` has seen, each with the tick it expires at.

A row of state is the key columns plus :data:`EXPIRES` (null: never expires). Keys live in
a :class:`~streamkit.streaming.state.row_log.RowLog` found through a
:class:`~streamkit.streaming.state.hash_index.HashIndex` on a 64-bit hash of the key, as
in :class:`~streamkit.streaming.state.keyed.KeyedStore`: :meth:`DedupStore.admit` looks up
only the batch's keys and :meth:`DedupStore.evict` gathers only the keys due, from a
:class:`~streamkit.streaming.state.due.Due` of (expiry, hash), so a batch costs
O(rows in + keys evicted + chunks), never O(keys held). A key sharing its hash with
another held key is kept in a small overflow frame, compared by value, so the answer is
exact whatever the hash does.

Deltas and snapshots have the layout of :mod:`~streamkit.streaming.state.changelog`:
upserts are whole state rows (keys never change once admitted), deletions name the keys.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from streamkit.streaming.state.due import Due
from streamkit.streaming.state.hash_index import U64
from streamkit.streaming.state.indexed import Hasher, IndexedRows, concat, row_hash, same_keys

EXPIRES = "__expires"
"""State column: the key leaves the state once the watermark is at or past it."""


class DedupStore(IndexedRows):
    """Distinct keys with their expiry (see the module docstring)."""

    def __init__(self, keys: list[str], hasher: Hasher = row_hash) -> None:
        super().__init__(keys, hasher)
        self._due = Due()
        """Hashes of the keys in the log, by expiry."""

    # -- admit -------------------------------------------------------------------------
    def admit(self, rows: pl.DataFrame) -> pl.Series:
        """Per row of ``rows`` (the key columns and :data:`EXPIRES`, in arrival order):
        true for the first row of a key not held, which is then held with that row's
        expiry (first row wins); false for every other row."""
        first = np.flatnonzero(rows.select(pl.struct(self.keys).is_first_distinct()).to_series())
        fresh = rows[first]
        new = ~self._held(fresh)
        self._insert(fresh.filter(pl.Series(new)))
        self._changes.upserted(fresh.filter(pl.Series(new)))
        mask = np.zeros(rows.height, np.bool_)
        mask[first[new]] = True
        return pl.Series(mask)

    def _held(self, fresh: pl.DataFrame) -> np.ndarray:
        """Per row of ``fresh`` (distinct keys): whether its key is held."""
        held = np.zeros(fresh.height, np.bool_)
        if not fresh.height:
            return held
        if self._over.height:
            numbered = fresh.select(self.keys).with_row_index("__i")
            over = self._over.select(self.keys)
            hit = numbered.join(over, on=self.keys, how="semi", nulls_equal=True)["__i"]
            held[hit.to_numpy()] = True
        slots = self._index.get(self._hashes(fresh))
        at = np.flatnonzero(slots >= 0)
        if at.size:
            uniq, inverse = np.unique(slots[at], return_inverse=True)
            theirs = self._log.gather(uniq).select(self.keys)[inverse]
            held[at[same_keys(fresh[at].select(self.keys), theirs, self.keys)]] = True
        return held

    def _insert(self, new: pl.DataFrame) -> None:
        """Hold ``new`` (distinct keys, none held); a key whose hash is taken goes to the
        overflow frame."""
        if not new.height:
            return
        hashes = self._hashes(new)
        own = (self._index.get(hashes) < 0) & pl.Series(hashes).is_first_distinct().to_numpy()
        if not own.all():
            self._over = concat([self._over, new.filter(pl.Series(~own))])
            new, hashes = new.filter(pl.Series(own)), hashes[own]
        if new.height:
            self._index.put(hashes, self._log.append(new, hashes))
            self._file(new[EXPIRES], hashes)

    def _file(self, expires: pl.Series, hashes: U64) -> None:
        """Remember the keys that expire, by expiry."""
        timed = expires.is_not_null().to_numpy()
        self._due.add(expires.drop_nulls().to_numpy().astype(np.int64), hashes[timed])

    # -- evict -------------------------------------------------------------------------
    def evict(self, watermark: int) -> int:
        """Forget the keys whose expiry is at or before ``watermark``; returns how many."""
        due = self._due.pop(watermark)
        parts = [self._evict_main(watermark, due)] if due.size else []
        if self._over.height:
            closed = (pl.col(EXPIRES) <= watermark).fill_null(False)
            parts.append(self._over.filter(closed))
            self._over = self._over.filter(~closed)
        out = concat(parts)
        self._changes.deleted(out)
        return out.height

    def _evict_main(self, watermark: int, hashes: U64) -> pl.DataFrame:
        """Remove the held keys among ``hashes`` (distinct) that expired by ``watermark``."""
        slots = self._index.get(hashes)
        held = slots >= 0
        order = np.argsort(slots[held])  # distinct hashes sit in distinct slots
        slots, hashes = slots[held][order], hashes[held][order]
        if not slots.size:
            return pl.DataFrame()
        rows = self._log.gather(slots)
        closed = (rows[EXPIRES] <= watermark).fill_null(False).to_numpy()
        out = rows.filter(pl.Series(closed))
        self._log.kill(slots[closed])
        self._index.delete(hashes[closed])
        self._tidy()
        return out

    # -- whole state: rows, height, work, take_changes, change_keys (IndexedRows) ---
    def load(self, state: pl.DataFrame | None) -> None:
        """Replace the state by ``state`` (a snapshot, or nothing); the delta starts empty."""
        self._clear_rows()
        self._due.clear()
        self._changes.clear()
        if state is not None and state.height:
            self._insert(state)
