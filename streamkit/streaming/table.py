"""The input table: micro-batches appended as Arrow record batches, bounded by default.

Appends never copy (the table is a list of record batches); a snapshot is a zero-copy
``pa.Table`` over the batches present at that moment, queryable with the batch API
(``to_frame()``), and handed without copying to Polars or DuckDB (``duckdb.sql("select ...
from snap")`` on ``snap = table.snapshot()`` reads the Arrow buffers directly).

Retention (what a query's table holds; :func:`resolve_retention` picks the default):

- default, query with a watermark: ``Retention.watermark()``, the rows whose event time is
  at or after the query's watermark (``q.last_progress.watermark``); a row behind it, or
  with a null event time, is dropped after the batch that moved the watermark past it;
- default, query without a watermark: ``Retention.rows(DEFAULT_MAX_ROWS)``;
- ``Retention.rows(n)``, ``Retention.age(column, duration)``: as asked;
- ``Retention.unbounded()``: every row, for ever; it warns (:class:`UnboundedRetentionWarning`),
  since a long-running stream then grows without limit.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

import pyarrow as pa
import pyarrow.compute as pc

from streamkit.durations import TIME_UNIT_NS, parse_duration_ns
from streamkit.errors import ConfigError, SchemaError

if TYPE_CHECKING:
    import pandas as pd
    import polars as pl

    from streamkit.frame import DataFrame
    from streamkit.plan import Plan

DEFAULT_MAX_ROWS = 1_000_000
"""Rows the input table of a query without a watermark keeps by default (the newest)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class UnboundedRetentionWarning(UserWarning):
    """``Retention.unbounded()`` was asked for: the input table will grow without limit."""


@dataclass(frozen=True)
class Retention:
    """How much of the stream the input table keeps."""

    kind: Literal["unbounded", "rows", "age", "watermark"]
    max_rows: int | None = None
    """``rows``: keep the newest ``max_rows`` rows (by arrival)."""
    column: str | None = None
    """``age``, ``watermark``: the event-time column (``watermark``: set at query start)."""
    duration_ns: int | None = None
    """``age``: keep rows whose event time >= newest event time seen - duration."""

    @classmethod
    def unbounded(cls) -> Retention:
        """Keep every row, for ever: warns with :class:`UnboundedRetentionWarning`, since
        the table of a long-running stream then grows without limit."""
        warnings.warn(
            "Retention.unbounded(): the query's input table keeps every row and grows "
            "without limit; prefer the default (bounded by the watermark) or "
            "Retention.rows(n) / Retention.age(column, duration)",
            UnboundedRetentionWarning,
            stacklevel=2,
        )
        return cls("unbounded")

    @classmethod
    def watermark(cls) -> Retention:
        """Keep the rows whose event time is at or after the query's watermark (the
        default of a query with ``with_watermark``); rows behind it and rows with a null
        event time are dropped once the watermark is known."""
        return cls("watermark")

    @classmethod
    def rows(cls, n: int) -> Retention:
        """Keep the last ``n`` rows appended."""
        if n < 0:
            raise ConfigError(f"Retention.rows needs n >= 0, got {n}")
        return cls("rows", max_rows=n)

    @classmethod
    def age(cls, column: str, duration: str | timedelta) -> Retention:
        """Drop rows whose ``column`` is older than the newest value seen minus ``duration``
        (rows with a null event time are kept)."""
        return cls("age", column=column, duration_ns=parse_duration_ns(duration))


