"""NDJSON mechanics behind :class:`streamkit.streaming.decode.JsonDecoder` (private).

A micro-batch is framed as ONE newline-delimited buffer, each payload ``P`` wrapped as the
line ``{"v":P}``, and parsed by ``pyarrow.json`` in one call (threaded for large batches).
The wrapper makes the framing exact: a line can only end at the top level (it ends with
the wrapper's ``}``), so a truncated payload cannot swallow the next line, an empty one is
an error rather than a missing row, and ``rows == records`` proves one row per record.
Non-object payloads fail as a type change of ``v``.

When the parse fails, :func:`bisect` cuts the records into pieces until every failing
record stands alone: O(n) when nothing is bad, O(n log n) at worst; good records are kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TypeAlias

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from streamkit.streaming import _guard as guard
from streamkit.streaming import _json_time as jt
from streamkit.streaming._records import BinaryColumn

Reject: TypeAlias = tuple[int, str]
"""(record number in the batch, reason)."""
ParseResult: TypeAlias = "pa.Table | str"
"""A table with one row per record, or why the records could not be parsed."""

_OPEN, _CLOSE = b'{"v":', b"}"
_NEWLINE = 10
CHANGED = re.compile(r"Column\((?P<path>[^)]*)\) changed from (?P<old>\w+) to (?P<new>\w+)")
_CONVERT = re.compile(
    r"Failed to convert JSON to (?P<type>.+?), couldn't parse:(?P<value>.*)", re.S
)
_DECIMAL = re.compile(r"decimal(?:32|64|128|256)?", re.I)
_CONVERT_PREFIX = re.compile(r"^Failed to convert JSON to [^:]+: ")
_ROW = re.compile(r" in row (\d+)$")
_THREADED_BYTES = 1 << 20
"""Buffers larger than this are parsed with threads (in blocks); smaller ones as one block."""


@dataclass(frozen=True, eq=False)
class Frame:
    """Wrapped records as one NDJSON buffer: framed record k is the line
    ``data[bounds[k]:bounds[k + 1]]`` and was record ``index[k]`` of the batch."""

    data: pa.Buffer
    bounds: npt.NDArray[np.int64]
    index: npt.NDArray[np.int64]
    block_size: int

    @property
    def size(self) -> int:
        """Number of framed records."""
        return len(self.index)

    def buffer(self, lo: int, hi: int) -> pa.Buffer:
        """Zero-copy slice holding framed records ``lo..hi-1``."""
        start = int(self.bounds[lo])
        return self.data.slice(start, int(self.bounds[hi]) - start)


def frame_payloads(
    payloads: Sequence[bytes], max_bytes: int, max_depth: int = guard.MAX_DEPTH
) -> tuple[Frame, list[Reject]]:
    """Frame the payloads, rejecting up front (vectorised checks) empty and oversize ones,
    and those :func:`~streamkit.streaming._guard.screen` refuses (invalid UTF-8, nested
    deeper than ``max_depth``). Guarantee: the frame only holds records that passed.

    Payloads held as a :class:`~streamkit.streaming._records.BinaryColumn` are framed
    from the Arrow column by Arrow kernels (no Python object per record), to the same
    bytes as a list of ``bytes`` is.

    A raw newline can only be whitespace in valid JSON (inside a string it is invalid), so
    newlines become tabs: whitespace outside strings, still invalid inside them. Lengths
    do not change and every record stays one line.
    """
    kept: Sequence[bytes] | pa.Array
    if isinstance(payloads, BinaryColumn):
        kept = payloads.array
        lengths = _column_lengths(kept)
    else:
        kept = payloads
        lengths = np.fromiter(map(len, payloads), dtype=np.int64, count=len(payloads))
    n = len(kept)
    bad = (lengths == 0) | (lengths > max_bytes)
    rejects: list[Reject] = []
    keep = np.arange(n, dtype=np.int64)
    if bad.any():
        for i in np.flatnonzero(bad).tolist():
            size = int(lengths[i])
            rejects.append(
                (i, "empty record" if size == 0 else f"oversize: {size} bytes > {max_bytes}")
            )
        keep = np.flatnonzero(~bad).astype(np.int64)
        kept = _pick(kept, keep)
        lengths = lengths[keep]
    data, bounds = _join(kept, lengths)
    screened = guard.screen(data, bounds, max_depth, prefix=len(_OPEN), levels=1, least_opens=1)
    if screened:
        rejects += [(int(keep[k]), reason) for k, reason in screened]
        passed = np.ones(len(kept), dtype=bool)
        passed[[k for k, _ in screened]] = False
        kept = _pick(kept, np.flatnonzero(passed))
        keep, lengths = keep[passed], lengths[passed]
        data, bounds = _join(kept, lengths)
    longest = int(lengths.max()) if len(lengths) else 0
    block = max(1 << 20, longest + 16)
    return Frame(data, bounds, keep, block), rejects


def as_lines(payloads: Sequence[bytes], max_bytes: int) -> pa.Buffer | None:
    """The payloads as an NDJSON document, one line each (``payload + "\\n"``), when no
    payload is empty, longer than ``max_bytes`` or holds a newline; else None (such a
    batch goes through :func:`frame_payloads`). Guarantee: when not None, line k of the
    document is payload k, byte for byte."""
    n = len(payloads)
    if isinstance(payloads, BinaryColumn):
        column = payloads.array
        if column.null_count:
            return None
        lengths = _column_lengths(column)
    else:
        lengths = np.fromiter(map(len, payloads), dtype=np.int64, count=n)
    if n == 0 or lengths.min() == 0 or lengths.max() > max_bytes:
        return None
    if isinstance(payloads, BinaryColumn):
        lines = pc.binary_join_element_wise(
            column, pa.scalar(b"\n", column.type), pa.scalar(b"", column.type)
        )
        data = _framed_data(lines, int(lengths.sum()) + n)
    else:
        data = pa.py_buffer(b"\n".join([*payloads, b""]))
    if np.count_nonzero(np.frombuffer(data, dtype=np.uint8) == _NEWLINE) != n:
        return None
    return data


def _column_lengths(column: pa.Array) -> npt.NDArray[np.int64]:
    """Byte length of each payload (a null counts as empty)."""
    sizes = pc.binary_length(column).fill_null(0)
    return np.asarray(sizes.to_numpy(zero_copy_only=False), dtype=np.int64)


def _pick(
    payloads: Sequence[bytes] | pa.Array, index: npt.NDArray[np.int64]
) -> Sequence[bytes] | pa.Array:
    """The payloads at ``index`` (ascending)."""
    if isinstance(payloads, pa.Array):
        return payloads.take(pa.array(index, pa.int64()))
    return [payloads[i] for i in index.tolist()]


def _join(
    payloads: Sequence[bytes] | pa.Array, lengths: npt.NDArray[np.int64]
) -> tuple[pa.Buffer, npt.NDArray[np.int64]]:
    """The framed buffer and its record bounds."""
    bounds = np.zeros(len(payloads) + 1, dtype=np.int64)
    np.cumsum(lengths + len(_OPEN) + len(_CLOSE) + 1, out=bounds[1:])
    if isinstance(payloads, pa.Array):
        return _wrap_column(payloads, int(bounds[-1])), bounds
    data = _wrap(payloads)
    if data.count(b"\n") != len(payloads):
        data = _wrap([p.replace(b"\n", b"\t") for p in payloads])
    return pa.py_buffer(data), bounds


def _wrap(payloads: Sequence[bytes]) -> bytes:
    if not payloads:
        return b""
    return b"".join((_OPEN, (_CLOSE + b"\n" + _OPEN).join(payloads), _CLOSE, b"\n"))


def _wrap_column(payloads: pa.Array, size: int) -> pa.Buffer:
    """:func:`_wrap` of a binary column (``size``: the framed bytes), by Arrow kernels."""
    if not len(payloads):
        return pa.py_buffer(b"")
    framed = _wrap_kernel(payloads)
    data = _framed_data(framed, size)
    if np.count_nonzero(np.frombuffer(data, dtype=np.uint8) == 10) != len(payloads):
        tabs = pc.replace_substring(payloads, pattern=b"\n", replacement=b"\t")
        data = _framed_data(_wrap_kernel(tabs), size)
    return data


def _wrap_kernel(payloads: pa.Array) -> pa.Array:
    kind = payloads.type
    result: pa.Array = pc.binary_join_element_wise(
        pa.scalar(_OPEN, kind), payloads, pa.scalar(_CLOSE + b"\n", kind), pa.scalar(b"", kind)
    )
    return result


def _framed_data(framed: pa.Array, size: int) -> pa.Buffer:
    """The bytes of a freshly built binary array (its values, one after the other)."""
    offsets = np.frombuffer(framed.buffers()[1], dtype=_OFFSET[framed.type])
    start = int(offsets[framed.offset])
    data: pa.Buffer = framed.buffers()[2].slice(start, size)
    assert int(offsets[framed.offset + len(framed)]) - start == size
    return data


_OFFSET = {pa.binary(): np.int32, pa.large_binary(): np.int64}


def bisect(
    parse: Callable[[int, int], ParseResult],
    size: int,
    whole: ParseResult,
    split: Callable[[int, int, str], list[int]] | None = None,
) -> tuple[list[tuple[int, int, pa.Table]], list[Reject]]:
    """Isolate the records ``parse`` rejects. ``whole`` is the result for all records.

    A failing range ``lo..hi`` is cut at ``split(lo, hi, message)`` (inner cut points;
    default: the midpoint) and each piece parsed again, down to single records, so good
    records are kept and a bad cut choice costs time, never correctness. Returns the parsed
    pieces ``(lo, hi, table)`` in record order and ``(k, reason)`` for each record k that
    fails on its own.
    """
    good: list[tuple[int, int, pa.Table]] = []
    bad: list[Reject] = []
    stack: list[tuple[int, int, ParseResult | None]] = [(0, size, whole)]
    while stack:
        lo, hi, result = stack.pop()
        if result is None:
            result = parse(lo, hi)
        if isinstance(result, pa.Table):
            good.append((lo, hi, result))
        elif hi - lo == 1:
            bad.append((lo, result))
        elif hi > lo:
            cuts = [c for c in (split(lo, hi, result) if split else []) if lo < c < hi]
            edges = [lo, *(sorted(set(cuts)) or [(lo + hi) // 2]), hi]
            stack += reversed([(a, b, None) for a, b in pairwise(edges)])
    return good, bad


def splitter(frame: Frame) -> Callable[[int, int, str], list[int]]:
    """Cut points for a failed range: into pieces read as one block each; within one
    block, around the row the parser names (about three small parses per bad record);
    else (no row named) the midpoint."""

    def split(lo: int, hi: int, message: str) -> list[int]:
        nbytes = int(frame.bounds[hi] - frame.bounds[lo])
        if nbytes > _THREADED_BYTES:
            targets = np.arange(1, nbytes // _THREADED_BYTES + 1) * _THREADED_BYTES
            found = np.searchsorted(frame.bounds, frame.bounds[lo] + targets, side="right") - 1
            return [int(c) for c in found.tolist()]
        match = _ROW.search(message)
        return [lo + int(match[1]), lo + int(match[1]) + 1] if match else []

    return split


@dataclass(frozen=True)
class Failed:
    """Why a parse failed: the parser's own message, or our check of its result."""

    message: str
    from_parser: bool


