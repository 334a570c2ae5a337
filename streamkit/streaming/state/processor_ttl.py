"""The expiry index of ``transform_with_state_in_pandas``'s state variables with a TTL
(Spark's ``TTLState`` secondary index, in memory).

Spark's rules (``StateTTL``, ``ValueStateImplWithTTL``, ``ListStateImplWithTTL``,
``MapStateImplWithTTL``): an update at batch processing time P sets the expiry of what it
writes to P + TTL (a value; each list element put or appended; each map entry updated);
an entry is expired in a batch whose processing time is at or past its expiry, and
reads skip it from then on; at the end of every streaming batch the expired entries are
removed, so no checkpoint holds one that was expired in the batch it follows.

The index is a heap of candidates ``(expiry, seq, variable, key, map key)`` with lazy
deletion: the store checks each popped candidate against the expiry it really holds, so
a value updated since costs one stale entry, never a search. Finding what expired costs
O(entries expired + stale entries popped). The heap is rebuilt from the live entries
once it holds twice as many as the last rebuild (plus :data:`SLACK`), so stale entries
of values updated every batch under a long TTL cost O(1) amortised memory and time.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from typing import Any

NEVER = 2**63 - 1
"""The expiry of entries that never expire (restored from a checkpoint written before
their variable had a TTL)."""
SLACK = 1024

Candidate = tuple[int, str, tuple[Any, ...], Any]
"""``(expiry, variable, grouping key, map key or None)``."""


class ExpiryIndex:
    """Candidates for expiry, earliest first (see the module docstring). ``live``
    lists the (expiry, variable, key, map key) entries the store holds, for rebuilds."""

    def __init__(self, live: Callable[[], Iterable[Candidate]]) -> None:
        self._live = live
        self._heap: list[tuple[int, int, str, tuple[Any, ...], Any]] = []
        self._seq = 0
        self._base = 0

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, at: int, name: str, key: tuple[Any, ...], item: Any = None) -> None:
        """A candidate: ``name``'s entry of ``key`` (``item``: a map key) expires at ``at``."""
        if at >= NEVER:
            return
        heapq.heappush(self._heap, (at, self._seq, name, key, item))
        self._seq += 1
        if len(self._heap) > 2 * self._base + SLACK:
            self.rebuild()

    def next(self) -> int | None:
        """The earliest candidate's expiry (maybe stale), None: none."""
        return self._heap[0][0] if self._heap else None

    def head(self) -> Candidate | None:
        """The earliest candidate (maybe stale), None: none."""
        if not self._heap:
            return None
        at, _, name, key, item = self._heap[0]
        return at, name, key, item

    def pop(self) -> None:
        """Drops the earliest candidate (the store found it stale)."""
        heapq.heappop(self._heap)

    def due(self, now: int) -> Iterator[Candidate]:
        """Pops the candidates at or before ``now`` (the store checks each); one found
        twice is yielded twice."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, _, name, key, item = heapq.heappop(heap)
            yield at, name, key, item

    def rebuild(self) -> None:
        """The heap from the store's live entries (drops the stale ones)."""
        self._heap = []
        self._seq = 0
        for at, name, key, item in self._live():
            if at < NEVER:
                self._heap.append((at, self._seq, name, key, item))
                self._seq += 1
        heapq.heapify(self._heap)
        self._base = len(self._heap)
