"""Event-time window specs with Spark's semantics, and their vectorised assignment.

- ``window(col, size, slide=None, start_offset=None)``: windows ``[start, start + size)`` with
  starts on the grid ``start_offset + k * slide``; a row at ``t`` belongs to every window with
  ``start <= t < start + size`` (``ceil(size / slide)`` windows when ``size`` is a multiple of
  ``slide``). ``slide`` defaults to ``size`` (tumbling).
- ``session_window(col, gap)``: per key, a row at ``t`` starts the session ``[t, t + gap)``;
  sessions that overlap or touch merge (the next row joins when ``t_next <= last + gap``,
  as in Spark), giving ``[first, last + gap)``.

Rows with a null event time belong to no window and are dropped by windowed aggregations.
Specs are immutable; assignment is integer arithmetic on the timestamp's ticks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl

from streamkit import dtypes as T
from streamkit.durations import format_duration, parse_duration_ns, to_ticks
from streamkit.errors import PlanError, SchemaError
from streamkit.expr import Col, Expr

if TYPE_CHECKING:
    from datetime import timedelta

WINDOW_COLUMN = "window"
"""Name of the struct column ``{start, end}`` that a windowed aggregation outputs."""

BUCKET = "__bucket"
"""Internal column: the time bucket a row or partial belongs to (index for windows, ticks
for sessions)."""
WSTART = "__wstart"
"""Internal column: window start in ticks."""
WEND = "__wend"
"""Internal column: window end in ticks (exclusive)."""


def _time_dtype(column: Expr, schema: pl.Schema, what: str) -> pl.Datetime:
    dtype = column.check(schema)
    if not isinstance(dtype, pl.Datetime):
        raise SchemaError(
            f"{what} needs a timestamp column, but {column!r} has type {T.describe(dtype)}; "
            "convert it with sk.to_timestamp(...) (ISO strings) or sk.from_epoch(...) (numbers)"
        )
    return dtype


@dataclass(frozen=True)
class TimeWindow:
    """A tumbling (``slide == size``) or sliding event-time window."""

    column: Expr
    size_ns: int
    slide_ns: int
    offset_ns: int = 0

    def __post_init__(self) -> None:
        if self.slide_ns > self.size_ns:
            raise PlanError(
                f"window slide ({format_duration(self.slide_ns)}) must not exceed its size "
                f"({format_duration(self.size_ns)})"
            )

    @property
    def is_tumbling(self) -> bool:
        """True when every row belongs to exactly one window."""
        return self.size_ns == self.slide_ns

    def time_dtype(self, schema: pl.Schema) -> pl.Datetime:
        """The event-time type; raises SchemaError for a non-timestamp column."""
        dtype = _time_dtype(self.column, schema, "window()")
        self.ticks(dtype)
        return dtype

    def ticks(self, dtype: pl.Datetime) -> tuple[int, int, int, int]:
        """(size, slide, offset, bucket) in ticks of the column's unit."""
        unit = dtype.time_unit
        size = to_ticks(self.size_ns, unit, "window size")
        slide = to_ticks(self.slide_ns, unit, "window slide")
        offset = to_ticks(self.offset_ns, unit, "window start offset") % slide
        return size, slide, offset, math.gcd(size, slide)

    def bucket_expr(self, dtype: pl.Datetime) -> pl.Expr:
        """Index of the bucket of width gcd(size, slide) holding each row.

        All rows of one bucket belong to exactly the same windows, so aggregates can be
        pre-combined per bucket before windows are assigned. Indices (not ticks) keep the
        range of group codes small.
        """
        _, _, offset, bucket = self.ticks(dtype)
        t = self.column.to_polars().dt.epoch(dtype.time_unit)
        return (t - offset if offset else t) // bucket  # no pass over the rows for "- 0"

    def expand(
        self, frame: pl.DataFrame, dtype: pl.Datetime, last_flag: str | None = None
    ) -> pl.DataFrame:
        """Replace ``__bucket`` by ``__wstart``/``__wend``, one row per window of each bucket;
        ``last_flag`` names a boolean column added, True on the row of each bucket's last
        window (the latest end: its rows are late exactly when that window is)."""
        size, slide, offset, bucket = self.ticks(dtype)
        frame = frame.with_columns(pl.col(BUCKET) * bucket + offset)
        last = ((pl.col(BUCKET) - offset) // slide) * slide + offset
        n = -(-size // slide)
        if n == 1:
            frame = frame.with_columns(last.alias(WSTART))
        else:
            starts = pl.concat_list([last - k * slide for k in range(n)]).alias(WSTART)
            frame = frame.with_columns(starts).explode(WSTART)
            frame = frame.filter(pl.col(WSTART) + size > pl.col(BUCKET))
        if last_flag is not None:
            frame = frame.with_columns((pl.col(WSTART) == last).alias(last_flag))
        return frame.drop(BUCKET).with_columns((pl.col(WSTART) + size).alias(WEND))

    def __repr__(self) -> str:
        text = f"window({self.column!r}, {format_duration(self.size_ns)}"
        if not self.is_tumbling:
            text += f", slide={format_duration(self.slide_ns)}"
        if self.offset_ns:
            text += f", start_offset={format_duration(self.offset_ns)}"
        return text + ")"


@dataclass(frozen=True)
class SessionWindow:
    """Per-key sessions: a row joins when ``t <= last + gap``; a session is
    ``[first, last + gap)``."""

    column: Expr
    gap_ns: int

    def time_dtype(self, schema: pl.Schema) -> pl.Datetime:
        """The event-time type; raises SchemaError for a non-timestamp column."""
        dtype = _time_dtype(self.column, schema, "session_window()")
        self.gap_ticks(dtype)
        return dtype

    def gap_ticks(self, dtype: pl.Datetime) -> int:
        """The gap in ticks of the column's unit."""
        return to_ticks(self.gap_ns, dtype.time_unit, "session gap")

    def bucket_expr(self, dtype: pl.Datetime) -> pl.Expr:
        """The event time in ticks (rows with equal times and keys pre-combine)."""
        return self.column.to_polars().dt.epoch(dtype.time_unit)

    def __repr__(self) -> str:
        return f"session_window({self.column!r}, {format_duration(self.gap_ns)})"


WindowSpec = TimeWindow | SessionWindow


def last_window_end(spec: WindowSpec, dtype: pl.Datetime) -> pl.Expr:
    """Per row, in ticks: the latest end among the windows the row belongs to (for a
    session, the end of the row's own session ``t + gap``). Null for a null event time.

    A stateful operator drops a row as late exactly when this is <= the watermark."""
    t = spec.column.to_polars().dt.epoch(dtype.time_unit)
    if isinstance(spec, SessionWindow):
        return t + spec.gap_ticks(dtype)
    size, slide, offset, _ = spec.ticks(dtype)
    return (t - offset) // slide * slide + offset + size


def key_end(column: str, dtype: pl.DataType) -> pl.Expr:
    """A group key carrying the watermark as an event time in ticks: a window struct's
    ``end`` (Spark's rule for a window struct carrying it), else the timestamp itself."""
    key = pl.col(column)
    return (key.struct.field("end") if isinstance(dtype, pl.Struct) else key).to_physical()


def window(
    column: str | Expr,
    size: str | timedelta,
    slide: str | timedelta | None = None,
    start_offset: str | timedelta | None = None,
) -> TimeWindow:
    """A tumbling window (``slide=None``) or a sliding window on event time ``column``."""
    col = Col(column) if isinstance(column, str) else column
    size_ns = parse_duration_ns(size)
    slide_ns = parse_duration_ns(slide) if slide is not None else size_ns
    offset_ns = parse_duration_ns(start_offset) if start_offset is not None else 0
    return TimeWindow(col, size_ns, slide_ns, offset_ns)


def session_window(column: str | Expr, gap: str | timedelta) -> SessionWindow:
    """A session window on event time ``column`` with inactivity ``gap``."""
    col = Col(column) if isinstance(column, str) else column
    return SessionWindow(col, parse_duration_ns(gap))
