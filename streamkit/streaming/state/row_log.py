"""Append-only storage of state rows addressed by slot, in immutable Polars segments.

A slot is ``segment id << 32 | row offset``; a segment id is never reused, so rewriting
one segment moves only its own rows. Updating a row is kill + append; :meth:`RowLog.tidy`
reclaims dead rows and bounds the segment count:

- the segments whose dead rows outnumber their live ones are rewritten together into one
  (live rows only): each moved row is paid for by a death since its segment was written;
- beyond :data:`MAX_SEGMENTS`, the adjacent pair with the fewest live rows merges.

So per-call costs follow the rows passed in, and tidying is amortised O(1) per death plus
O(rows appended) for the merges: nothing scans the whole log.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

from streamkit.streaming.state.hash_index import I64, U64

SHIFT = 32
MIN_REWRITE = 1024
"""Segments with fewer dead rows than this are not rewritten for their dead rows alone."""
MAX_SEGMENTS = 64


@dataclass
class _Segment:
    rows: pl.DataFrame
    live: npt.NDArray[np.bool_]
    hashes: U64
    alive: int


@dataclass(frozen=True)
class Moved:
    """Rows a tidy moved: their hashes and new slots (the index must follow)."""

    hashes: U64
    slots: I64


class RowLog:
    """Segments of rows, each row with its 64-bit key hash and a live flag."""

    def __init__(self) -> None:
        self._segs: dict[int, _Segment] = {}
        self._order: list[int] = []
        self._next = 0
        self.live = 0
        """Number of live rows."""
        self.handled = 0
        """Rows gathered, appended or moved so far: the log's work, for cost tests."""

    def append(self, rows: pl.DataFrame, hashes: U64) -> I64:
        """Store ``rows`` (one hash each) as one contiguous segment; returns their slots.
        (A segment in many chunks, as a group-by leaves it, would make every later
        gather from it several times slower.)"""
        rows = rows.rechunk()
        sid = self._next
        self._next += 1
        n = rows.height
        self.handled += n
        self._segs[sid] = _Segment(rows, np.ones(n, np.bool_), hashes, n)
        self._order.append(sid)
        self.live += n
        return (np.int64(sid) << SHIFT) + np.arange(n, dtype=np.int64)

    def _split(self, slots: I64) -> list[tuple[_Segment, I64]]:
        """``slots`` (sorted) grouped by segment, as row offsets."""
        sids = slots >> SHIFT
        cuts = np.flatnonzero(np.diff(sids)) + 1
        return [
            (self._segs[int(part[0] >> SHIFT)], part & ((1 << SHIFT) - 1))
            for part in np.split(slots, cuts)
            if part.size
        ]

    def gather(self, slots: I64) -> pl.DataFrame:
        """The rows at ``slots`` (sorted, distinct), in that order, in one chunk (a frame
        of a chunk per segment made every later step on it slower: at 5M keys held and
        ~99,000 touched, the merge's key check, sums and append cost ~7 ms more CPU than
        the ~1.4 ms the copy costs)."""
        parts = [seg.rows[offsets] for seg, offsets in self._split(slots)]
        self.handled += slots.size
        return pl.concat(parts, rechunk=True) if parts else pl.DataFrame()

    def kill(self, slots: I64) -> None:
        """Mark the rows at ``slots`` (sorted, distinct, live) dead."""
        for seg, offsets in self._split(slots):
            seg.live[offsets] = False
            seg.alive -= offsets.size
        self.live -= slots.size

    def rows(self) -> list[pl.DataFrame]:
        """Every live row (O(rows held): for snapshots and complete mode)."""
        return [self._live_rows(self._segs[sid]) for sid in self._order]

    @staticmethod
    def _live_rows(seg: _Segment) -> pl.DataFrame:
        if seg.alive == seg.rows.height:
            return seg.rows
        return seg.rows.filter(pl.Series(seg.live))

    def tidy(self) -> Moved:
        """Rewrite mostly-dead segments, merge small ones (see the module docstring)."""
        moved: list[tuple[U64, I64]] = []
        self._order = [sid for sid in self._order if self._segs[sid].alive or self._drop(sid)]
        due = [sid for sid in self._order if self._mostly_dead(self._segs[sid])]
        if due:
            self._order = [sid for sid in self._order if sid not in due]
            self._order.append(self._rewrite(due, moved))
        while len(self._order) > MAX_SEGMENTS:
            sizes = [self._segs[sid].alive for sid in self._order]
            i = min(range(len(sizes) - 1), key=lambda j: sizes[j] + sizes[j + 1])
            self._order[i : i + 2] = [self._rewrite(self._order[i : i + 2], moved)]
        if not moved:
            return Moved(np.empty(0, np.uint64), np.empty(0, np.int64))
        return Moved(np.concatenate([m[0] for m in moved]), np.concatenate([m[1] for m in moved]))

    @staticmethod
    def _mostly_dead(seg: _Segment) -> bool:
        dead = seg.rows.height - seg.alive
        return dead >= MIN_REWRITE and dead > seg.alive

    def _drop(self, sid: int) -> bool:
        """Forget an empty segment; False (for the filter that calls it)."""
        del self._segs[sid]
        return False

    def _rewrite(self, sids: list[int], moved: list[tuple[U64, I64]]) -> int:
        segs = [self._segs.pop(sid) for sid in sids]
        rows = pl.concat([self._live_rows(s) for s in segs])
        hashes = np.concatenate([s.hashes[s.live] for s in segs])
        self.live -= rows.height
        slots = self.append(rows, hashes)
        self._order.pop()
        moved.append((hashes, slots))
        return self._next - 1