def read_json(
    buf: pa.Buffer, schema: pa.Schema | None, block: int, threads: bool = True
) -> pa.Table:
    """One pyarrow parse: a large ``buf`` in blocks (in parallel when ``threads``), a small
    one as a single block."""
    large = buf.size > _THREADED_BYTES
    return pajson.read_json(
        pa.BufferReader(buf),
        read_options=pajson.ReadOptions(
            use_threads=threads and large, block_size=block if large else max(block, buf.size + 1)
        ),
        parse_options=pajson.ParseOptions(
            explicit_schema=schema,
            unexpected_field_behavior="ignore" if schema is not None else "infer",
        ),
    )


def try_read(
    buf: pa.Buffer, schema: pa.Schema | None, rows: int, block: int, threads: bool = True
) -> pa.Table | Failed:
    """The records of ``buf`` (unwrapped) if they are ``rows`` JSON objects, else why not."""
    wrapped = None if schema is None else pa.schema([pa.field("v", pa.struct(list(schema)))])
    try:
        table = read_json(buf, wrapped, block, threads)
    except pa.ArrowInvalid as exc:
        return Failed(str(exc), from_parser=True)
    except UnicodeDecodeError:
        return Failed("malformed JSON (invalid UTF-8 near the error)", from_parser=False)
    if table.num_rows != rows:
        return Failed(f"{table.num_rows} JSON values in {rows} records", from_parser=False)
    column = table.column("v")
    if not pa.types.is_struct(column.type) or column.null_count:
        kind = "null" if column.null_count else _json_kind(column.type)
        return Failed(f"not a JSON object (got {kind})", from_parser=False)
    return pa.Table.from_batches(
        [pa.RecordBatch.from_struct_array(chunk) for chunk in column.chunks],
        schema=pa.schema(list(column.type)),
    )