def resolve_retention(policy: Retention | None, plan: Plan) -> Retention:
    """The retention a query over ``plan`` runs with: ``policy``, or when None the default
    (``Retention.watermark()`` with a watermark, else ``Retention.rows(DEFAULT_MAX_ROWS)``);
    a ``watermark`` retention gets the plan's watermark column."""
    from streamkit.plan import Watermark

    marks = [n for n in plan.chain() if isinstance(n, Watermark)]
    column = marks[0].column if marks else None
    if policy is None:
        raw = column is not None and column in plan.chain()[-1].schema  # else the engine refuses
        policy = Retention.watermark() if raw else Retention.rows(DEFAULT_MAX_ROWS)
    if policy.kind != "watermark" or policy.column is not None:
        return policy
    if column is None:
        raise ConfigError(
            "Retention.watermark() needs a query with a watermark: add "
            ".with_watermark(column, delay), or use Retention.rows(n) / Retention.age(...)"
        )
    return replace(policy, column=column)


@dataclass
class _Chunk:
    batch: pa.RecordBatch
    low: int | None = None
    """``age``, ``watermark`` retention: min event time of the batch (column units),
    None if all null."""
    high: int | None = None


class UnboundedTable:
    """Append-only Arrow table with a retention policy (default: the newest
    ``DEFAULT_MAX_ROWS`` rows); safe to append and read from different threads. A
    snapshot holds whole appended batches only (never half of one), and later appends or
    evictions never change a snapshot already taken."""

    def __init__(self, schema: pa.Schema, retention: Retention | None = None) -> None:
        self.schema = schema
        self.retention = retention or Retention.rows(DEFAULT_MAX_ROWS)
        self._unit_ns = self._check_retention()
        self._lock = threading.Lock()
        self._chunks: list[_Chunk] = []
        self._rows = 0
        self._newest: int | None = None
        self.appended_rows = 0
        """Rows appended since creation."""
        self.evicted_rows = 0
        """Rows dropped by the retention policy since creation."""

    def _check_retention(self) -> int:
        column, kind = self.retention.column, self.retention.kind
        if kind == "watermark" and column is None:
            raise ConfigError("Retention.watermark() needs its column: see resolve_retention")
        if kind not in ("age", "watermark") or column is None:
            return 1
        if column not in self.schema.names:
            raise SchemaError(f"Retention.{kind} column {column!r} is not in {self.schema.names}")
        dtype = self.schema.field(column).type
        if not pa.types.is_timestamp(dtype):
            raise SchemaError(f"Retention.{kind} needs a timestamp column; {column!r} is {dtype}")
        return TIME_UNIT_NS[dtype.unit]

    @property
    def num_rows(self) -> int:
        """Rows held now."""
        return self._rows

    def append(self, batch: pa.Table | pa.RecordBatch) -> None:
        """Append (zero-copy) and apply retention. Raises SchemaError naming the first field
        that does not match (nullability and metadata are not compared)."""
        batches = batch.to_batches() if isinstance(batch, pa.Table) else [batch]
        chunks = [self._chunk(b) for b in batches if b.num_rows]
        with self._lock:
            for chunk in chunks:
                self._chunks.append(chunk)
                self._rows += chunk.batch.num_rows
                self.appended_rows += chunk.batch.num_rows
                if chunk.high is not None and (self._newest is None or chunk.high > self._newest):
                    self._newest = chunk.high
            self._apply_retention()

    def _chunk(self, batch: pa.RecordBatch) -> _Chunk:
        if batch.schema != self.schema:
            batch = pa.RecordBatch.from_arrays(batch.columns, schema=self._checked(batch.schema))
        if self.retention.kind not in ("age", "watermark") or self.retention.column is None:
            return _Chunk(batch)
        bounds = pc.min_max(batch.column(self.retention.column).cast(pa.int64()))
        return _Chunk(batch, bounds["min"].as_py(), bounds["max"].as_py())

    def _checked(self, schema: pa.Schema) -> pa.Schema:
        if schema.names != self.schema.names:
            missing = [n for n in self.schema.names if n not in schema.names]
            extra = [n for n in schema.names if n not in self.schema.names]
            raise SchemaError(
                f"appended batch columns {schema.names} do not match the table's "
                f"{self.schema.names} (missing {missing}, unexpected {extra})"
            )
        for want, got in zip(self.schema, schema, strict=True):
            if want.type != got.type:
                raise SchemaError(
                    f"appended batch field {want.name!r} is {got.type}, the table has {want.type}"
                )
        return self.schema

    def _apply_retention(self) -> None:
        policy = self.retention
        if policy.kind == "rows" and policy.max_rows is not None:
            self._keep_last(policy.max_rows)
        elif policy.kind == "age" and self._newest is not None and policy.duration_ns:
            self._keep_since(self._newest - policy.duration_ns // self._unit_ns)

    def _keep_last(self, n: int) -> None:
        while self._chunks and self._rows - self._chunks[0].batch.num_rows >= n:
            self._drop(0, self._chunks[0].batch.num_rows)
        if self._rows > n:
            first = self._chunks[0]
            extra = self._rows - n
            self._chunks[0] = _Chunk(first.batch.slice(extra))
            self._rows -= extra
            self.evicted_rows += extra

    def _drop(self, index: int, rows: int) -> None:
        del self._chunks[index]
        self._rows -= rows
        self.evicted_rows += rows

    def drop_behind(self, watermark: datetime | None) -> None:
        """``watermark`` retention: drop the rows whose event time is before ``watermark``
        (the query's, after a batch) and the rows without an event time; a no-op for other
        retentions and while the watermark is None. Cost: the batches holding such rows."""
        if self.retention.kind != "watermark" or watermark is None:
            return
        if watermark.tzinfo is None:
            watermark = watermark.replace(tzinfo=UTC)
        ns = (watermark - _EPOCH) // timedelta(microseconds=1) * 1_000
        cutoff = -(-ns // self._unit_ns)  # the first tick at or after the watermark
        with self._lock:
            self._keep_since(cutoff, keep_nulls=False)

    def _keep_since(self, cutoff: int, keep_nulls: bool = True) -> None:
        column = self.retention.column
        assert column is not None
        kept: list[_Chunk] = []
        for chunk in self._chunks:
            rows = chunk.batch.num_rows
            whole = chunk.low is not None and chunk.low >= cutoff
            if whole and (keep_nulls or not chunk.batch.column(column).null_count):
                kept.append(chunk)
                continue
            if chunk.low is None and keep_nulls:
                kept.append(chunk)
                continue
            values = chunk.batch.column(column).cast(pa.int64())
            keep = pc.fill_null(pc.greater_equal(values, cutoff), keep_nulls)
            batch = chunk.batch.filter(keep)
            if batch.num_rows:
                remaining = pc.min_max(batch.column(column).cast(pa.int64()))
                kept.append(_Chunk(batch, remaining["min"].as_py(), remaining["max"].as_py()))
            self._rows -= rows - batch.num_rows
            self.evicted_rows += rows - batch.num_rows
        self._chunks = kept

    def snapshot(self) -> pa.Table:
        """The rows held now, as one zero-copy table (whole appended batches only)."""
        with self._lock:
            batches = [c.batch for c in self._chunks]
        return pa.Table.from_batches(batches, schema=self.schema)

    def to_frame(self) -> DataFrame:
        """A batch DataFrame over a snapshot: the same query API as ``sk.read``."""
        from streamkit.io import from_arrow

        frame: DataFrame = from_arrow(self.snapshot())
        return frame

    def to_polars(self) -> pl.DataFrame:
        """A Polars frame over a snapshot (zero-copy)."""
        import polars as pl

        frame = pl.from_arrow(self.snapshot(), rechunk=False)
        assert isinstance(frame, pl.DataFrame)
        return frame

    def to_pandas(self) -> pd.DataFrame:
        """A pandas frame of a snapshot (pandas copies where its layout differs from Arrow)."""
        frame: pd.DataFrame = self.snapshot().to_pandas()
        return frame

    def __repr__(self) -> str:
        return f"UnboundedTable({self._rows} rows, {len(self._chunks)} batches, {self.retention})"
