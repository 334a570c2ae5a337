"""The line structure of an NDJSON document, from vectorised passes over its bytes (private).

:meth:`streamkit.streaming.decode.JsonDecoder.decode_lines` parses a whole file in place
(one ``pyarrow.json`` call, no copy) only when :func:`scan_lines` shows that every
non-empty line is one ``{...}``; the common shape (every line ``{...}``, ``\\n`` endings,
no blank line) is recognised from the newline positions alone; any other document gets
the general scan (``\\r\\n`` endings, blank lines).

The bytes are read once, in cache-sized chunks (:func:`_survey`): newline positions, the
largest byte (ASCII or not) and the count of ``{``/``[`` come from the same chunk while it
is in cache, about half the cost of whole-buffer numpy passes on a 10 MB file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

_NEWLINE, _RETURN, _OPEN, _CLOSE = 10, 13, 123, 125
_CASE = 0x20
"""``[`` (0x5B) and ``{`` (0x7B) differ only in this bit."""
_CHUNK = 1 << 18
"""Bytes surveyed at once (fits in a core's L2 cache with its temporaries)."""


@dataclass(frozen=True)
class LineScan:
    """Non-empty lines of an NDJSON document, from one vectorised newline scan."""

    count: int
    """Non-empty lines (``\\r\\n`` endings stripped)."""
    longest: int
    """Bytes in the longest line."""
    objects: bool
    """Every non-empty line starts with ``{`` and ends with ``}`` (no surrounding blanks)."""
    bounds: npt.NDArray[np.int64] = dataclasses.field(
        default_factory=lambda: np.zeros(1, np.int64), compare=False
    )
    """Where each non-empty line starts, then the document's size: ``count + 1`` values."""
    ascii: bool = True
    """Every byte of the document is below 0x80 (so it is valid UTF-8)."""
    opens: int = 0
    """``{`` and ``[`` bytes in the document (inside strings too): a line is nested at most
    as deep as its count of them."""


def scan_lines(buf: pa.Buffer) -> LineScan:
    """Count and shape the lines of ``buf`` without copying it.

    When ``objects`` holds, a parse of the unwrapped document that yields ``count`` rows
    has exactly one row per line: the next line's ``{`` is only valid at the top level, so
    no line can continue the previous one's value.
    """
    arr = np.frombuffer(buf, dtype=np.uint8)
    if len(arr) == 0:
        return LineScan(0, 0, objects=True)
    newlines, top, opens = _survey(arr)
    scan = _plain(arr, newlines) or _general(arr, newlines)
    return dataclasses.replace(scan, ascii=top < 0x80, opens=opens)


def _survey(arr: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.intp], int, int]:
    """Newline positions, the largest byte and the count of ``{``/``[`` of ``arr``."""
    positions, top, opens = [], 0, 0
    flags = np.empty(min(len(arr), _CHUNK), dtype=bool)
    folded = np.empty(len(flags), dtype=np.uint8)
    for lo in range(0, len(arr), _CHUNK):
        chunk = arr[lo : lo + _CHUNK]
        eq, low = flags[: len(chunk)], folded[: len(chunk)]
        np.equal(chunk, _NEWLINE, out=eq)
        positions.append(np.flatnonzero(eq) + lo)
        top = max(top, int(chunk.max()))
        np.bitwise_or(chunk, _CASE, out=low)
        opens += int(np.count_nonzero(np.equal(low, _OPEN, out=eq)))
    none = np.zeros(0, dtype=np.intp)
    return np.concatenate(positions) if positions else none, top, opens


def _plain(arr: npt.NDArray[np.uint8], newlines: npt.NDArray[np.intp]) -> LineScan | None:
    """The scan of a document whose every line is ``{...}`` ending in ``\\n`` (the last
    one may lack it), or None for any other document. Equal to :func:`_general`'s result
    whenever it is not None: ``}`` before each newline rules out blank lines and ``\\r``."""
    size = len(arr)
    ends = newlines if arr[-1] == _NEWLINE else np.append(newlines, size)
    if arr[0] != _OPEN or not (arr[ends - 1] == _CLOSE).all():
        return None
    bounds = np.empty(len(ends) + 1, dtype=np.int64)
    bounds[0], bounds[-1] = 0, size
    bounds[1:-1] = ends[:-1] + 1
    if not (arr[bounds[1:-1]] == _OPEN).all():
        return None
    return LineScan(len(ends), int((ends - bounds[:-1]).max()), True, bounds)


def _general(arr: npt.NDArray[np.uint8], newlines: npt.NDArray[np.intp]) -> LineScan:
    """Any document: blank lines skipped, ``\\r\\n`` endings stripped."""
    ends = newlines if arr[-1] == _NEWLINE else np.append(newlines, len(arr))
    starts = np.concatenate(([0], ends[:-1] + 1))
    ends = ends - ((ends > starts) & (arr[np.maximum(ends - 1, 0)] == _RETURN))
    keep = ends > starts
    starts, ends = starts[keep], ends[keep]
    if len(starts) == 0:
        return LineScan(0, 0, objects=True)
    objects = bool((arr[starts] == _OPEN).all() and (arr[ends - 1] == _CLOSE).all())
    bounds = np.append(starts, len(arr)).astype(np.int64)
    return LineScan(len(starts), int((ends - starts).max()), objects, bounds)
