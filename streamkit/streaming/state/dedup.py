"""The keys a streaming ``drop_duplicates`` has seen, each with the tick it expires at.

A row of state is the key columns plus :data:`EXPIRES` (null: never expires). Keys live in
a :class:`~streamkit.streaming.state.row_log.RowLog` found through a
:class:`~streamkit.streaming.state.hash_index.HashIndex` on a 64-bit hash of the key, as
in :class:`~streamkit.streaming.state.keyed.KeyedStore`: :meth:`DedupStore.admit` looks up
only the batch's keys and :meth:`DedupStore.evict` gathers only the keys due, from chunks
of (expiry, hash) sorted by expiry, so a batch costs O(rows in + keys evicted + chunks),
never O(keys held). A key sharing its hash with another held key is kept in a small
overflow frame, compared by value, so the answer is exact whatever the hash does.

Deltas and snapshots have the layout of :mod:`~streamkit.streaming.state.changelog`:
upserts are whole state rows (keys never change once admitted), deletions name the keys.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from streamkit.streaming.state.changelog import Changelog
from streamkit.streaming.state.hash_index import I64, U64, HashIndex, nonzero
from streamkit.streaming.state.keyed import Hasher, row_hash
from streamkit.streaming.state.row_log import RowLog

EXPIRES = "__expires"
"""State column: the key leaves the state once the watermark is at or past it."""
MAX_CHUNKS = 64
"""Expiry chunks beyond this are merged into one (amortised: each merge halves them)."""


def _concat(frames: list[pl.DataFrame]) -> pl.DataFrame:
    frames = [f for f in frames if f.height]
    if not frames:
        return pl.DataFrame()
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical_relaxed")


class DedupStore:
    """Distinct keys with their expiry (see the module docstring)."""

    def __init__(self, keys: list[str], hasher: Hasher = row_hash) -> None:
        self.keys, self._hasher = keys, hasher
        self._changes = Changelog(keys)
        self._reset()

    def _reset(self) -> None:
        self._log, self._index, self._over = RowLog(), HashIndex(), pl.DataFrame()
        self._due: list[tuple[I64, U64]] = []
        """Chunks of (expiry ticks ascending, key hashes) of keys in the log."""
        self._key_schema: pl.Schema | None = None

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
            ours = fresh[at].select(self.keys)
            same = ours.select(
                pl.all_horizontal(ours[k].eq_missing(theirs[k]) for k in self.keys)
            ).to_series()
            held[at[same.to_numpy()]] = True
        return held

    def _insert(self, new: pl.DataFrame) -> None:
        """Hold ``new`` (distinct keys, none held); a key whose hash is taken goes to the
        overflow frame."""
        if not new.height:
            return
        hashes = self._hashes(new)
        own = (self._index.get(hashes) < 0) & pl.Series(hashes).is_first_distinct().to_numpy()
        if not own.all():
            self._over = _concat([self._over, new.filter(pl.Series(~own))])
            new, hashes = new.filter(pl.Series(own)), hashes[own]
        if new.height:
            self._index.put(hashes, self._log.append(new, hashes))
            self._file(new[EXPIRES], hashes)

    def _file(self, expires: pl.Series, hashes: U64) -> None:
        """Remember the keys that expire, sorted by expiry."""
        timed = expires.is_not_null().to_numpy()
        ticks = expires.drop_nulls().to_numpy().astype(np.int64)
        if not ticks.size:
            return
        order = np.argsort(ticks, kind="stable")
        self._due.append((ticks[order], hashes[timed][order]))
        if len(self._due) > MAX_CHUNKS:
            ticks = np.concatenate([t for t, _ in self._due])
            order = np.argsort(ticks, kind="stable")
            self._due = [(ticks[order], np.concatenate([h for _, h in self._due])[order])]

    # -- evict -------------------------------------------------------------------------
    def evict(self, watermark: int) -> int:
        """Forget the keys whose expiry is at or before ``watermark``; returns how many."""
        due: list[U64] = []
        kept: list[tuple[I64, U64]] = []
        for ticks, hashes in self._due:
            cut = int(np.searchsorted(ticks, watermark, side="right"))
            due.append(hashes[:cut])
            if cut < ticks.size:
                kept.append((ticks[cut:], hashes[cut:]))
        self._due = kept
        parts = [self._evict_main(watermark, np.unique(np.concatenate(due)))] if due else []
        if self._over.height:
            closed = (pl.col(EXPIRES) <= watermark).fill_null(False)
            parts.append(self._over.filter(closed))
            self._over = self._over.filter(~closed)
        out = _concat(parts)
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
        moved = self._log.tidy()
        if moved.slots.size:
            self._index.put(moved.hashes, moved.slots)
        return out

    # -- whole state -------------------------------------------------------------------
    def rows(self) -> pl.DataFrame:
        """Every key held with its expiry (O(keys held): snapshots)."""
        return _concat([*self._log.rows(), self._over])

    @property
    def height(self) -> int:
        """Number of keys held."""
        return self._log.live + self._over.height

    @property
    def work(self) -> int:
        """Rows the log has gathered, written or moved so far (its cost, for tests)."""
        return self._log.handled

    def take_changes(self) -> pl.DataFrame:
        """The delta since the previous call or :meth:`load`; starts a new one."""
        return self._changes.take()

    @property
    def change_keys(self) -> list[str]:
        """The key columns."""
        return self.keys

    def load(self, state: pl.DataFrame | None) -> None:
        """Replace the state by ``state`` (a snapshot, or nothing); the delta starts empty."""
        self._reset()
        self._changes.clear()
        if state is not None and state.height:
            self._insert(state)

    def _hashes(self, frame: pl.DataFrame) -> U64:
        if not frame.height:
            return np.empty(0, np.uint64)
        keys = frame.select(self.keys)
        if self._key_schema is None:
            self._key_schema = keys.schema
        elif keys.schema != self._key_schema:
            keys = keys.cast(self._key_schema)
        return nonzero(self._hasher(keys).astype(np.uint64, copy=False))
