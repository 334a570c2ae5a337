"""Decoding a micro-batch of raw records into Arrow rows plus a dead-letter table.

A decoder turns :class:`RawRecords` into :class:`Decoded` ``(rows, dead_letters)``. Rows
conform to the decoder's schema; every record that cannot be decoded becomes exactly one
dead letter (raw bytes, partition, position, reason) - nothing is dropped silently. Rows
and dead letters keep the records' order. With ``on_bad_record="fail"`` the first bad
record raises :class:`BadRecordError` instead.

The JSON path is vectorised: the whole batch is framed as one NDJSON buffer and parsed by
``pyarrow.json`` in a single call (measured faster than Polars' NDJSON reader once a
timestamp column is declared: ~20 ms vs ~600 ms for 100k small records; pyarrow is also
strict about types). Bad records are isolated by bisection, so good records survive.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Sequence
from functools import reduce
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamkit.errors import ConfigError, SchemaError
from streamkit.streaming import _guard as guard
from streamkit.streaming import _json_schema as js
from streamkit.streaming import _lines
from streamkit.streaming import _ndjson as nd
from streamkit.streaming._records import (
    DEAD_LETTER_SCHEMA,
    BadRecordError,
    BinaryColumn,
    Decoded,
    Decoder,
    OnBadRecord,
    Positions,
    RawRecords,
    Repeat,
    check_mode,
    dead_letters,
    empty_dead_letters,
    finish,
    keep_fields,
)

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = [
    "DEAD_LETTER_SCHEMA",
    "MAX_DEPTH",
    "BadRecordError",
    "BinaryColumn",
    "Decoded",
    "Decoder",
    "FunctionDecoder",
    "JsonDecoder",
    "OnBadRecord",
    "Positions",
    "RawDecoder",
    "RawRecords",
    "Repeat",
    "conform",
    "dead_letters",
    "decode_off_loop",
    "empty_dead_letters",
    "keep_fields",
    "read_only",
]

MAX_DEPTH = guard.MAX_DEPTH
"""Default nesting bound of :class:`JsonDecoder` (deeper records are dead letters)."""


def conform(table: pa.Table | pa.RecordBatch, schema: pa.Schema, what: str = "rows") -> pa.Table:
    """``table`` with exactly ``schema``'s columns, in order: extra columns dropped, missing
    nullable ones filled with nulls, types cast (safely). Raises :class:`SchemaError`
    naming the field otherwise."""
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    columns: list[pa.ChunkedArray | pa.Array] = []
    for field in schema:
        if field.name not in table.column_names:
            if not field.nullable:
                raise SchemaError(
                    f"{what} lack the required column {field.name!r} ({field.type}); "
                    f"columns present: {table.column_names}"
                )
            columns.append(pa.nulls(table.num_rows, field.type))
            continue
        column = table.column(field.name)
        if column.type != field.type:
            try:
                column = column.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                raise SchemaError(
                    f"{what}: column {field.name!r} is {column.type}, expected {field.type} "
                    f"and the cast failed ({exc}); fix the data or the declared schema"
                ) from exc
        if not field.nullable and column.null_count:
            raise SchemaError(f"{what}: required column {field.name!r} has nulls")
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


def _invalid_strings(rows: pa.Table) -> str | None:
    """Why ``rows`` cannot be handed on (a string that is not valid UTF-8), or None."""
    try:
        rows.validate(full=True)
    except pa.ArrowInvalid as exc:
        if "UTF8" in str(exc):
            return f"decoder output: invalid UTF-8 in a string field ({exc})"
        return f"decoder output is not a valid Arrow table ({exc})"
    return None


class RawDecoder:
    """Passes payloads through as one ``data: binary`` column; never rejects a record."""

    schema: pa.Schema = pa.schema([pa.field("data", pa.binary())])

    def decode(self, records: RawRecords) -> Decoded:
        payloads = records.payloads
        if isinstance(payloads, BinaryColumn):
            data = payloads.array.cast(pa.binary())
        else:
            data = pa.array(list(payloads), pa.binary())
        return Decoded(pa.Table.from_arrays([data], schema=self.schema), empty_dead_letters())


class FunctionDecoder:
    """A user hook ``fn(payloads) -> pa.Table``; its output is conformed to ``schema``.

    If ``fn`` raises or returns a string that is not valid UTF-8, the batch is bisected and
    ``fn`` re-run on halves, so only records on which it fails on their own become dead
    letters (reason: the exception, or the invalid string). ``fn`` may
    return any number of rows per record. Output that does not fit ``schema`` raises
    :class:`SchemaError` (a bug in the hook, not in the data).
    """

    def __init__(
        self,
        fn: Callable[[list[bytes]], pa.Table],
        schema: pa.Schema,
        *,
        on_bad_record: OnBadRecord = "dead_letter",
    ) -> None:
        check_mode(on_bad_record)
        self._fn = fn
        self._schema = schema
        self._mode = on_bad_record

    @property
    def schema(self) -> pa.Schema:
        return self._schema

    def decode(self, records: RawRecords) -> Decoded:
        payloads = list(records.payloads)

        def run(lo: int, hi: int) -> pa.Table | str:
            try:
                out = self._fn(payloads[lo:hi])
            except Exception as exc:
                return f"decoder raised {type(exc).__name__}: {exc}"
            rows = conform(out, self._schema, what="decoder output")
            return _invalid_strings(rows) or rows

        good, bad = nd.bisect(run, len(payloads), run(0, len(payloads)))
        tables = [t for _, _, t in good]
        rows = pa.concat_tables(tables) if tables else self._schema.empty_table()
        return finish(records, rows, bad, self._mode)


NO_FIELDS = (
    "empty object before any field was seen: no schema to decode it into; declare the "
    "schema (JsonDecoder(schema=...)) to keep such records as rows of nulls"
)
"""Reason of a dead letter for an empty object decoded while the schema is still to be
inferred (every good record of the batch was ``{}``)."""


class JsonDecoder:
    """JSON objects into Arrow columns under a declared or inferred schema.

    Rejected (dead letter, or :class:`BadRecordError` in ``"fail"`` mode): malformed JSON,
    non-objects, empty records, records over ``max_record_bytes`` (reason ``oversize``),
    records that are not valid UTF-8 (anywhere, so in any string field) or are nested
    deeper than ``max_depth`` - these two are screened before any parse, so a hostile
    record can neither crash the parser nor reach a sink; required (``nullable=False``)
    fields that are absent or null, and values of the wrong type (reasons name the field
    and both types). Unknown fields are ignored; absent
    nullable fields are null. Timestamps, dates, times, decimals, float32 and binary: see
    :class:`~streamkit.streaming._json_schema.TypedParser` (ISO strings or integers in the
    field's unit; decimals exact, never rounded; out-of-range values are dead letters).

    With ``schema=None`` the schema is inferred from the first batch that holds a valid
    record with a field (see :func:`~streamkit.streaming._json_schema.infer_schema`) and
    enforced from then on; an empty object ``{}`` before that is a dead letter (reason
    :data:`NO_FIELDS`).
    """

    def __init__(
        self,
        schema: pa.Schema | None = None,
        *,
        max_record_bytes: int = 1_048_576,
        max_depth: int = MAX_DEPTH,
        on_bad_record: OnBadRecord = "dead_letter",
        threads: bool = True,
        check_types: bool = True,
    ) -> None:
        check_mode(on_bad_record)
        self._check_types = check_types
        """Refuse a declared field JSON cannot produce when built (False: a source that
        mostly holds rows, calling :meth:`require_json_types` before it takes JSON)."""
        self._threads = threads
        if max_record_bytes <= 0:
            raise ConfigError(f"max_record_bytes must be positive, got {max_record_bytes}")
        self.max_record_bytes = max_record_bytes
        if not 0 < max_depth <= 1000:
            raise ConfigError(f"max_depth must be between 1 and 1000, got {max_depth}")
        self.max_depth = max_depth
        self.on_bad_record: OnBadRecord = on_bad_record
        self._schema: pa.Schema | None = None
        self._rows_schema: pa.Schema | None = None
        self._only: frozenset[str] | None = None
        self._parser: js.TypedParser | None = None
        self._fast_skips = 0
        """Batches left before the one-document parse of :meth:`decode` is tried again."""
        self._fast_backoff = 1
        self.inferred = schema is None
        """True when the schema is (to be) inferred rather than declared."""
        if schema is not None:
            self._set_schema(schema)

    @property
    def schema(self) -> pa.Schema | None:
        """The declared schema, the inferred one, or None before inference."""
        return self._schema

    @property
    def threads(self) -> bool:
        """Parse a large batch on pyarrow's thread pool (False: on the calling thread only,
        for callers that decode several batches at once)."""
        return self._threads

    @threads.setter
    def threads(self, value: bool) -> None:
        self._threads = value
        if self._parser is not None:
            self._parser.threads = value

    @property
    def rows_schema(self) -> pa.Schema | None:
        """The schema of decoded rows: :attr:`schema`, or its fields kept by :meth:`read_only`."""
        return self._rows_schema

    def read_only(self, names: Collection[str] | None) -> None:
        """Decode only the top-level fields ``names`` from now on (projection pushdown;
        None: every field again).

        Rows then hold just these columns, in schema order, and only they are checked: a
        missing, null or mistyped value in another field no longer makes a record a dead
        letter (as with Spark's JSON column pruning). Malformed JSON, non-objects, empty
        and oversize records still are.
        """
        self._only = None if names is None else frozenset(names)
        if self._schema is not None:
            self._set_schema(self._schema)

    def _set_schema(self, schema: pa.Schema) -> None:
        self._schema = schema
        kept = keep_fields(schema, self._only)
        self._rows_schema = kept
        self._parser = js.TypedParser(kept, threads=self._threads, check=self._check_types)

    def require_json_types(self) -> None:
        """:class:`ConfigError` naming each field of the schema JSON cannot produce (map,
        dictionary, duration, ...); nothing while the schema is unknown (inferred types
        always can)."""
        if self._rows_schema is not None:
            js.check_convertible(js.nullable(self._rows_schema))

    def infer_schema(self, payloads: Sequence[bytes]) -> pa.Schema | None:
        """Fix the schema from a sample of payloads unless known; returns it (or None).

        Only payloads that pass the pre-check (size, UTF-8, depth) are parsed; the others
        are skipped."""
        if self._schema is None and payloads:
            frame, _ = nd.frame_payloads(payloads, self.max_record_bytes, self.max_depth)
            self._infer(frame)
        return self._schema

    def empty_rows(self) -> pa.Table:
        """No rows, in the schema (an empty schema before inference)."""
        return (self._rows_schema or pa.schema([])).empty_table()

    def decode(self, records: RawRecords) -> Decoded:
        """Decode one micro-batch (one pyarrow parse when every record is good).

        A batch of one-line ``{...}`` records, all good, is parsed as an NDJSON document
        without the per-record wrapper (:meth:`_in_place`: same rows, ~0.2 µs less per
        ~100-byte record); any other batch, or one where that parse fails or a required
        field is missing, is framed record by record as below. A failed attempt parsed the
        batch for nothing, so after one the attempt is skipped for 1, 2, 4, ... up to 64
        batches (a stream with steady dead letters pays it on few batches), and tried on
        every batch again after a success."""
        lines = None
        if self._parser is not None and self._fast_skips:
            self._fast_skips -= 1
        elif self._parser is not None:
            lines = nd.as_lines(records.payloads, self.max_record_bytes)
        if lines is not None:
            scan = _lines.scan_lines(lines)
            fast = self._in_place(lines, scan) if scan.count == len(records) else None
            if fast is not None:
                self._fast_backoff = 1
                return fast
            self._fast_skips = self._fast_backoff
            self._fast_backoff = min(2 * self._fast_backoff, 64)
        frame, rejects = nd.frame_payloads(records.payloads, self.max_record_bytes, self.max_depth)
        if self._parser is None:
            unparsed = self._infer(frame)
            if self._parser is None:
                rejects += unparsed
                return finish(records, self.empty_rows(), rejects, self.on_bad_record)
        good, bad = self._parse(frame)
        index = np.concatenate([frame.index[lo:hi] for lo, hi, _ in good] or [frame.index[:0]])
        rows, missing = self._check_required([t for _, _, t in good], index)
        return finish(records, rows, rejects + bad + missing, self.on_bad_record)

    def decode_lines(self, data: bytes | pa.Buffer, partition: str, source: str) -> Decoded:
        """Decode an NDJSON document (a whole file): each non-empty line is a record.

        Empty lines are skipped; ``\\r\\n`` endings are accepted; positions are
        ``f"{source}:{line}"`` (1-based). A file of one object per line, all good, is
        parsed in place (no copy, no split); otherwise lines become records for
        :meth:`decode`.
        """
        buf = data if isinstance(data, pa.Buffer) else pa.py_buffer(data)
        scan = _lines.scan_lines(buf)
        if scan.count == 0:
            return Decoded(self.empty_rows(), empty_dead_letters())
        fast = self._in_place(buf, scan)
        return fast if fast is not None else self._by_line(buf, partition, source)

    def _in_place(self, buf: pa.Buffer, scan: _lines.LineScan) -> Decoded | None:
        """The document parsed in place, when every line is one good object; else None.

        Guarantee: when not None, equal to :meth:`_by_line` of the same document (one row
        per line, every line passing the pre-check, every row typed and complete)."""
        parser = self._parser
        if parser is None or not scan.objects or not self._passes(buf, scan):
            return None
        table = parser.parse_document(buf, scan.count, max(1 << 20, scan.longest + 16))
        if table is None:
            return None
        rows, missing = self._check_required([table], np.arange(scan.count))
        return None if missing else Decoded(rows, empty_dead_letters())

    def _by_line(self, buf: pa.Buffer, partition: str, source: str) -> Decoded:
        """Each non-empty line (``\\r`` endings stripped) as a record for :meth:`decode`."""
        raw = buf.to_pybytes()
        lines = raw.split(b"\n")
        if lines and not lines[-1]:
            lines.pop()
        if b"\r" in raw:
            lines = [line.removesuffix(b"\r") for line in lines]
        lengths = np.fromiter(map(len, lines), dtype=np.int64, count=len(lines))
        keep = np.flatnonzero(lengths > 0)
        payloads = lines if len(keep) == len(lines) else [lines[i] for i in keep.tolist()]
        positions = Positions(keep + 1, prefix=f"{source}:")
        return self.decode(RawRecords.from_partition(payloads, partition, positions))

    def _passes(self, buf: pa.Buffer, scan: _lines.LineScan) -> bool:
        """Whether every line of a document passes the pre-check (size, UTF-8, depth); each
        line starts with ``{`` (``scan.objects``). Settled by the scan's counts when the
        document is ASCII and holds fewer than ``max_depth`` brackets beyond each line's
        first ``{`` (so no line can be deeper); else by :func:`guard.screen`."""
        if scan.longest > self.max_record_bytes:
            return False
        if scan.ascii and scan.opens - scan.count < self.max_depth:
            return True
        return not guard.screen(buf, scan.bounds, self.max_depth, least_opens=1)

    def _infer(self, frame: nd.Frame) -> list[tuple[int, str]]:
        def parse(lo: int, hi: int) -> nd.ParseResult:
            return js.parse_untyped(frame.buffer(lo, hi), hi - lo, frame.block_size)

        if frame.size == 0:
            return []
        good, bad = nd.bisect(parse, frame.size, parse(0, frame.size), nd.splitter(frame))
        schema = js.infer_schema([t for _, _, t in good])
        rejects = [(int(frame.index[k]), reason) for k, reason in bad]
        if schema is not None:
            self._set_schema(schema)
            return rejects
        # only empty objects: no column to put them in, so they are dead letters, not lost
        return rejects + [(int(k), NO_FIELDS) for lo, hi, _ in good for k in frame.index[lo:hi]]

    def _parse(
        self, frame: nd.Frame
    ) -> tuple[list[tuple[int, int, pa.Table]], list[tuple[int, str]]]:
        parser = self._parser
        assert parser is not None
        if frame.size == 0:
            return [], []

        def parse(lo: int, hi: int) -> nd.ParseResult:
            return parser.parse(frame.buffer(lo, hi), hi - lo, frame.block_size)

        good, bad = nd.bisect(parse, frame.size, parse(0, frame.size), nd.splitter(frame))
        return good, [(int(frame.index[k]), reason) for k, reason in bad]

    def _check_required(
        self, tables: list[pa.Table], index: npt.NDArray[np.int64]
    ) -> tuple[pa.Table, list[tuple[int, str]]]:
        """Drop rows whose required fields are null; ``index[r]`` is row r's record number."""
        schema = self._rows_schema
        assert schema is not None
        assert self._parser is not None
        table = pa.concat_tables(tables) if tables else self._parser.relaxed.empty_table()
        required = [f.name for f in schema if not f.nullable]
        if not required or table.num_rows == 0:
            return table.cast(schema), []
        nulls = {name: table.column(name).is_null() for name in required}
        missing = reduce(pc.or_, nulls.values())
        if not pc.any(missing).as_py():
            return table.cast(schema), []
        masks = {n: m.to_numpy(zero_copy_only=False) for n, m in nulls.items()}
        rejects = []
        for r in np.flatnonzero(missing.to_numpy(zero_copy_only=False)).tolist():
            names = ", ".join(repr(n) for n in required if masks[n][r])
            rejects.append((int(index[r]), f"missing required field {names} (absent or null)"))
        return table.filter(pc.invert(missing)).cast(schema), rejects


def read_only(decoder: Decoder, columns: Collection[str] | None) -> bool:
    """Projection pushdown on a source's decoder (see :meth:`JsonDecoder.read_only`): True
    when ``decoder`` will hand only ``columns`` (None: all); False, changing nothing, for a
    decoder that cannot project."""
    if not isinstance(decoder, JsonDecoder):
        return columns is None
    decoder.read_only(columns)
    return True


async def decode_off_loop(decoder: Decoder, records: RawRecords) -> Decoded:
    """``decoder.decode(records)`` on a worker thread; no records: no rows and no dead
    letters (without a call)."""
    if not len(records):
        if isinstance(decoder, JsonDecoder):
            return Decoded(decoder.empty_rows(), empty_dead_letters())
        return Decoded((decoder.schema or pa.schema([])).empty_table(), empty_dead_letters())
    return await asyncio.to_thread(decoder.decode, records)
