"""The cheap pre-check every JSON record passes before pyarrow's parser sees it (private).

pyarrow's JSON reader recurses once per nesting level and kills the process (SIGSEGV) on
a record nested some thousands of levels deep, and it copies invalid UTF-8 inside strings
into string columns, where it breaks every later reader (Parquet, DuckDB, pandas). So
schema inference and decoding only ever parse records that are valid UTF-8 and nested at
most ``max_depth`` levels (the framer bounds their size); :func:`screen` names the others
with a reason, and they become dead letters.

Both checks run over the whole batch buffer at C speed, with no Python loop per byte:

- UTF-8: an ASCII test of the buffer (a numpy max), else Arrow's validation of it as a string array;
  only when that fails is each record holding a byte >= 0x80 decoded on its own.
- Depth: a record has depth <= its count of ``{``/``[``. One count over the buffer
  settles most batches (no record can hold more than the total less the other records'
  least); else the brackets per record are counted with one numpy comparison and a
  ``searchsorted``, and only records with more than ``max_depth`` of them are measured
  exactly (brackets inside strings ignored), in bounded chunks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    import numpy.typing as npt

MAX_DEPTH = 64
"""Default bound on nesting (``{"a":1}`` has depth 1, ``[[1]]`` depth 2)."""
_CHUNK_BYTES = 1 << 22
"""Bytes measured at once by the exact depth scan (bounds its temporary arrays)."""
_QUOTE, _BACKSLASH = 34, 92
_OPENS, _CLOSES = (123, 91), (125, 93)
_CASE = 0x20
"""The bit that tells ``[`` (0x5B) from ``{`` (0x7B): ``b | 0x20 == 0x7B`` holds for these two."""


def screen(
    data: bytes | pa.Buffer,
    bounds: npt.NDArray[np.int64],
    max_depth: int,
    *,
    prefix: int = 0,
    levels: int = 0,
    least_opens: int = 0,
) -> list[tuple[int, str]]:
    """``(k, reason)`` for each segment ``data[bounds[k]:bounds[k + 1]]`` that is not valid
    UTF-8 or whose payload is nested deeper than ``max_depth``, in segment order (one
    reason each, UTF-8 first).

    Each segment may be framed: ``prefix`` bytes before the payload (not counted in
    offsets) and ``levels`` of nesting around it (not counted in depth). Guarantee: a
    segment not named here is valid UTF-8 and no deeper than ``max_depth + levels``
    outside JSON strings. ``least_opens``: every segment is known to hold at least this
    many ``{``/``[`` (a framed record, its wrapper's; a line starting with ``{``, one); it
    only lets a quick count settle the depth, never changes the result.
    """
    arr = np.frombuffer(data, dtype=np.uint8)
    found = dict(_invalid_utf8(data, arr, bounds, prefix)) if arr.max(initial=0) >= 0x80 else {}
    for k in _too_deep(arr, bounds, max_depth + levels, least_opens).tolist():
        found.setdefault(k, f"nested deeper than {max_depth} levels")
    return sorted(found.items())


def _invalid_utf8(
    data: bytes | pa.Buffer,
    arr: npt.NDArray[np.uint8],
    bounds: npt.NDArray[np.int64],
    prefix: int,
) -> list[tuple[int, str]]:
    if _valid_utf8(data, bounds):
        return []
    high = np.flatnonzero(arr >= 0x80)
    candidates = np.unique(np.searchsorted(bounds, high, side="right") - 1)
    out = []
    for k in candidates.tolist():
        segment = arr[int(bounds[k]) : int(bounds[k + 1])].tobytes()
        try:
            segment.decode("utf-8")
        except UnicodeDecodeError as exc:
            byte = segment[exc.start]
            out.append((k, f"invalid UTF-8: byte 0x{byte:02x} at offset {exc.start - prefix}"))
    return out


def _valid_utf8(data: bytes | pa.Buffer, bounds: npt.NDArray[np.int64]) -> bool:
    offsets = pa.array(bounds, pa.int64()).buffers()[1]
    buffer = data if isinstance(data, pa.Buffer) else pa.py_buffer(data)
    strings = pa.Array.from_buffers(pa.large_string(), len(bounds) - 1, [None, offsets, buffer])
    try:
        strings.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _too_deep(
    arr: npt.NDArray[np.uint8], bounds: npt.NDArray[np.int64], max_depth: int, least: int = 0
) -> npt.NDArray[np.int64]:
    """Segments nested deeper than ``max_depth`` (exactly, outside strings); every segment
    holds at least ``least`` opening brackets.

    A segment's depth is at most its count of ``{``/``[``, which is at most the total
    count less ``least`` for each other segment: when that is within ``max_depth``, one
    counting pass settles it (the common case: flat records, one ``{`` each)."""
    total = np.count_nonzero((arr | _CASE) == _OPENS[0])  # "[" | 0x20 == "{"
    if total - least * max(len(bounds) - 2, 0) <= max_depth:
        return np.zeros(0, dtype=np.int64)
    opens = np.flatnonzero((arr == _OPENS[0]) | (arr == _OPENS[1]))
    counts = np.diff(np.searchsorted(opens, bounds))
    suspects = np.flatnonzero(counts > max_depth)
    deep: list[int] = []
    for chunk in _chunks(suspects, bounds):
        depths = _depths(arr, bounds, chunk)
        deep += chunk[depths > max_depth].tolist()
    return np.asarray(deep, dtype=np.int64)


def _chunks(
    segments: npt.NDArray[np.int64], bounds: npt.NDArray[np.int64]
) -> list[npt.NDArray[np.int64]]:
    """``segments`` in groups of about :data:`_CHUNK_BYTES` (at least one segment each)."""
    if len(segments) == 0:
        return []
    sizes = np.cumsum(bounds[segments + 1] - bounds[segments])
    groups = (sizes - 1) // _CHUNK_BYTES
    cuts = np.flatnonzero(np.diff(groups)) + 1
    return np.split(segments, cuts)


def _depths(
    arr: npt.NDArray[np.uint8], bounds: npt.NDArray[np.int64], segments: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """Maximum bracket depth of each segment, ignoring brackets inside JSON strings."""
    pieces = [arr[int(bounds[k]) : int(bounds[k + 1])] for k in segments.tolist()]
    lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
    text = np.concatenate(pieces)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    position = np.arange(len(text), dtype=np.int64)
    owner = np.repeat(np.arange(len(pieces)), lengths)
    # a quote is real when an even number of backslashes precede it (within its segment)
    last_plain = np.maximum.accumulate(np.where(text == _BACKSLASH, starts[owner] - 1, position))
    escapes = position - 1 - np.concatenate(([-1], last_plain[:-1]))
    escapes = np.minimum(escapes, position - starts[owner])
    quotes = np.cumsum((text == _QUOTE) & (escapes % 2 == 0))
    inside = (quotes - _before(quotes, starts)[owner]) % 2 == 1
    delta = np.isin(text, _OPENS).astype(np.int64) - np.isin(text, _CLOSES)
    depth = np.cumsum(np.where(inside, 0, delta))
    depth -= _before(depth, starts)[owner]
    return np.maximum.reduceat(depth, starts)


def _before(running: npt.NDArray[np.int64], starts: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The running total just before each segment starts."""
    return np.where(starts > 0, running[np.maximum(starts - 1, 0)], 0)
