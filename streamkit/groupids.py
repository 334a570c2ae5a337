"""Vectorised group ids: map each row's key combination to an integer slot.

Keys are coded column by column (dictionary codes for strings and categoricals, offsets for
integers, booleans and timestamps, dense ranks otherwise) and combined in mixed radix, all
as Polars expressions. A :class:`GroupCoder` fitted on one frame codes any other frame with
the same key columns consistently (e.g. the aggregated groups of the frame it was fitted
on), so sketches built per slot can be looked up per group without a join.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl

from streamkit._lazy import lazy_module

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_module("numpy")

_MAX_SLOTS = 1 << 40


def _code_source(dtype: pl.DataType, name: str) -> pl.Expr | None:
    """An Int64 expression whose distinct values identify the key's values, or None."""
    col = pl.col(name)
    if isinstance(dtype, pl.String):
        return col.cast(pl.Categorical).to_physical().cast(pl.Int64)
    if isinstance(dtype, pl.Categorical | pl.Enum):
        return col.to_physical().cast(pl.Int64)
    if isinstance(dtype, pl.UInt64):  # two's complement view: distinct stays distinct
        return col.cast(pl.Int64, wrap_numerical=True)
    if dtype.is_integer() or isinstance(dtype, pl.Boolean | pl.Datetime | pl.Date):
        return col.cast(pl.Int64)
    return None


@dataclass(frozen=True)
class GroupCoder:
    """Mixed-radix coding of ``keys``: slot = sum(code_k * stride_k), codes in [0, card_k)."""

    keys: tuple[str, ...]
    sources: tuple[pl.Expr, ...]
    lows: tuple[int, ...]
    cards: tuple[int, ...]
    slots: int

    @classmethod
    def fit(cls, frame: pl.DataFrame, keys: list[str]) -> GroupCoder | None:
        """A coder for ``frame``'s keys, or None when they can't be coded compactly
        (unorderable types or more than 2**40 slots): then use :func:`group_ids`."""
        sources = [_code_source(frame.schema[k], k) for k in keys]
        if any(s is None for s in sources):
            return None
        lows, cards, slots = [], [], 1
        for key, source in zip(keys, sources, strict=True):
            assert source is not None
            lo, hi = _code_range(frame, key, source)
            card = hi - lo + 2  # the last code is null
            lows.append(lo)
            cards.append(card)
            slots *= card
        if slots > _MAX_SLOTS:
            return None
        return cls(
            tuple(keys),
            tuple(s for s in sources if s is not None),
            tuple(lows),
            tuple(cards),
            slots,
        )

    def ids(self, frame: pl.DataFrame) -> np.ndarray:
        """The slot (int64) of each row of ``frame``; frames must share the key columns."""
        return self.cells(frame, wide=True)

    def cells(
        self,
        frame: pl.DataFrame,
        scale: int = 1,
        plus: np.ndarray | None = None,
        *,
        wide: bool = False,
    ) -> np.ndarray:
        """``slot * scale + plus`` per row of ``frame`` (``plus`` below ``scale``): uint32
        when every such value is below ``2**32`` and not ``wide``, else int64. One output
        array, computed in place (uint32's modular arithmetic is exact when the result fits)."""
        small = self.slots * scale <= 1 << 32 and (plus is None or plus.dtype.itemsize <= 4)
        dtype = np.dtype(np.uint32 if small and not wide else np.int64)
        out = np.empty(frame.height, dtype=dtype)
        if not self.keys:
            out[:] = 0
        elif not self._cells_numpy(frame, out):
            expr: pl.Expr | None = None
            for src, lo, card in zip(self.sources, self.lows, self.cards, strict=True):
                code = (src - lo).fill_null(card - 1)
                expr = code if expr is None else expr * card + code
            assert expr is not None
            out[:] = frame.select(expr.alias("gid")).to_series().to_numpy()
        if scale != 1:
            np.multiply(out, _const(scale, dtype), out=out, casting="unsafe")
        if plus is not None:
            np.add(out, plus, out=out, casting="unsafe")
        return out

    def _cells_numpy(self, frame: pl.DataFrame, out: np.ndarray) -> bool:
        """Slots into ``out`` in the common case without nulls, in numpy on the columns'
        physical values; False (``out`` untouched) when a key needs the Polars path."""
        columns = []
        for key in self.keys:
            col = frame[key]
            if col.null_count() or isinstance(col.dtype, pl.String):
                return False
            if isinstance(col.dtype, pl.Categorical | pl.Enum):
                col = col.to_physical()
            elif isinstance(col.dtype, pl.Boolean):
                col = col.cast(pl.Int8)
            elif not col.dtype.is_integer():
                return False
            columns.append(numpy_pieces(col))
        # every operation in ``out``'s own type (a mixed-type ufunc computes in int64 and
        # casts through a buffer: about twice the CPU); casts wrap, like the arithmetic
        for i, (pieces, lo, card) in enumerate(zip(columns, self.lows, self.cards, strict=True)):
            for start, raw in pieces:
                # uint64 with int64 would promote to float: reinterpret (wraps like astype)
                values = raw.view(np.int64) if raw.dtype == np.uint64 else raw
                part = out[start : start + values.size]
                if i == 0:
                    np.copyto(part, values, casting="unsafe")
                else:
                    np.multiply(part, _const(card, out.dtype), out=part)
                    np.add(part, values.astype(out.dtype, copy=False), out=part)
                np.subtract(part, _const(lo, out.dtype), out=part)
        return True


def _code_range(frame: pl.DataFrame, key: str, source: pl.Expr) -> tuple[int, int]:
    """(min, max) of a key's codes, ``source``'s values; (0, -1) when it has none. From the
    column's physical values where they order as the codes do (no cast of the column)."""
    column = frame[key]
    if isinstance(column.dtype, pl.String | pl.UInt64):
        lo, hi = frame.select(source.min().alias("lo"), source.max().alias("hi")).row(0)
    elif isinstance(column.dtype, pl.Boolean):
        lo, hi = column.min(), column.max()
    else:
        physical = column.to_physical()
        lo, hi = physical.min(), physical.max()
    return (0, -1) if lo is None or hi is None else (int(lo), int(hi))


def numpy_pieces(column: pl.Series) -> list[tuple[int, np.ndarray]]:
    """(first row, values) of each chunk of ``column`` (numeric, no nulls), without the
    copy ``to_numpy`` makes of a column in several chunks (a frame computed by Polars
    usually is: one chunk per thread's share)."""
    pieces, start = [], 0
    for chunk in column.get_chunks():
        values = chunk.to_numpy()
        pieces.append((start, values))
        start += values.size
    return pieces


def _const(value: int, dtype: np.dtype) -> np.generic:
    """``value`` as a ``dtype`` scalar; modulo 2**32 for uint32 (ring arithmetic)."""
    if dtype == np.uint32:
        return np.uint32(value % (1 << 32))
    return np.int64(value)


def group_ids(frame: pl.DataFrame, keys: list[str]) -> np.ndarray:
    """Dense group ids 0..G-1 for any key types (sort-based; for small frames)."""
    if not keys:
        return np.zeros(frame.height, dtype=np.int64)
    ranked = frame.select(pl.struct(keys).rank("dense").cast(pl.Int64) - 1).to_series()
    return ranked.to_numpy()
