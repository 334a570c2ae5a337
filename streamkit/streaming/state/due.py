"""Key hashes filed under a tick (an expiry, a session end), popped once a watermark passes
the tick, without looking at the entries still ahead of it.

Entries live in chunks, each sorted by tick. :meth:`Due.pop` cuts every chunk at the
watermark with a binary search: O(chunks * log + entries popped). A new chunk merges with
the one before it while that one is at most twice its size (a binary counter), so there
are O(log entries) chunks and each entry is re-sorted O(log entries) times over its life
(pops can shrink old chunks out of that order: beyond :data:`MAX_CHUNKS` the last merge).
An entry may be stale (its key since changed or left); the store checks what it pops.
"""

from __future__ import annotations

import numpy as np

from streamkit.streaming.state.hash_index import I64, U64

MAX_CHUNKS = 64


class Due:
    """(tick, key hash) entries ordered by tick (see the module docstring)."""

    def __init__(self) -> None:
        self._chunks: list[tuple[I64, U64]] = []

    def __len__(self) -> int:
        return sum(ticks.size for ticks, _ in self._chunks)

    def add(self, ticks: I64, hashes: U64) -> None:
        """File ``hashes`` under ``ticks`` (same length)."""
        if not ticks.size:
            return
        order = np.argsort(ticks, kind="stable")
        chunk = (ticks[order], hashes[order])
        while self._chunks and (
            self._chunks[-1][0].size <= 2 * chunk[0].size or len(self._chunks) >= MAX_CHUNKS
        ):
            prev = self._chunks.pop()
            both = np.concatenate([prev[0], chunk[0]])
            order = np.argsort(both, kind="stable")
            chunk = (both[order], np.concatenate([prev[1], chunk[1]])[order])
        self._chunks.append(chunk)

    def pop(self, watermark: int) -> U64:
        """Remove the entries with tick <= ``watermark``; returns their hashes, distinct."""
        due: list[U64] = []
        kept: list[tuple[I64, U64]] = []
        for ticks, hashes in self._chunks:
            cut = int(np.searchsorted(ticks, watermark, side="right"))
            if cut:
                due.append(hashes[:cut])
            if cut < ticks.size:
                kept.append((ticks[cut:], hashes[cut:]))
        self._chunks = kept
        return np.unique(np.concatenate(due)) if due else np.empty(0, np.uint64)

    def clear(self) -> None:
        """Forget every entry."""
        self._chunks = []
