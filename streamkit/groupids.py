"""Vectorised group ids: map each row's key combination to an integer slot.

Keys are coded column by column (dictionary codes for strings and categoricals, offsets for
integers, booleans and timestamps, dense ranks otherwise) and combined in mixed radix, all
as Polars expressions. A :class:`GroupCoder` fitted on one frame codes any other frame with
the same key columns consistently (e.g. the aggregated groups of the frame it was fitted
on), so sketches built per slot can be looked up per group without a join.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

_MAX_SLOTS = 1 << 40


def _code_source(dtype: pl.DataType, name: str) -> pl.Expr | None:
    """An Int64 expression whose distinct values identify the key's values, or None."""
    col = pl.col(name)
    if isinstance(dtype, pl.String):
        return col.cast(pl.Categorical).to_physical().cast(pl.Int64)
    if isinstance(dtype, pl.Categorical | pl.Enum):
        return col.to_physical().cast(pl.Int64)
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
        exprs = [e for s in sources if s is not None for e in (s.min(), s.max())]
        stats = frame.select(*[e.alias(f"_{i}") for i, e in enumerate(exprs)]) if exprs else None
        lows, cards, slots = [], [], 1
        for k in range(len(keys)):
            lo = stats[0, 2 * k] if stats is not None else None
            hi = stats[0, 2 * k + 1] if stats is not None else None
            lo, hi = (0, -1) if lo is None or hi is None else (int(lo), int(hi))
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
        if not self.keys:
            return np.zeros(frame.height, dtype=np.int64)
        fast = self._ids_numpy(frame)
        if fast is not None:
            return fast
        expr: pl.Expr | None = None
        for src, lo, card in zip(self.sources, self.lows, self.cards, strict=True):
            code = (src - lo).fill_null(card - 1)
            expr = code if expr is None else expr * card + code
        assert expr is not None
        return frame.select(expr.alias("gid")).to_series().to_numpy()

    def _ids_numpy(self, frame: pl.DataFrame) -> np.ndarray | None:
        """The common case without nulls, in numpy on the columns' physical values."""
        gid: np.ndarray | None = None
        for key, lo, card in zip(self.keys, self.lows, self.cards, strict=True):
            col = frame[key]
            if col.null_count() or isinstance(col.dtype, pl.String):
                return None
            if isinstance(col.dtype, pl.Categorical | pl.Enum):
                col = col.to_physical()
            elif isinstance(col.dtype, pl.Boolean):
                col = col.cast(pl.Int8)
            elif not col.dtype.is_integer():
                return None
            code = col.to_numpy().astype(np.int64, copy=False) - lo
            gid = code if gid is None else gid * card + code
        return gid


def group_ids(frame: pl.DataFrame, keys: list[str]) -> np.ndarray:
    """Dense group ids 0..G-1 for any key types (sort-based; for small frames)."""
    if not keys:
        return np.zeros(frame.height, dtype=np.int64)
    ranked = frame.select(pl.struct(keys).rank("dense").cast(pl.Int64) - 1).to_series()
    return ranked.to_numpy()
