"""Rows to record values (JSON, raw bytes, Arrow IPC) and keys, with per-row rejects.

The inverse of :mod:`streamkit.streaming.decode`, shared by the connector sinks (Kafka,
Kinesis). A row that cannot be serialised is not an error of the batch: it comes back as a
:class:`Reject` (row number and reason) so the sink can keep it as a dead letter.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa

from streamkit.errors import ConfigError

ValueFormat = Literal["json", "raw", "arrow"]
VALUE_FORMATS: tuple[ValueFormat, ...] = ("json", "raw", "arrow")


@dataclass(frozen=True)
class Reject:
    """A row that could not be serialised."""

    row: int
    """Row number in the batch."""
    reason: str
    """Why (names the column when known)."""


@dataclass(frozen=True)
class SinkDeadLetter:
    """A row a sink could not write, kept on the sink instead of failing the query."""

    batch_id: int
    """The micro-batch it belonged to."""
    row: dict[str, Any] = field(hash=False)
    """The row as Python values."""
    reason: str
    """Why it was not written."""


def check_format(value_format: str) -> ValueFormat:
    """``value_format`` if known, else :class:`ConfigError` listing the choices."""
    for known in VALUE_FORMATS:
        if value_format == known:
            return known
    raise ConfigError(f"value_format must be one of {VALUE_FORMATS}, got {value_format!r}")


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        raise TypeError("bytes have no JSON form (use value_format='raw' or base64 them)")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def json_values(rows: Sequence[dict[str, Any]]) -> tuple[list[bytes | None], list[Reject]]:
    """One compact JSON object per row (timestamps ISO-8601); NaN / infinity, bytes and
    unknown objects are rejects (value None at their place)."""
    out: list[bytes | None] = []
    rejects: list[Reject] = []
    for i, row in enumerate(rows):
        try:
            text = json.dumps(row, default=_json_default, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            out.append(None)
            rejects.append(Reject(i, f"cannot serialise as JSON: {exc}"))
            continue
        out.append(text.encode())
    return out, rejects


def raw_values(table: pa.Table, column: str | None) -> tuple[list[bytes | None], list[Reject]]:
    """The bytes of ``column`` (default: the table's only column); strings are UTF-8
    encoded; nulls and other types are rejects."""
    name = column or (table.column_names[0] if table.num_columns == 1 else None)
    if name is None or name not in table.column_names:
        raise ConfigError(
            f"value_format='raw' needs value_column= naming a binary or string column "
            f"(columns: {table.column_names})"
        )
    out: list[bytes | None] = []
    rejects: list[Reject] = []
    for i, value in enumerate(table.column(name).to_pylist()):
        if isinstance(value, bytes):
            out.append(value)
        elif isinstance(value, str):
            out.append(value.encode())
        else:
            out.append(None)
            what = "null" if value is None else type(value).__name__
            rejects.append(Reject(i, f"column {name!r} is {what}, not bytes or str"))
    return out, rejects


def arrow_value(table: pa.Table) -> bytes:
    """``table`` as one Arrow IPC stream."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def key_strings(table: pa.Table, column: str | None) -> list[str | None]:
    """Keys as strings (None for a null key, or for every row without a key column)."""
    if column is None:
        return [None] * table.num_rows
    if column not in table.column_names:
        raise ConfigError(f"key column {column!r} not in the output ({table.column_names})")
    values = table.column(column).to_pylist()
    return [_key_text(v) for v in values]


def _key_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


def key_bytes(table: pa.Table, column: str | None) -> list[bytes | None]:
    """Kafka keys: bytes as they are, anything else as its UTF-8 text (None when null)."""
    if column is None:
        return [None] * table.num_rows
    if column not in table.column_names:
        raise ConfigError(f"key column {column!r} not in the output ({table.column_names})")
    out: list[bytes | None] = []
    for value in table.column(column).to_pylist():
        if isinstance(value, bytes) or value is None:
            out.append(value)
        else:
            text = _key_text(value)
            out.append(text.encode() if text is not None else None)
    return out
