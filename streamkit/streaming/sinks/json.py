"""JSON sink: newline-delimited JSON files per micro-batch, local or S3, idempotent per batch."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, ClassVar

import polars as pl
import pyarrow as pa

from streamkit.errors import StreamkitError
from streamkit.streaming.contracts import Guarantee
from streamkit.streaming.sinks._files import BatchFileSink

if TYPE_CHECKING:
    from polars._typing import PolarsDataType


__all__ = ["JSON_PENDING", "JsonSink", "JsonSinkError", "json_ready"]

JSON_PENDING = "_streamkit_pending.state"
"""The last batch's file list (not ``.json``: ``sk.read.json`` reads every ``.json`` file)."""


class JsonSinkError(StreamkitError):
    """The JSON sink cannot write a batch as asked."""


class JsonSink(BatchFileSink):
    """Writes each batch as ``path/[col=value/]batch-{id:09d}-part-{k}.json`` (NDJSON).

    One JSON object per row, columns in schema order. Values: timestamps are ISO-8601
    strings with a fixed number of fraction digits (6, or 9 for nanoseconds), in UTC with
    a ``Z`` suffix when the column has a time zone, so ``sk.read.json(path)`` reads them as
    strings and ``sk.to_timestamp(col)`` turns them back into timestamps (also inside
    structs such as windows, and lists). Dates are ``YYYY-MM-DD``; durations ISO-8601
    (``PT1S``); decimals strings; binary base64 strings; NaN null. Serialisation is
    vectorised (polars).

    ``path``, ``endpoint``, ``partition_by``, ``keep_partition_column``, file splitting and
    idempotence per batch id are those of :class:`~streamkit.streaming.sinks.ParquetSink`:
    a re-run of batch N first deletes what the earlier attempt wrote (listed in
    ``_streamkit_pending.state``), so a reader never sees a batch twice once it is re-run,
    and a batch id lower than the recorded one raises :class:`JsonSinkError`. Empty batches
    write nothing.

    Delivery: exactly-once together with the engine's checkpoint (a batch is committed
    only after ``add_batch`` returned and every file is durable).
    """

    guarantee: ClassVar[Guarantee] = Guarantee.EXACTLY_ONCE
    """Delivery guarantee (the README sink table is tested against it)."""

    suffix = ".json"
    pending_name = JSON_PENDING
    error = JsonSinkError

    def _encode(self, part: pa.Table) -> bytes:
        out = io.BytesIO()
        json_ready(part).write_ndjson(out)
        return out.getvalue()


def json_ready(table: pa.Table) -> pl.DataFrame:
    """``table`` as a polars frame whose every value polars writes as the JSON above."""
    frame = pl.from_arrow(table, rechunk=False)
    assert isinstance(frame, pl.DataFrame)
    exprs = []
    for name, dtype in frame.schema.items():
        converted = _convert(pl.col(name), dtype)
        exprs.append(pl.col(name) if converted is None else converted.alias(name))
    return frame.select(exprs)


def _convert(expr: pl.Expr, dtype: PolarsDataType) -> pl.Expr | None:
    """``expr`` with timestamps as ISO strings and binary as base64 (None: unchanged)."""
    if isinstance(dtype, pl.Datetime):
        return _iso(expr, dtype)
    if isinstance(dtype, pl.Binary):
        return expr.bin.encode("base64")
    if isinstance(dtype, pl.Struct):
        fields = [(f.name, _convert(expr.struct.field(f.name), f.dtype)) for f in dtype.fields]
        if all(c is None for _, c in fields):
            return None
        parts = [(expr.struct.field(n) if c is None else c).alias(n) for n, c in fields]
        return pl.when(expr.is_null()).then(None).otherwise(pl.struct(parts))
    if isinstance(dtype, pl.List | pl.Array):
        inner = _convert(pl.element(), dtype.inner)
        if inner is None:
            return None
        listed = expr if isinstance(dtype, pl.List) else expr.arr.to_list()
        return listed.list.eval(inner)
    return None


def _iso(expr: pl.Expr, dtype: pl.Datetime) -> pl.Expr:
    digits = 9 if dtype.time_unit == "ns" else 6
    if dtype.time_zone is None:
        return expr.dt.to_string(f"%Y-%m-%dT%H:%M:%S%.{digits}f")
    utc = expr.dt.convert_time_zone("UTC")
    return utc.dt.to_string(f"%Y-%m-%dT%H:%M:%S%.{digits}fZ")
