"""A keyed state store whose per-batch cost follows the groups a batch touches.

Rows live in a :class:`~streamkit.streaming.state.row_log.RowLog`, found through a
:class:`~streamkit.streaming.state.hash_index.HashIndex` on a 64-bit hash of the state
keys. A batch's merge looks its keys up, gathers only the rows it touches, merges them with
``aggregate.merge`` (the batch job's function, so results are the reference regroup's),
kills the old rows and appends the merged ones. Eviction pops the hashes of the keys
created per window end at or before the watermark: O(evicted). Without a window, a store
given an ``expiry`` key (a timestamp group key carrying the watermark, or a window struct
key: its ``end``) files and evicts its keys by that key's value as if it were the window
end (a null key never expires).
Nothing in a batch scans the state held; :meth:`KeyedStore.rows` (snapshots, complete
mode) does, by nature.

Two distinct keys with one hash are told apart by comparing the keys themselves: the
second one lives in a small overflow frame merged by full regroup, so the result stays
exact whatever the hash does (tests use a 3-bit hash to exercise it).

Row order is not part of the contract: the frames a merge, an eviction or
:meth:`KeyedStore.rows` return, and the changes a delta records, hold the right rows in
no promised order (what reaches a sink is sorted by the engine). Accepted mutants in
``tests/mutation/equivalent.md`` rest on this; a caller that needs an order sorts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from streamkit import aggregate as K
from streamkit.streaming.state.by_slot import slot_sums
from streamkit.streaming.state.hash_index import I64, U64
from streamkit.streaming.state.indexed import Hasher, IndexedRows, concat, row_hash, same_keys
from streamkit.windows import WEND, TimeWindow, key_end


def _distinct(hashes: U64) -> bool:
    """Whether no two of ``hashes`` are equal (then no two rows share a key)."""
    return bool(pl.Series(hashes).n_unique() == hashes.size)


def _ascending(at: I64) -> bool:
    return at.size < 2 or bool(np.all(at[1:] > at[:-1]))


@dataclass(frozen=True)
class _Lookup:
    """A batch's rows looked up in the index: those whose hash it holds (``found``, in
    slot order, with their slots, hashes and index cells), the others (``news``), and
    whether no two rows share a slot or a new hash."""

    found: pl.DataFrame
    slots: I64
    hashes: U64
    cells: I64
    news: pl.DataFrame
    new_hashes: U64
    distinct: bool


def _merge(frames: list[pl.DataFrame], spec: K.AggregateSpec) -> pl.DataFrame:
    rows = concat([f for f in frames if f.height])
    return K.merge(rows, spec) if rows.height else rows


class KeyedStore(IndexedRows):
    """Hash-indexed state for tumbling and sliding windows and plain keys (see the
    module docstring); per batch O(rows in + groups touched + groups evicted)."""

    spread = 0.5
    """:meth:`merge_rows` skips the group-by after a batch with more groups per row."""

    def __init__(
        self, spec: K.AggregateSpec, hasher: Hasher = row_hash, expiry: str | None = None
    ) -> None:
        """``expiry``: without a window, the group key whose ticks act as the window end
        for :meth:`evict` (None: a store without a window never evicts)."""
        super().__init__(spec.state_keys, hasher)
        self.spec = spec
        self.expiry = expiry if spec.window is None else None
        self._columns = K.state_columns(spec)
        self._buckets: dict[int, list[U64]] = {}
        self._sums = slot_sums(spec)
        self._spread = 0.0

    # -- merge of input rows -----------------------------------------------------------
    @property
    def adds_rows(self) -> bool:
        """Whether :meth:`merge_rows` can skip the group-by (every aggregate adds up)."""
        return self._sums is not None

    def merge_rows(self, rows: pl.DataFrame, late_mark: int | None = None) -> pl.DataFrame:
        """:meth:`merge` of ``aggregate.partial(rows)`` (keeping the groups whose window
        ends after ``late_mark``), the same rows. When the aggregates add up
        (:mod:`~streamkit.streaming.state.by_slot`) and the previous batch had more than
        :attr:`spread` groups per row (a group-by would barely shrink it), rows whose key
        is held are hashed and looked up once and added onto their slot's state without
        a group-by; the others (new keys, keys sharing a hash) take :meth:`merge`."""
        if self._sums is None or self._spread <= self.spread or not rows.height:
            out = self.merge(self._partial(rows, late_mark))
            self._spread = out.height / max(rows.height, 1)
            return out
        placed = self._place(rows)
        if late_mark is not None and self.spec.window is not None:
            keep = (placed[WEND] > late_mark).to_numpy()
            if not keep.all():
                rows, placed = rows.filter(pl.Series(keep)), placed.filter(pl.Series(keep))
        hashes = self._hashes(placed)
        slots, cells = self._index.find(hashes)
        rest = slots < 0
        parts: list[pl.DataFrame] = []
        if not rest.all():
            merged, mismatched = self._add_held(placed, slots, hashes, cells)
            rest[mismatched] = True
            parts.append(merged)
        if rest.any():
            parts.append(self.merge(self._partial(rows.filter(pl.Series(rest)), None)))
        touched = concat([p for p in parts if p.height])
        self._spread = touched.height / max(rows.height, 1)
        return touched

    def _place(self, rows: pl.DataFrame) -> pl.DataFrame:
        """``rows`` with their window's bounds for ``__bucket`` (tumbling windows, the
        only ones :meth:`merge_rows` places itself: row i stays row i)."""
        window = self.spec.window
        if window is None:
            return rows
        assert isinstance(window, TimeWindow)
        assert self.spec.time_dtype is not None
        return window.expand(rows, self.spec.time_dtype)

    def _partial(self, rows: pl.DataFrame, late_mark: int | None) -> pl.DataFrame:
        fresh = K.partial(rows.lazy(), self.spec)
        if late_mark is not None and self.spec.window is not None:
            fresh = fresh.filter(pl.col(WEND) > late_mark)
        return fresh

    def _add_held(
        self, placed: pl.DataFrame, slots: I64, hashes: U64, cells: I64
    ) -> tuple[pl.DataFrame, I64]:
        """Add each row of ``placed`` whose key is the one at its slot (``slots``, -1:
        none) onto that slot's state; returns the merged rows (in slot order) and the
        rows with a slot but another key (sharing its hash)."""
        assert self._sums is not None
        order = np.argsort(slots)
        order = order[np.searchsorted(slots[order], 0) :]  # rows with a slot, by slot
        ordered = slots[order]
        new_run = np.diff(ordered, prepend=-1) != 0
        old = self._log.gather(ordered[new_run])
        run = np.full(slots.size, 0, np.int64)  # per row of placed: its row of old
        run[order] = np.cumsum(new_run) - 1
        same = same_keys(placed.select(self.keys), old.select(self.keys)[run], self.keys)
        mine = same[order]
        mismatched = order[~mine]
        if mismatched.size:
            kept = np.zeros(old.height, np.bool_)
            kept[run[order[mine]]] = True
            old, order, ordered = old.filter(pl.Series(kept)), order[mine], ordered[mine]
            new_run = np.diff(ordered, prepend=-1) != 0
        starts = np.flatnonzero(new_run)
        merged = self._sums.add(old, placed, order, starts)
        firsts = order[starts]
        self._log.kill(ordered[starts])
        self._index.set_at(cells[firsts], self._log.append(merged, hashes[firsts]))
        self._tidy()
        self._changes.upserted(merged)
        return merged, mismatched

    def merge(self, fresh: pl.DataFrame) -> pl.DataFrame:
        """See :meth:`~streamkit.streaming.state.contract.StateStore.merge`."""
        fresh = fresh.drop(K.TOUCHED, strict=False)
        if not fresh.height:
            return fresh
        if set(fresh.columns) == set(self._columns):  # merge's column order (no copy)
            fresh = fresh.select(self._columns)
        fresh, to_over = self._split_overflow(fresh)
        look = self._lookup(fresh)
        if not look.distinct:  # several partial rows per key (sliding windows)
            look = self._lookup(_merge([fresh], self.spec))
        hits, olds, collided, hit_hashes, at = self._match(look)
        cells: I64 | None = at
        merged = K.combine(olds, hits, self.spec) if hits.height else hits
        if merged is None:  # an aggregate merges by group only: regroup the touched rows
            merged = _merge([olds, hits], self.spec)
            hit_hashes, cells = self._hashes(merged), None
        touched_over = self._merge_overflow(concat([to_over, collided]))
        rows = self._store(merged, hit_hashes, cells, look.news, look.new_hashes)
        out = concat([rows, touched_over])
        self._changes.upserted(out)
        return out

    def _lookup(self, fresh: pl.DataFrame) -> _Lookup:
        hashes = self._hashes(fresh)
        slots, cells = self._index.find(hashes)
        held = slots >= 0
        at = np.flatnonzero(held)
        at = at[np.argsort(slots[at])]
        found = fresh if at.size == fresh.height and _ascending(at) else fresh[at]
        news, new_hashes = fresh.filter(pl.Series(~held)), hashes[~held]
        slots = slots[at]
        distinct = _distinct(new_hashes) and not np.any(slots[1:] == slots[:-1])
        return _Lookup(found, slots, hashes[at], cells[at], news, new_hashes, distinct)

    def _match(self, look: _Lookup) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, U64, I64]:
        """(rows whose key is the one at their slot, those slots' old rows in the same
        order, rows that only share the hash, the first rows' hashes and index cells);
        ``look`` holds one row per key; the old rows are killed."""
        found, slots = look.found, look.slots
        if not found.height:
            return found, found, found, look.hashes, look.cells
        if np.any(slots[1:] == slots[:-1]):  # keys that share a hash share a slot
            uniq, inverse = np.unique(slots, return_inverse=True)
            old = self._log.gather(uniq)[inverse]
        else:
            old = self._log.gather(slots)
        same = same_keys(found.select(self.keys), old.select(self.keys), self.keys)
        self._log.kill(slots[same])
        if same.all():
            return found, old, found.head(0), look.hashes, look.cells
        mine = pl.Series(same)
        hashes, cells = look.hashes[same], look.cells[same]
        return found.filter(mine), old.filter(mine), found.filter(~mine), hashes, cells

    def _store(
        self,
        hits: pl.DataFrame,
        hit_hashes: U64,
        cells: I64 | None,
        news: pl.DataFrame,
        new_hashes: U64,
    ) -> pl.DataFrame:
        """Store merged rows (one per key) and return them: in the log, or for a new key
        sharing a hash with another, in overflow. ``cells``: where the index holds
        ``hits``' hashes (None: look them up again)."""
        every = concat([hits, news])
        first = pl.Series(new_hashes).is_first_distinct().to_numpy()
        if not first.all():
            self._over = concat([self._over, news.filter(pl.Series(~first))])
            news, new_hashes = news.filter(pl.Series(first)), new_hashes[first]
        self._file(news, new_hashes)
        rows = concat([hits, news])
        if rows.height:
            slots = self._log.append(rows, np.concatenate([hit_hashes, new_hashes]))
            if cells is None:
                self._index.put(np.concatenate([hit_hashes, new_hashes]), slots)
            else:
                self._index.set_at(cells, slots[: hits.height])
                self._index.put(new_hashes, slots[hits.height :])
        self._tidy()
        return every

    @property
    def _evicts(self) -> bool:
        return self.spec.window is not None or self.expiry is not None

    def _end(self, rows: pl.DataFrame) -> pl.Expr:
        """The window end in ticks of each state row of ``rows`` (the ``expiry`` key's, a
        window struct key's ``end``: :func:`~streamkit.windows.key_end`; null: never)."""
        if self.expiry is None:
            return pl.col(WEND)
        return key_end(self.expiry, rows.schema[self.expiry])

    def _file(self, news: pl.DataFrame, hashes: U64) -> None:
        """Remember new keys under their window end, for eviction."""
        if not self._evicts or not news.height:
            return
        ends_s = news.select(self._end(news)).to_series()
        if ends_s.null_count():  # null keys never expire: not filed (maybe none left)
            hashes, ends_s = hashes[ends_s.is_not_null().to_numpy()], ends_s.drop_nulls()
        ends = ends_s.to_numpy()
        if not ends.size:
            return
        order = np.argsort(ends, kind="stable")
        values, starts = np.unique(ends[order], return_index=True)
        for end, part in zip(values.tolist(), np.split(hashes[order], starts[1:]), strict=True):
            self._buckets.setdefault(int(end), []).append(part)

    # -- overflow (keys whose hash another key holds) ------------------------------------
    def _merge_overflow(self, rows: pl.DataFrame) -> pl.DataFrame:
        if not rows.height:
            return rows
        old = self._over.with_columns(pl.lit(False).alias(K.TOUCHED))
        new = rows.with_columns(pl.lit(True).alias(K.TOUCHED))
        merged = _merge([old if old.height else pl.DataFrame(), new], self.spec)
        self._over = merged.drop(K.TOUCHED)
        return merged.filter(pl.col(K.TOUCHED)).drop(K.TOUCHED)

    # -- eviction ----------------------------------------------------------------------
    def evict(self, watermark: int) -> pl.DataFrame:
        """See :meth:`~streamkit.streaming.state.contract.StateStore.evict`."""
        if not self._evicts:
            return pl.DataFrame()
        due = [end for end in self._buckets if end <= watermark]
        parts = [self._evict_main(watermark, due)] if due else []
        if self._over.height:
            closed = (self._end(self._over) <= watermark).fill_null(False)
            parts.append(self._over.filter(closed))
            self._over = self._over.filter(~closed)
        out = concat([p for p in parts if p.height])
        self._changes.deleted(out)
        return out

    def _evict_main(self, watermark: int, due: list[int]) -> pl.DataFrame:
        hashes = np.unique(np.concatenate([a for end in due for a in self._buckets.pop(end)]))
        slots = self._index.get(hashes)
        slots = np.unique(slots[slots >= 0])
        rows = self._log.gather(slots)
        if not rows.height:
            return rows
        ends = rows.select(self._end(rows)).to_series()
        closed = (ends <= watermark).fill_null(False).to_numpy()
        out = rows.filter(pl.Series(closed))
        self._log.kill(slots[closed])
        self._index.delete(self._hashes(out))
        self._tidy()
        return out

    # -- whole state: rows, height, work, take_changes, change_keys (IndexedRows) ---
    def load(self, state: pl.DataFrame | None) -> None:
        """See :meth:`~streamkit.streaming.state.contract.StateStore.load`."""
        self._clear_rows()
        self._buckets = {}
        self._changes.clear()
        if state is not None and state.height:
            none = np.empty(0, np.uint64)
            self._store(state.head(0), none, None, state, self._hashes(state))