def _json_kind(dtype: pa.DataType) -> str:
    if pa.types.is_list(dtype):
        return "array"
    if pa.types.is_boolean(dtype):
        return "boolean"
    if pa.types.is_integer(dtype) or pa.types.is_floating(dtype):
        return "number"
    return "string"


def explain(
    failed: Failed, schema: pa.Schema | None, buf: pa.Buffer, block: int, declared: pa.Schema | None
) -> str:
    """The reason one framed record failed, naming the field and types where possible."""
    if not failed.from_parser:
        return failed.message
    payload = buf.to_pybytes()[len(_OPEN) : -len(_CLOSE) - 1]
    if not payload.strip():
        return "empty record (only whitespace)"
    return describe_failure(failed.message, schema, buf, block, declared or schema)


def describe_failure(
    message: str, schema: pa.Schema | None, buf: pa.Buffer, block: int, declared: pa.Schema | None
) -> str:
    """A parser message as a reason; ``schema`` is what the parse used, ``declared`` names types."""
    if match := CHANGED.search(message):
        path = [p for p in match["path"].split("/") if p][1:]
        if not path:
            return f"not a JSON object (got {match['new']})"
        expected = _type_at(declared, path) if declared is not None else None
        want = f"expected {_show(expected)}" if expected is not None else "unexpected type"
        return f"field {'.'.join(path)!r}: {want}, got JSON {match['new']}"
    if (match := _CONVERT.search(message)) and schema is not None:
        field = _failing_field(schema, match["type"], buf, block)
        target = match["type"]
        if field is not None and declared is not None and field in declared.names:
            target = _show(declared.field(field).type)
        where = f"field {field!r}: " if field else ""
        return f"{where}cannot convert {match['value'].strip()!r} to {target}"
    if (match := _DECIMAL.search(message)) and schema is not None:
        field = _failing_field(schema, match[0].lower(), buf, block)
        target = match[0].lower()
        if field is not None and declared is not None and field in declared.names:
            target = _show(declared.field(field).type)
        where = f"field {field!r}: " if field else ""
        detail = _CONVERT_PREFIX.sub("", clean(message))
        return f"{where}cannot convert to {target}: {detail} (decimals are never rounded)"
    return f"malformed JSON: {clean(message)}"


