"""Typed parsing and schema inference for :class:`streamkit.streaming.decode.JsonDecoder`
(private; the framing and bad-record isolation are in :mod:`streamkit.streaming._ndjson`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc

from streamkit.errors import ConfigError
from streamkit.streaming import _json_time as jt
from streamkit.streaming._ndjson import (
    CHANGED,
    ParseResult,
    explain,
    read_json,
    try_read,
)

_ISO_PREFIX = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2})?")


def nullable(schema: pa.Schema) -> pa.Schema:
    """``schema`` with every top-level field nullable (required fields are checked after)."""
    return pa.schema([f.with_nullable(True) for f in schema], metadata=schema.metadata)


def parse_untyped(buf: pa.Buffer, rows: int, block: int) -> ParseResult:
    """Parse with pyarrow's type inference (used once, to infer a schema)."""
    result = try_read(buf, None, rows, block)
    if isinstance(result, pa.Table):
        return result
    return result.message if rows > 1 else explain(result, None, buf, block, None)


def infer_schema(tables: Sequence[pa.Table]) -> pa.Schema | None:
    """One schema from the tables parsed without a schema (the first table wins conflicts).

    Null-only fields become strings (at any depth: ``[null]`` is a list of strings);
    timestamps become ``timestamp[us]`` (naive UTC, offsets applied), including ISO-8601
    strings with fractional seconds that pyarrow leaves as strings.
    None when no table holds a field (only empty objects so far): no schema to fix yet.
    """
    if not tables:
        return None
    try:
        merged = pa.unify_schemas([t.schema for t in tables], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        merged = _first_wins([t.schema for t in tables])
    fields = []
    for field in merged:
        dtype = _without_nulls(field.type)
        if pa.types.is_timestamp(dtype) or (
            pa.types.is_string(dtype) and _looks_like_timestamps(tables, field.name)
        ):
            dtype = pa.timestamp("us")
        fields.append(pa.field(field.name, dtype))
    return pa.schema(fields) if fields else None


def _without_nulls(dtype: pa.DataType) -> pa.DataType:
    """``dtype`` with every null type in it (list items, struct fields) made a string."""
    if pa.types.is_null(dtype):
        return pa.string()
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        return pa.list_(_without_nulls(dtype.value_type))
    if pa.types.is_struct(dtype):
        return pa.struct([f.with_type(_without_nulls(f.type)) for f in dtype])
    return dtype


def _first_wins(schemas: Sequence[pa.Schema]) -> pa.Schema:
    seen: dict[str, pa.Field] = {}
    for schema in schemas:
        for field in schema:
            seen.setdefault(field.name, field)
    return pa.schema(list(seen.values()))


def _looks_like_timestamps(tables: Sequence[pa.Table], name: str) -> bool:
    """True when every value of the string field ``name`` parses as an ISO-8601 timestamp."""
    columns = [t.column(name) for t in tables if name in t.column_names]
    values = [pc.drop_null(c) for c in columns if pa.types.is_string(c.type)]
    if len(values) != len(columns) or not any(len(v) for v in values):
        return False
    first = next(v for v in values if len(v))
    if not _ISO_PREFIX.match(str(first[0].as_py())):
        return False
    for unit in (pa.timestamp("us"), pa.timestamp("us", tz="UTC")):
        try:
            for v in values:
                pc.cast(v, unit)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        return True
    return False


class TypedParser:
    """Parses NDJSON under a declared schema into that schema with every field nullable.

    A top-level ``timestamp`` field accepts ISO-8601 strings (``2024-01-01``,
    ``2024-01-01T10:00:00[.ffffff][Z|+01:00]``; offsets are applied) or integer epochs in the
    field's own unit (seconds for ``timestamp[s]``, ms for ``timestamp[ms]``...); an ISO
    fraction may have more digits than the unit when they are zeros (``.123000`` in a
    ``timestamp[ms]`` field), and a finer non-zero fraction makes a dead letter (never
    truncated). Which of the
    two a batch uses is learned: the parser tries the last form that worked and switches a
    field when the parser reports a string/number mismatch on it. A top-level ``date32`` /
    ``date64`` field likewise accepts ISO dates (``2024-01-02``) or integers in the field's
    own unit (days for ``date32``, ms for ``date64``); a string that is not an ISO date
    makes its record a dead letter naming the field. A top-level ``time32``/``time64``
    field likewise accepts ISO times (``12:34:56``, ``12:34:56.789``, ``12:34``) or
    integers in its unit since midnight; a value that is not a time of day (``25:00``, a
    fraction finer than the unit, an integer outside the day) makes its record a dead
    letter naming the field, never a wrapped-around time.

    Decimal fields take JSON numbers and numeric strings, converted from their text
    (exact, never through a float); a value needing more scale than declared is a dead
    letter naming the field (values are not rounded), and so is one needing more
    precision, checked on the scaled value for top-level fields only (inside a list or
    struct, pyarrow's check on the digits as written lets 12345678.5 into decimal(9, 2)).
    A decimal of negative scale or scale above its precision is refused (pyarrow reads it
    wrongly). A top-level ``float32`` field refuses a number beyond float32's range (a
    dead letter, not inf).
    A ``binary`` field holds the UTF-8 bytes of the JSON string as written: JSON has no
    bytes, and base64 (what streamkit's JSON sink writes) is not decoded.
    """

    def __init__(self, schema: pa.Schema, *, threads: bool = True, check: bool = True) -> None:
        """Raises :class:`~streamkit.errors.ConfigError` naming each field of a type
        pyarrow's JSON reader cannot produce (map, dictionary, duration, large list,
        float16, or a list or struct holding one); ``check=False``: not checked here
        (a source holding rows of such types, decoding JSON only on demand: it calls
        :func:`check_convertible` first)."""
        self.relaxed = nullable(schema)
        if check:
            check_convertible(self.relaxed)
        self.threads = threads
        """Whether large parses use pyarrow's thread pool (False: one thread per parse)."""
        self._timestamps = {f.name for f in schema if pa.types.is_timestamp(f.type)}
        self._coarse = {
            f.name: pa.timestamp("us", f.type.tz)
            for f in schema
            if pa.types.is_timestamp(f.type) and f.type.unit in ("s", "ms")
        }
        """Second and millisecond timestamp fields, read from ISO strings as µs and cast
        back without loss: pyarrow's reader refuses ``.123000`` for ``timestamp[ms]``
        (digits, not precision), which Python's ``isoformat`` writes."""
        self._epoch: set[str] = set()
        self._dates = {f.name for f in schema if pa.types.is_date(f.type)}
        self._times = {f.name for f in schema if pa.types.is_time(f.type)}
        self._iso = self._dates | self._times
        """Date and time fields read as strings (ISO) and converted; the other date fields
        read as their type, the other time fields as int64."""
        self._floats = {f.name for f in schema if pa.types.is_float32(f.type)}
        self._decimals = {
            f.name: _largest(f.type)
            for f in schema
            if pa.types.is_decimal(f.type) and 0 < f.type.scale <= f.type.precision
        }
        """Top-level decimal fields with a positive scale and their value range: pyarrow
        checks a value's digits before scaling it to the field (12345678.5 passes
        decimal(9, 2) as 12345678.50). Scaling to a scale of 0 adds no digit; the other
        scales are refused by :func:`check_convertible` (unchecked: not decoded from JSON)."""

    def parse_schema(self) -> pa.Schema:
        """The schema handed to pyarrow: epoch-form timestamp and integer-form time fields
        read as int64, ISO-form date and time fields as strings."""
        if not self._epoch and not self._iso and not self._times and not self._coarse:
            return self.relaxed
        return pa.schema([self._read_as(f) for f in self.relaxed])

    def _read_as(self, field: pa.Field) -> pa.Field:
        if field.name in self._iso:
            return field.with_type(pa.string())
        if field.name in self._epoch or field.name in self._times:
            return field.with_type(pa.int64())
        if field.name in self._coarse:
            return field.with_type(self._coarse[field.name])
        return field

    def parse(self, buf: pa.Buffer, rows: int, block: int) -> ParseResult:
        """Parse ``rows`` framed records; for a single record, the reason names the field."""
        switched: set[str] = set()
        while True:
            schema = self.parse_schema()
            result = try_read(buf, schema, rows, block, self.threads)
            if isinstance(result, pa.Table):
                return self._converted(result)
            field = self._switch_candidate(result.message) if result.from_parser else None
            if field is None or field in switched:
                if rows > 1:
                    return result.message
                return explain(result, schema, buf, block, self.relaxed)
            switched.add(field)
            if field in self._dates or field in self._times:
                self._iso ^= {field}
            else:
                self._epoch ^= {field}

    def parse_document(self, buf: pa.Buffer, rows: int, block: int) -> pa.Table | None:
        """Parse an unwrapped NDJSON document (see :func:`~streamkit.streaming._lines.scan_lines`);
        None on any failure."""
        try:
            table = read_json(buf, self.parse_schema(), block, self.threads)
        except (pa.ArrowInvalid, UnicodeDecodeError):
            return None
        if table.num_rows != rows:
            return None
        converted = self._converted(table)
        return converted if isinstance(converted, pa.Table) else None

    def _switch_candidate(self, message: str) -> str | None:
        match = CHANGED.search(message)
        if match is None:
            return None
        name = match["path"].removeprefix("/v/")
        if name in self._dates or name in self._times:
            to_days = name in self._iso and match["new"] == "number"
            to_iso = name not in self._iso and match["new"] == "string"
            return name if to_days or to_iso else None
        if name not in self._timestamps:
            return None
        to_epoch = name not in self._epoch and match["new"] == "number"
        to_iso = name in self._epoch and match["new"] == "string"
        return name if to_epoch or to_iso else None

    def _converted(self, table: pa.Table) -> pa.Table | str:
        """Epoch timestamps, ISO dates and times cast to their declared types; a value
        that does not convert gives the reason instead (for a one-record parse, the dead
        letter's)."""
        for name in self._epoch | self._iso | self._times:
            i = table.schema.get_field_index(name)
            field = self.relaxed.field(name)
            column = _cast(table.column(i), field.type)
            if column is None:
                return f"field {name!r}: expected {_expected(field.type)}"
            table = table.set_column(i, field, column)
        for name in self._coarse.keys() - self._epoch:
            i = table.schema.get_field_index(name)
            field = self.relaxed.field(name)
            column = _cast(table.column(i), field.type)
            if column is None:
                return (
                    f"field {name!r}: cannot convert to {field.type} without losing "
                    f"precision: a fraction of a second finer than {field.type.unit} "
                    "(timestamps are never truncated)"
                )
            table = table.set_column(i, field, column)
        for name in self._floats:
            if pc.any(pc.is_inf(table.column(name))).as_py():
                return f"field {name!r}: number out of float32 range (magnitude above 3.4e38)"
        for name, bounds in self._decimals.items():
            if _beyond(table.column(name), *bounds):
                dtype = self.relaxed.field(name).type
                return (
                    f"field {name!r}: cannot convert to {dtype}: a value requires precision "
                    f"above {dtype.precision} (decimals are never rounded)"
                )
        return table


def _beyond(column: pa.ChunkedArray, low: pa.Scalar, high: pa.Scalar) -> bool:
    """Whether a value of ``column`` lies outside ``low..high`` (a comparison kernel that
    refuses a value too wide for its type counts as outside)."""
    try:
        return bool(pc.any(pc.or_(pc.less(column, low), pc.greater(column, high))).as_py())
    except pa.ArrowInvalid:
        return True


def _largest(dtype: pa.DataType) -> tuple[pa.Scalar, pa.Scalar]:
    """The least and the largest value of decimal type ``dtype`` (all digits 9)."""
    digits = "9" * (dtype.precision - dtype.scale) + "." + "9" * dtype.scale
    return pa.scalar(Decimal("-" + digits), dtype), pa.scalar(Decimal(digits), dtype)


def _cast(column: pa.ChunkedArray, dtype: pa.DataType) -> pa.ChunkedArray | None:
    if pa.types.is_time(dtype):
        return jt.to_time(column, dtype)
    try:
        result: pa.ChunkedArray = column.cast(dtype)
    except pa.ArrowInvalid:
        return None
    return result


def _expected(dtype: pa.DataType) -> str:
    if pa.types.is_time(dtype):
        return jt.expected(dtype)
    return f"an ISO date (YYYY-MM-DD) or a {dtype} integer"


_EMPTY_OBJECT = pa.py_buffer(b"{}\n")


def check_convertible(schema: pa.Schema) -> None:
    """Fail fast on fields the JSON reader has no conversion to: pyarrow builds a field's
    converter before reading any value, so one parse of ``{}`` per field finds them."""
    refused = []
    for f in schema:
        try:
            read_json(_EMPTY_OBJECT, pa.schema([f]), 1 << 16, threads=False)
        except pa.ArrowNotImplementedError:
            refused.append(f"{f.name!r} ({f.type})")
    if refused:
        raise ConfigError(
            f"the JSON decoder cannot produce field(s) {', '.join(refused)}: pyarrow's JSON "
            "reader has no conversion to these types; declare them as string, int64, "
            "float64, list or struct fields and convert them after decoding"
        )
    odd = [f"{f.name!r} ({f.type})" for f in schema if _odd_decimal(f.type)]
    if odd:
        raise ConfigError(
            f"the JSON decoder would read decimal field(s) {', '.join(odd)} wrongly: with a "
            "negative scale or a scale above the precision pyarrow's JSON reader checks the "
            "digits as written (it refuses 9999900 for decimal(5, -2) and reads 0.5 into "
            "decimal(3, 5) as 0.50000); declare decimal(p, s) with 0 <= s <= p, or a string, "
            "and cast after decoding"
        )


def _odd_decimal(dtype: pa.DataType) -> bool:
    """Whether ``dtype`` is or holds a decimal of negative scale or scale > precision."""
    if pa.types.is_decimal(dtype):
        return not 0 <= dtype.scale <= dtype.precision
    if pa.types.is_struct(dtype):
        return any(_odd_decimal(dtype.field(i).type) for i in range(dtype.num_fields))
    if pa.types.is_list(dtype) or pa.types.is_fixed_size_list(dtype):
        return _odd_decimal(dtype.value_type)
    return False
