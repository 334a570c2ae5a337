"""What a file stream has read: processed file names at or after an mtime horizon.

The offsets of :class:`~streamkit.streaming.sources.files.FileStreamSource` are one string
(partition ``"files"``) in one of two forms:

- ``{"files": {name: mtime_ns, ...}, "horizon": mtime_ns}`` (keys sorted, compact): the
  files processed whose mtime is at or after the horizon. Every file older than the horizon
  counts as done: it was read and forgotten, or it showed up too late and is ignored.
  ``horizon`` is null until a first file was read; an mtime is null for a name carried over
  from the list form, until a listing shows the file again.
- ``[name, ...]`` (sorted): every file processed, no horizon. Written when no
  ``max_file_age`` is set; read from older checkpoints.
"""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache

from streamkit.durations import parse_duration_ns
from streamkit.errors import ConfigError, DurationError


@dataclass(frozen=True, order=True)
class ListedFile:
    """One visible file of a listing; sorts in arrival order (mtime, then name)."""

    mtime_ns: int
    name: str
    """Path relative to the source's root, ``/``-separated."""


@dataclass(frozen=True)
class Position:
    """Parsed offsets (read-only: instances are shared through a parse cache)."""

    horizon: int | None
    """Files with an mtime before this are done (read and forgotten, or ignored)."""
    files: Mapping[str, int | None]
    """Processed files at or after the horizon: name -> mtime_ns (None: not known yet)."""

    def covers(self, name: str, mtime_ns: int | None) -> bool:
        """True when the file is done at this position (read, or older than the horizon)."""
        if name in self.files:
            return True
        return self.horizon is not None and mtime_ns is not None and mtime_ns < self.horizon

    def covers_all(self, other: Position) -> bool:
        """True when every file of ``other`` is done here."""
        return all(self.covers(name, mtime) for name, mtime in other.files.items())


EMPTY = Position(None, {})


def max_age_ns(value: str | timedelta | float | None) -> int | None:
    """``max_file_age`` in nanoseconds: a duration string, a timedelta or seconds (> 0)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, timedelta, int, float)):
        raise ConfigError(
            f"max_file_age must be a duration ('7 days'), a timedelta or seconds, got {value!r}"
        )
    if isinstance(value, (str, timedelta)):
        try:
            return parse_duration_ns(value)
        except DurationError as exc:
            raise ConfigError(f"max_file_age: {exc}") from exc
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"max_file_age must be a positive number of seconds, got {value!r}")
    return max(1, int(value * 1_000_000_000))


def encode(position: Position, *, legacy: bool) -> str:
    """Offsets text for ``position``: the bare sorted list if ``legacy`` and no horizon."""
    if legacy and position.horizon is None:
        return json.dumps(sorted(position.files), separators=(",", ":"))
    text = {"files": position.files, "horizon": position.horizon}
    return json.dumps(text, separators=(",", ":"), sort_keys=True)


def decode(text: str | None) -> Position:
    """The position in offsets text (None: nothing read yet); raises ConfigError if invalid."""
    return EMPTY if text is None else _parse(text)


@lru_cache(maxsize=4)  # reached() parses the same two strings on every poll
def _parse(text: str) -> Position:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"file stream offsets are not JSON: {exc}") from exc
    if isinstance(value, list) and all(isinstance(n, str) for n in value):
        return Position(None, dict.fromkeys(value))
    if isinstance(value, dict) and set(value) == {"files", "horizon"}:
        horizon, files = value["horizon"], value["files"]
        valid_horizon = horizon is None or type(horizon) is int
        if valid_horizon and isinstance(files, dict) and all(_mtime(m) for m in files.values()):
            return Position(horizon, files)
    raise ConfigError(
        'file stream offsets must be a JSON list of names or {"files": {name: mtime_ns}, '
        '"horizon": mtime_ns}'
    )


def _mtime(value: object) -> bool:
    return value is None or type(value) is int


class SeenFiles:
    """The files a source has processed, forgetting those behind the horizon.

    The horizon is ``newest - max_age`` where ``newest`` is the greatest mtime of a
    processed file; it only moves forward. Without ``max_age`` it stays where the offsets
    put it (None for a fresh start) and every name is kept.
    """

    def __init__(self, max_age_ns: int | None, start: Position = EMPTY) -> None:
        self._max_age = max_age_ns
        self._horizon = start.horizon
        self._files: dict[str, int | None] = dict(start.files)
        self._unknown = {n for n, m in self._files.items() if m is None}
        self._heap = [(m, n) for n, m in self._files.items() if m is not None]
        heapq.heapify(self._heap)
        self._newest = max((m for m, _ in self._heap), default=None)
        self._advance()

    @property
    def horizon(self) -> int | None:
        """Files with an mtime before this are done (None: no horizon yet)."""
        return self._horizon

    def __len__(self) -> int:
        return len(self._files)

    def unread(self, listed: Iterable[ListedFile]) -> list[ListedFile]:
        """The listed files not processed and not behind the horizon, in listing order.

        Also learns the mtime of names carried over from list-form offsets."""
        horizon, files, out = self._horizon, self._files, []
        for f in listed:
            if f.name in files:
                if self._unknown and f.name in self._unknown:
                    self._unknown.discard(f.name)
                    files[f.name] = f.mtime_ns
                    heapq.heappush(self._heap, (f.mtime_ns, f.name))
            elif horizon is None or f.mtime_ns >= horizon:
                out.append(f)
        return out

    def add(self, processed: Iterable[ListedFile]) -> None:
        """Record files as processed, then move the horizon and forget files behind it."""
        for f in processed:
            self._files[f.name] = f.mtime_ns
            self._unknown.discard(f.name)
            heapq.heappush(self._heap, (f.mtime_ns, f.name))
            if self._newest is None or f.mtime_ns > self._newest:
                self._newest = f.mtime_ns
        self._advance()

    def _advance(self) -> None:
        if self._max_age is None or self._newest is None:
            return
        horizon = self._newest - self._max_age
        if self._horizon is not None and horizon <= self._horizon:
            return
        self._horizon = horizon
        while self._heap and self._heap[0][0] < horizon:
            mtime, name = heapq.heappop(self._heap)
            if self._files.get(name) == mtime:
                del self._files[name]

    def position(self, plus: Iterable[ListedFile] = ()) -> Position:
        """A snapshot, with ``plus`` (unread files at or after the horizon) added."""
        files = dict(self._files)
        files.update((f.name, f.mtime_ns) for f in plus)
        return Position(self._horizon, files)

    def encode(self, plus: Sequence[ListedFile] = ()) -> str:
        """Offsets text: list form without ``max_age`` and horizon, else the object form."""
        legacy = self._max_age is None
        if plus:
            return encode(self.position(plus), legacy=legacy)
        return encode(Position(self._horizon, self._files), legacy=legacy)  # no copy