def clean(message: str) -> str:
    """A parser message without pyarrow's prefix and row suffix."""
    message = message.removeprefix("JSON parse error: ")
    return re.sub(r"\.? in row \d+$", "", message).strip()


def _show(dtype: pa.DataType) -> str:
    if pa.types.is_timestamp(dtype):
        return f"{dtype} (an ISO-8601 string or an integer epoch in {dtype.unit})"
    if pa.types.is_time(dtype):
        return f"{dtype} ({jt.expected(dtype)})"
    return str(dtype)


def _type_at(schema: pa.Schema, path: list[str]) -> pa.DataType | None:
    fields: pa.Schema | pa.StructType = schema
    for depth, name in enumerate(path):
        index = fields.get_field_index(name)
        if index < 0:
            return None
        dtype = fields.field(index).type
        if depth == len(path) - 1:
            return dtype
        if not pa.types.is_struct(dtype):
            return None
        fields = dtype
    return None


def _failing_field(schema: pa.Schema, type_name: str, buf: pa.Buffer, block: int) -> str | None:
    """The top-level field whose value does not convert (one small parse per candidate)."""
    for field in schema:
        if type_name in str(field.type) and isinstance(
            try_read(buf, pa.schema([field]), 1, block), Failed
        ):
            return str(field.name)
    return None
