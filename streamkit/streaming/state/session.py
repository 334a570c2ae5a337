"""Session-window state whose per-batch cost follows the keys a batch touches and the
sessions it closes.

Sessions are indexed by the aggregation's group keys without the window; a key may hold
several sessions, stored as one run of consecutive rows in a
:class:`~streamkit.streaming.state.row_log.RowLog`. Two
:class:`~streamkit.streaming.state.hash_index.HashIndex` map a key's 64-bit hash to the
run's first slot and to its length.

- Merge: look up the batch's keys, gather only their runs, merge them with the batch's
  partial sessions by ``aggregate.merge`` (the batch job's function: sessions that overlap
  or touch merge, Spark's ``t_next <= last + gap``), kill the old runs, append the new.
- Evict: a :class:`~streamkit.streaming.state.due.Due` holds each key under the earliest
  end of its sessions, filed when the key is written; eviction pops the keys whose
  earliest end is at or before the watermark, gathers only their runs and rewrites them
  without the closed sessions. Entries made stale by a later write are popped and checked
  like the others; when stale entries outnumber the sessions held, the queue is rebuilt
  from the state (amortised over the writes that made them).

So a batch costs O(rows in + sessions of the keys it touches + sessions it closes), never
O(sessions held); :meth:`SessionStore.rows` (snapshots, complete mode) reads all of them.

Deltas (:class:`~streamkit.streaming.state.changelog.GroupChangelog`) name every session a
touched key holds after the batch, or delete the key: applying one replaces all sessions of
each key it names. Two keys with one hash are told apart by value: the second lives in a
small overflow frame merged by regroup, so results stay exact whatever the hash does.
Without group keys every session belongs to the one key, which each batch touches; its
checkpoints are snapshots.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from streamkit import aggregate as K
from streamkit.streaming.state.changelog import GroupChangelog
from streamkit.streaming.state.due import Due
from streamkit.streaming.state.hash_index import I64, U64, HashIndex
from streamkit.streaming.state.indexed import Hasher, IndexedRows, concat, row_hash, same_keys
from streamkit.windows import WEND

STALE_SLACK = 4096
"""Stale queue entries tolerated beyond the sessions held before the queue is rebuilt."""


def _touched(frame: pl.DataFrame, flag: bool) -> pl.DataFrame:
    return frame.with_columns(pl.lit(flag).alias(K.TOUCHED))


class SessionStore(IndexedRows):
    """Sessions indexed by group key (see the module docstring)."""

    def __init__(self, spec: K.AggregateSpec, hasher: Hasher = row_hash) -> None:
        super().__init__(list(spec.keys), hasher)
        self.spec = spec
        self._changes = GroupChangelog(self.keys)

    def _clear_rows(self) -> None:
        super()._clear_rows()
        self._runs = HashIndex()
        """Key hash -> number of sessions in its run (``_index``: its first slot)."""
        self._due = Due()

    def _hashes(self, frame: pl.DataFrame) -> U64:
        if self.keys:
            return super()._hashes(frame)
        return np.ones(frame.height, np.uint64)  # no group keys: one key

    # -- merge -------------------------------------------------------------------------
    def merge(self, fresh: pl.DataFrame) -> pl.DataFrame:
        """See :meth:`~streamkit.streaming.state.contract.StateStore.merge`: returns the
        sessions that took rows of this batch."""
        fresh = fresh.drop(K.TOUCHED, strict=False)
        if not fresh.height:
            return fresh
        fresh, to_over = self._split_overflow(fresh)
        uniq, inverse = np.unique(self._hashes(fresh), return_inverse=True)
        firsts = self._index.get(uniq)
        held = np.flatnonzero(firsts >= 0)
        rows, slots, owner, first_row = self._gather(firsts[held], self._runs.get(uniq[held]))
        run_of = np.full(uniq.size, -1, np.int64)
        run_of[held] = np.arange(held.size)
        row_run = run_of[inverse]
        cand = row_run >= 0
        same = cand.copy()  # without group keys every held row is the key's
        if cand.any() and self.keys:
            theirs = rows.select(self.keys)[first_row[row_run[cand]]]
            ours = fresh.filter(pl.Series(cand)).select(self.keys)
            same[cand] = same_keys(ours, theirs, self.keys)
        used = np.zeros(held.size, np.bool_)
        used[row_run[same]] = True
        old = used[owner]
        self._log.kill(slots[old])
        collided = cand & ~same
        parts = [_touched(fresh.filter(pl.Series(~collided)), True)]
        if old.any():
            parts.append(_touched(rows.filter(pl.Series(old)), False))
        merged = K.merge(concat(parts), self.spec)
        sessions = merged.drop(K.TOUCHED)
        self._write(sessions)
        self._tidy()
        self._changes.upserted(sessions)
        over = self._merge_overflow(concat([to_over, fresh.filter(pl.Series(collided))]))
        self._compact_due()
        return concat([merged.filter(pl.col(K.TOUCHED)).drop(K.TOUCHED), over])

    def _gather(self, firsts: I64, counts: I64) -> tuple[pl.DataFrame, I64, I64, I64]:
        """The rows of the runs ``(firsts[i], counts[i])``, run after run in slot order:
        (rows, their slots, the run ``i`` of each row, the first row of each run ``i``)."""
        order = np.argsort(firsts)
        f, c = firsts[order], counts[order]
        starts = np.cumsum(c) - c
        slots = np.repeat(f - starts, c) + np.arange(int(c.sum()), dtype=np.int64)
        first_row = np.empty(firsts.size, np.int64)
        first_row[order] = starts
        return self._log.gather(slots), slots, np.repeat(order, c), first_row

    def _write(self, sessions: pl.DataFrame) -> None:
        """Store ``sessions``: every session of their keys, none of which has a live run;
        a key whose hash another of them has goes to the overflow frame."""
        if not sessions.height:
            return
        hashes = self._hashes(sessions)
        order = np.argsort(hashes, kind="stable")
        sessions, hashes = sessions[order], hashes[order]
        uniq, first, counts = np.unique(hashes, return_index=True, return_counts=True)
        keys = sessions.select(self.keys)
        same = same_keys(keys, keys[np.repeat(first, counts)], self.keys) if self.keys else None
        if same is not None and not same.all():
            self._over = concat([self._over, sessions.filter(pl.Series(~same))])
            sessions, hashes = sessions.filter(pl.Series(same)), hashes[same]
            uniq, first, counts = np.unique(hashes, return_index=True, return_counts=True)
        slots = self._log.append(sessions, hashes)
        self._index.put(uniq, slots[first])
        self._runs.put(uniq, counts.astype(np.int64))
        ends = sessions[WEND].to_numpy().astype(np.int64, copy=False)
        self._due.add(np.minimum.reduceat(ends, first), uniq)

    def _tidy(self) -> None:
        """Compact the log; point the index at the first row of every run it moved (a run
        moves whole and in order, so runs start where the hash changes or slots jump)."""
        moved = self._log.tidy()
        h, s = moved.hashes, moved.slots
        if not s.size:
            return
        start = np.ones(h.size, np.bool_)
        start[1:] = (h[1:] != h[:-1]) | (s[1:] != s[:-1] + 1)
        h, s = h[start], s[start]
        _, last = np.unique(h[::-1], return_index=True)  # a run moved twice: its last move
        at = h.size - 1 - last
        self._index.put(h[at], s[at])

    def _merge_overflow(self, rows: pl.DataFrame) -> pl.DataFrame:
        """Regroup the overflow frame with ``rows``; returns the sessions they touched."""
        if not rows.height:
            return rows
        old = _touched(self._over, False) if self._over.height else pl.DataFrame()
        merged = K.merge(concat([old, _touched(rows, True)]), self.spec)
        self._over = merged.drop(K.TOUCHED)
        keys = rows.select(self.keys).unique()
        self._changes.upserted(self._over.join(keys, on=self.keys, how="semi", nulls_equal=True))
        return merged.filter(pl.col(K.TOUCHED)).drop(K.TOUCHED)

    # -- eviction ----------------------------------------------------------------------
    def evict(self, watermark: int) -> pl.DataFrame:
        """See :meth:`~streamkit.streaming.state.contract.StateStore.evict`."""
        hashes = self._due.pop(watermark)
        firsts = self._index.get(hashes)
        held = firsts >= 0
        parts = [self._evict_main(watermark, hashes[held], firsts[held])] if held.any() else []
        if self._over.height:
            closed = pl.col(WEND) <= watermark
            out = self._over.filter(closed)
            self._over = self._over.filter(~closed)
            keys = out.select(self.keys).unique()
            self._record(keys, self._over.join(keys, on=self.keys, how="semi", nulls_equal=True))
            parts.append(out)
        return concat([p for p in parts if p.height])

    def _evict_main(self, watermark: int, hashes: U64, firsts: I64) -> pl.DataFrame:
        """Close the sessions ended by ``watermark`` among the runs of ``hashes``."""
        rows, slots, owner, _ = self._gather(firsts, self._runs.get(hashes))
        closed = (rows[WEND] <= watermark).to_numpy()
        hit = np.zeros(hashes.size, np.bool_)
        hit[owner[closed]] = True
        rewritten = hit[owner]
        self._log.kill(slots[rewritten])
        self._index.delete(hashes[hit])
        self._runs.delete(hashes[hit])
        kept = rows.filter(pl.Series(rewritten & ~closed))
        self._write(kept)  # the keys with sessions left are held again
        self._tidy()
        self._record(rows.filter(pl.Series(rewritten)).select(self.keys).unique(), kept)
        return rows.filter(pl.Series(closed))

    def _record(self, keys: pl.DataFrame, sessions: pl.DataFrame) -> None:
        """In the delta: ``keys`` now hold exactly ``sessions`` (none: deleted)."""
        if not self.keys:
            return
        self._changes.upserted(sessions)
        if sessions.height:
            keys = keys.join(sessions.select(self.keys), on=self.keys, how="anti", nulls_equal=True)
        self._changes.deleted(keys)

    def _compact_due(self) -> None:
        """Rebuild the eviction queue from the state once stale entries pile up."""
        if len(self._due) <= 2 * self._log.live + STALE_SLACK:
            return
        self._due.clear()
        live = concat(self._log.rows())
        if not live.height:
            return
        hashes, ends = self._hashes(live), live[WEND].to_numpy().astype(np.int64, copy=False)
        order = np.lexsort((ends, hashes))
        uniq, first = np.unique(hashes[order], return_index=True)
        self._due.add(ends[order][first], uniq)

    # -- whole state -------------------------------------------------------------------
    def take_changes(self) -> pl.DataFrame | None:
        """The delta since the previous call or :meth:`load`; None without group keys (a
        snapshot is then as small as the delta)."""
        if not self.keys:
            self._changes.clear()
            return None
        return self._changes.take()

    def load(self, state: pl.DataFrame | None) -> None:
        """See :meth:`~streamkit.streaming.state.contract.StateStore.load`."""
        self._clear_rows()
        self._changes.clear()
        if state is not None and state.height:
            self._write(state)
