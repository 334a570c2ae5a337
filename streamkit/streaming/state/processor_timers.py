"""The timers of ``transform_with_state_in_pandas``: per grouping key, a set of times (ms).

A heap with lazy deletion (an entry counts while its key still holds that timer) beside
the sets, so :meth:`KeyTimers.due` costs O(timers due + stale entries popped), never a
scan of every key, and returns each timer held at most once; a deleted timer never fires.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, KeysView

from streamkit.streaming.state.processor_vars import Key


class KeyTimers:
    """Timers per key (module docstring)."""

    def __init__(self) -> None:
        self._by_key: dict[Key, set[int]] = {}
        self._heap: list[tuple[int, int, Key]] = []
        self._seq = 0

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def __iter__(self) -> Iterator[Key]:
        return iter(self._by_key)

    def keys(self) -> KeysView[Key]:
        """The keys holding a timer."""
        return self._by_key.keys()

    def of(self, key: Key) -> list[int]:
        """The key's timers, earliest first."""
        return sorted(self._by_key.get(key, ()))

    def add(self, key: Key, at: int) -> bool:
        """A timer for ``key`` at ``at`` ms; False (a no-op) if it exists."""
        held = self._by_key.setdefault(key, set())
        if at in held:
            return False
        held.add(at)
        heapq.heappush(self._heap, (at, self._seq, key))
        self._seq += 1
        return True

    def delete(self, key: Key, at: int) -> bool:
        """Drop ``key``'s timer at ``at``; False (a no-op) if there is none."""
        held = self._by_key.get(key)
        if held is None or at not in held:
            return False
        held.discard(at)
        if not held:
            del self._by_key[key]
        return True

    def has(self, key: Key, at: int) -> bool:
        """Whether ``key`` holds a timer at ``at``."""
        return at in self._by_key.get(key, ())

    def due(self, threshold: int) -> list[tuple[Key, int]]:
        """Timers at or before ``threshold`` (Spark's rule), earliest first; their heap
        entries are consumed (the caller fires, then deletes each)."""
        out: list[tuple[Key, int]] = []
        seen: set[tuple[Key, int]] = set()
        while self._heap and self._heap[0][0] <= threshold:
            at, _, key = heapq.heappop(self._heap)
            if self.has(key, at) and (key, at) not in seen:
                seen.add((key, at))
                out.append((key, at))
        return out

    def next(self) -> int | None:
        """The earliest timer held (stale heap entries are dropped on the way)."""
        while self._heap:
            at, _, key = self._heap[0]
            if self.has(key, at):
                return at
            heapq.heappop(self._heap)
        return None
