"""Time-of-day values for :class:`streamkit.streaming._json_schema.TypedParser` (private).

pyarrow's JSON reader has no string-to-time conversion, and it stores any integer in a
``time32``/``time64`` field as is, even one outside the day (``86400`` seconds reads as
``00:00:00`` of no day at all). So time fields are read as strings or int64 and converted
here, by Arrow kernels, refusing what is not a time of day.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

PER_DAY = {"s": 86_400, "ms": 86_400_000, "us": 86_400_000_000, "ns": 86_400_000_000_000}
"""Ticks in a day, per unit."""

_ISO_TIME = r"^\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?$"
_EPOCH_DAY = pa.scalar("1970-01-01T")
_NOTHING = pa.scalar("")


def expected(dtype: pa.DataType) -> str:
    """What a field of time type ``dtype`` accepts (for reasons)."""
    unit = dtype.unit
    return (
        f"an ISO time (HH:MM, HH:MM:SS or HH:MM:SS.fraction within {unit}) or an integer "
        f"count of {unit} since midnight (0 to {PER_DAY[unit] - 1})"
    )


def to_time(column: pa.ChunkedArray, dtype: pa.DataType) -> pa.ChunkedArray | None:
    """``column`` (strings or int64, nulls kept) as ``dtype``; None when a value is not a
    time of day: a string not of the form ``HH:MM[:SS[.f]]``, an hour past 23, a
    fraction finer than the unit, or an integer outside ``0 <= n < PER_DAY[unit]``."""
    unit = dtype.unit
    if pa.types.is_string(column.type):
        if not _all(pc.match_substring_regex(column, _ISO_TIME)):
            return None
        stamps = pc.binary_join_element_wise(_EPOCH_DAY, column, _NOTHING)
        try:
            ticks = stamps.cast(pa.timestamp(unit)).cast(pa.int64())
        except pa.ArrowInvalid:
            return None
    else:
        ticks = column
        in_day = pc.and_(pc.greater_equal(ticks, 0), pc.less(ticks, PER_DAY[unit]))
        if not _all(in_day):
            return None
    width = pa.int32() if dtype.bit_width == 32 else pa.int64()
    result: pa.ChunkedArray = ticks.cast(width).cast(dtype)
    return result


def _all(flags: pa.ChunkedArray) -> bool:
    """True when no non-null flag is false (so for no values, or only nulls)."""
    return bool(pc.all(flags, skip_nulls=True, min_count=0).as_py())
