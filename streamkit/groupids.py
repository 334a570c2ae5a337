"""Vectorised group ids: map each row's key combination to an integer slot.

Keys are coded column by column (dictionary codes for strings, offsets for integers and
timestamps, dense ranks otherwise) and combined in mixed radix. Slots are sparse when key
ranges are sparse; callers compact them as needed.
"""

from __future__ import annotations

import numpy as np
import polars as pl

_MAX_SLOTS = 1 << 40


def _codes(series: pl.Series) -> tuple[np.ndarray, int]:
    """Non-negative int64 codes (nulls get the last code) and the number of codes."""
    dtype = series.dtype
    if isinstance(dtype, pl.String):
        series = series.cast(pl.Categorical)
        dtype = series.dtype
    if isinstance(dtype, pl.Categorical | pl.Enum):
        series = series.to_physical()
    elif dtype.is_integer() or isinstance(dtype, pl.Boolean | pl.Datetime | pl.Date):
        series = series.cast(pl.Int64)
    else:
        series = series.rank("dense")
    ints = series.cast(pl.Int64)
    lo, hi = ints.min(), ints.max()
    if lo is None or hi is None:
        return np.zeros(len(series), dtype=np.int64), 1
    assert isinstance(lo, int)
    assert isinstance(hi, int)
    span = hi - lo + 1
    if span > _MAX_SLOTS:
        ints = series.rank("dense").cast(pl.Int64) - 1
        top = ints.max()
        assert isinstance(top, int)
        lo, span = 0, top + 1
    codes = (ints - lo).fill_null(span).to_numpy()
    return codes.astype(np.int64, copy=False), span + int(ints.null_count() > 0)


def group_ids(frame: pl.DataFrame, keys: list[str]) -> tuple[np.ndarray, int, np.ndarray]:
    """(slot per row, number of slots, first row index per slot or -1 when the slot is empty)."""
    n = frame.height
    gid = np.zeros(n, dtype=np.int64)
    slots = 1
    for key in keys:
        codes, card = _codes(frame[key])
        if slots * card > _MAX_SLOTS:
            _, gid = np.unique(gid, return_inverse=True)
            slots = int(gid.max()) + 1 if n else 1
        gid = gid * card + codes
        slots *= card
    if slots > max(4 * n, 1 << 20):
        _, gid = np.unique(gid, return_inverse=True)
        slots = int(gid.max()) + 1 if n else 1
    first = np.full(slots, -1, dtype=np.int64)
    first[gid[::-1]] = np.arange(n - 1, -1, -1, dtype=np.int64)
    return gid, slots, first
