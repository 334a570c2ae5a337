"""The exchange record: partial-state rows of one source batch for one exchange partition.

A chunk is one Arrow IPC *stream* (schema message, record batches, end-of-stream marker)
whose schema metadata holds, under the key ``b"streamkit.chunk"``, a JSON header
(:class:`ChunkHeader`): which query, which source shard, the source range the batch
covers (after ``first``, up to and including ``last``), the part number when the batch's
rows for this partition were split to fit a Kinesis record, the source shard's event-time
maximum so far and whether it reached its end; for a query that joins two streams, also
which stream the shard belongs to (``stream``). An *end marker* (:attr:`ChunkHeader.is_end`:
``ended``, ``first == last``, no rows) covers no records: it tells an aggregation task that
the shard ended after the range it applied last (a shard whose last read held no records).
A *start marker* (:attr:`ChunkHeader.is_start`: not ``ended``, ``first == last``, no rows)
covers no records either: a source task started reading the shard, so an aggregation task
has heard of it and waits for it. An *idle marker* (:attr:`ChunkHeader.is_idle`: ``idle``,
not ``ended``, ``first == last``, no rows) covers no records: the shard's reader read
everything up to ``last`` and found nothing newer at the shard's tip for ``idle_timeout``,
so the shard stops holding the fleet watermark back until its next chunk. Only the reader
can tell a shard with nothing to read from one whose reader is slow, dead or stalled; an
aggregation task never takes silence for idleness. ``idle`` is written only when true
(other chunks are the bytes they were).
The header also carries ``"crc32"``: a
CRC-32 over the header's other fields (canonical JSON) and the record batches' IPC
messages, so a garbled value is caught, not applied. Version 2 (written now) may carry
the column ``__late_rows`` (:mod:`~streamkit.fleet.late_rows`); version 1 chunks are still
read. :func:`decode_chunk` refuses anything else (damaged, cut, foreign bytes, another
version) with a :class:`ChunkError` naming what it found; it never lets a decoder
exception through.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import asdict, dataclass, replace
from typing import Any

import polars as pl
import pyarrow as pa

from streamkit.errors import StreamkitError

HEADER_KEY = b"streamkit.chunk"
VERSION = 2
"""The version written. 2: rows may carry ``__late_rows`` (:mod:`~streamkit.fleet.late_rows`),
which a version-1 reader would take for a state column."""
READABLE = (1, 2)
"""Versions read: a version-1 chunk (left on the exchange by the fleet before an upgrade)
is applied as before, its late rows counted by ``__n``."""
STREAMS = ("left", "right")
"""The values of :attr:`ChunkHeader.stream` when it is written (a join's sides)."""
DEFAULT_BUDGET = 900 * 1024
"""Largest encoded chunk, in bytes (a Kinesis record holds at most 1 MiB)."""


class ChunkError(StreamkitError):
    """Bytes read from the exchange are not a chunk this version can apply."""


@dataclass(frozen=True)
class ChunkHeader:
    """The header of one chunk (FLEET.md point 5)."""

    query: str
    source: str
    """Source shard id."""
    first: str | None
    """Checkpoint the batch started after (None: the shard's start)."""
    last: str
    """Range end, inclusive: a sequence number string."""
    part: int
    parts: int
    max_event: int | None
    """The source shard's largest event time so far (watermark column ticks)."""
    ended: bool
    """The source shard reached its end with this batch."""
    rows: int
    v: int = VERSION
    stream: str = ""
    """The source stream of a query that reads two (a join of two streams: ``left`` or
    ``right``); empty for one stream, and then not written (one-stream chunks are the
    bytes they were). Shard ids repeat across streams, so a shard is known by
    :attr:`key`."""
    idle: bool = False
    """An idle marker (:attr:`is_idle`); written only when true."""

    def fields(self) -> dict[str, Any]:
        """The header's fields as written (``stream`` only when set)."""
        body = asdict(self)
        if not self.stream:
            del body["stream"]
        if not self.idle:
            del body["idle"]
        return body

    def to_json(self) -> bytes:
        """The header as canonical JSON bytes (sorted keys, no spaces)."""
        return json.dumps(self.fields(), sort_keys=True, separators=(",", ":")).encode()

    @property
    def key(self) -> str:
        """The source shard as the dedup map knows it: ``stream/source`` (``source`` for
        one stream)."""
        return f"{self.stream}/{self.source}" if self.stream else self.source

    @property
    def is_end(self) -> bool:
        """An end marker: the shard ended after ``last``, the end of its previous range."""
        return self.ended and self.first == self.last and self.rows == 0

    @property
    def is_start(self) -> bool:
        """A start marker: a source task started reading the shard after ``last`` (its
        checkpoint, ``"0"`` at the shard's start). A chunk of records never has
        ``first == last``: it covers at least one record after ``first``."""
        return not self.ended and not self.idle and self.first == self.last and self.rows == 0

    @property
    def is_idle(self) -> bool:
        """An idle marker: the shard's reader read it up to ``last`` and found nothing newer
        at its tip for ``idle_timeout``."""
        return self.idle and not self.ended and self.first == self.last and self.rows == 0

    @property
    def last_int(self) -> int:
        """``last`` as an integer (sequence numbers compare as integers)."""
        return int(self.last)


_FIELDS: dict[str, tuple[type, ...]] = {
    "v": (int,),
    "query": (str,),
    "source": (str,),
    "first": (str, type(None)),
    "last": (str,),
    "part": (int,),
    "parts": (int,),
    "max_event": (int, type(None)),
    "ended": (bool,),
    "rows": (int,),
}


def _crc(header: ChunkHeader, table: pa.Table) -> int:
    """CRC-32 of the header's canonical JSON, then of each record batch's IPC message."""
    crc = zlib.crc32(header.to_json())
    for batch in table.to_batches():
        crc = zlib.crc32(batch.serialize(), crc)
    return crc


def _header(raw: bytes) -> tuple[ChunkHeader, Any]:
    try:
        body: Any = json.loads(raw)
    except ValueError as exc:
        raise ChunkError(f"not a streamkit chunk: its header is not JSON ({exc})") from None
    if not isinstance(body, dict):
        raise ChunkError("not a streamkit chunk: its header is not a JSON object")
    if body.get("v") not in READABLE or isinstance(body.get("v"), bool):
        raise ChunkError(
            f"chunk header version {body.get('v')!r} is not one of {READABLE}: a worker of "
            "another streamkit version wrote it; run one streamkit version across the fleet"
        )
    for name, kinds in _FIELDS.items():
        value = body.get(name)
        bad_bool = isinstance(value, bool) and bool not in kinds
        if name not in body or not isinstance(value, kinds) or bad_bool:
            raise ChunkError(f"damaged chunk header: field {name!r} is {value!r}")
    stream = body.get("stream", "")
    if not isinstance(stream, str) or ("stream" in body and stream not in STREAMS):
        raise ChunkError(f"damaged chunk header: field 'stream' is {stream!r}")
    idle = body.get("idle", False)
    if not isinstance(idle, bool) or ("idle" in body and not idle):
        raise ChunkError(f"damaged chunk header: field 'idle' is {idle!r}")
    header = ChunkHeader(**{k: body[k] for k in _FIELDS}, stream=stream, idle=idle)  # v as is
    shape = 0 <= header.part < header.parts and header.rows >= 0
    if not header.last.isdigit() or not shape or (idle and not header.is_idle):
        raise ChunkError(f"damaged chunk header: {body}")
    return header, body.get("crc32")


def encode_chunk(header: ChunkHeader, rows: pl.DataFrame) -> bytes:
    """``rows`` as an Arrow IPC stream with ``header`` in the schema metadata."""
    if header.rows != rows.height:
        header = replace(header, rows=rows.height)
    table = rows.to_arrow()
    body = {**header.fields(), "crc32": _crc(header, table)}
    meta = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    table = table.replace_schema_metadata({HEADER_KEY: meta})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def decode_chunk(data: bytes) -> tuple[ChunkHeader, pl.DataFrame]:
    """The header and rows of a chunk; :class:`ChunkError` for anything else."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ChunkError(f"a chunk is bytes, got {type(data).__name__}")
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(bytes(data)))
        table = reader.read_all()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ChunkError(
            f"not a streamkit chunk ({len(data)} bytes that are no Arrow IPC stream: {exc}); "
            "the exchange stream must only carry records written by streamkit workers"
        ) from None
    meta = table.schema.metadata or {}
    if HEADER_KEY not in meta:
        raise ChunkError(
            "not a streamkit chunk: an Arrow IPC stream without the streamkit.chunk header; "
            "the exchange stream must only carry records written by streamkit workers"
        )
    header, crc = _header(meta[HEADER_KEY])
    table = table.replace_schema_metadata(None)
    where = f"chunk from source {header.key!r} (range end {header.last}, part {header.part})"
    if table.num_rows != header.rows:
        raise ChunkError(
            f"damaged {where}: its header says {header.rows} rows, it holds {table.num_rows}"
        )
    if crc != _crc(header, table):
        raise ChunkError(f"damaged {where}: checksum mismatch (its bytes were altered)")
    try:  # a matching checksum over invalid Arrow data would be a writer's bug: refuse it
        table.validate(full=True)
        frame = pl.from_arrow(table)
    except (pa.ArrowException, pl.exceptions.PolarsError, ValueError) as exc:
        raise ChunkError(f"damaged {where}: invalid Arrow data ({exc})") from None
    assert isinstance(frame, pl.DataFrame)
    return header, frame


def split_parts(
    header: ChunkHeader, rows: pl.DataFrame, budget: int = DEFAULT_BUDGET
) -> list[bytes]:
    """``rows`` encoded as parts 0..k-1 (consecutive row ranges, in order), each at most
    ``budget`` bytes; one part when it fits (also with no rows). Raises
    :class:`ChunkError` when a single row does not fit."""
    parts = 1
    while True:
        size = -(-rows.height // parts) if rows.height else 0
        count = -(-rows.height // size) if size else 1
        slices = [rows.slice(i * size, size) for i in range(count)] if size else [rows]
        encoded = [
            encode_chunk(replace(header, part=i, parts=len(slices), rows=s.height), s)
            for i, s in enumerate(slices)
        ]
        largest = max(len(e) for e in encoded)
        if largest <= budget:
            return encoded
        if size <= 1:
            raise ChunkError(
                f"one exchange row encodes to {largest} bytes, more than the "
                f"{budget}-byte budget of an exchange record; aggregate fewer or smaller "
                "values per group (e.g. fewer collect_list items), or, in a join of two "
                "streams, select fewer or smaller columns on each side before the join"
            )
        grow = max(2, -(-largest // budget))
        parts = min(rows.height, parts * grow)
