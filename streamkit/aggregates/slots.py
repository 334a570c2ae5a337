"""Dense group slots: each row's group as an integer, and per-slot sums and counts.

A hash group-by finds the groups of a chunk and then reduces each aggregate's input per
group. When the group keys have a compact code (integers, booleans, dates, timestamps,
categoricals: see :class:`~streamkit.groupids.GroupCoder`) and there are no more possible
key combinations than rows, the code itself numbers the groups: :func:`fit` gives every row
its slot in one pass per key column, counts the rows per slot, and the aggregates reduce
their inputs with ``np.add.at`` over the slot ids (the HyperLogLog sketch reuses the same
ids for its register cells). The slots that received rows are the groups; their key
values are decoded from the slot numbers, or for categoricals gathered from one row of
each (:meth:`Slots.keys`).

Guarantees: counts and integer sums are exact (int64, wrapping on overflow as Polars' sum
does); float sums add each group's values in row order starting from 0.0, whatever the
thread count (Polars' group-by adds in an order that depends on its threads, so the two
may differ in the last bits: plain sequential adding, as Spark's within a partition, drifts
further from the exact sum on long float columns, e.g. 2.8e-14 relative on 4M lognormal
values, where Polars' result was exact); sketches are the group-by path's, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import polars as pl

from streamkit._lazy import lazy_module
from streamkit.groupids import GroupCoder, numpy_pieces

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_module("numpy")


_DECODABLE = (
    pl.Int8 | pl.Int16 | pl.Int32 | pl.Int64 | pl.UInt8 | pl.UInt16 | pl.UInt32 | pl.UInt64
    | pl.Boolean | pl.Datetime | pl.Date | pl.Categorical | pl.Enum
)  # fmt: skip


_SUMMABLE = (
    pl.Int8 | pl.Int16 | pl.Int32 | pl.Int64 | pl.UInt8 | pl.UInt16 | pl.UInt32
    | pl.Float32 | pl.Float64
)  # fmt: skip


def summable(dtype: pl.DataType) -> bool:
    """Input types :meth:`Slots.total` sums as ``sum``/``avg`` do (UInt64 is left to the
    group-by, whose cast to Int64 refuses values above the Int64 range)."""
    return isinstance(dtype, _SUMMABLE)


def _decodable(dtype: pl.DataType) -> bool:
    """Key types :class:`GroupCoder` codes into dense slots."""
    return isinstance(dtype, _DECODABLE)


ROW_BLOCK = 1 << 16
"""Rows per step of :meth:`Slots._some_rows`."""


@dataclass
class Slots:
    """The slot of every row of one chunk and the rows per slot that received any."""

    coder: GroupCoder
    ids: np.ndarray
    """Slot (``0 <= id < size``) of each row: uint32 (as :meth:`GroupCoder.cells` gives
    it, the cheaper index for numpy's scatters) when ``size`` allows, else int64."""
    occupied: np.ndarray
    """The slots holding at least one row, ascending: the chunk's groups, in output order."""
    rows: np.ndarray
    """Rows (int64) per occupied slot."""
    _memo: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Number of possible slots (ids are below it)."""
        return self.coder.slots

    def count(self, column: pl.Series) -> np.ndarray:
        """Non-null values of ``column`` (a row per row of the chunk) per occupied slot."""
        if not column.null_count():
            return self.rows
        key = (column.name, "count")
        if key not in self._memo:
            valid = column.is_not_null().to_numpy()
            counts = np.zeros(self.size, dtype=np.int64)
            np.add.at(counts, self.ids[valid], 1)
            self._memo[key] = counts[self.occupied]
        return self._memo[key]

    def total(self, column: pl.Series, dtype: type[np.int64] | type[np.float64]) -> np.ndarray:
        """Sum per occupied slot of the non-null values of ``column``, each cast to
        ``dtype`` and added in row order from zero (int64 wraps on overflow)."""
        key = (column.name, np.dtype(dtype).str)
        if key not in self._memo:
            filled = column.fill_null(0) if column.null_count() else column
            out = np.zeros(self.size, dtype=dtype)
            with np.errstate(invalid="ignore", over="ignore"):  # inf + -inf: NaN, as Polars
                for start, values in numpy_pieces(filled):  # row order, no copy of chunks
                    ids = self.ids[start : start + values.size]
                    np.add.at(out, ids, values.astype(dtype, copy=False))
            self._memo[key] = out[self.occupied]
        return self._memo[key]

    def sum_states(
        self, column: pl.Series, dtype: type[np.int64] | type[np.float64]
    ) -> list[pl.Series]:
        """The states of ``sum`` and ``avg`` (``s``, ``c``) per occupied slot: the
        :meth:`total` of ``column`` in ``dtype`` and its non-null :meth:`count` as Int64."""
        return [pl.Series(self.total(column, dtype)), pl.Series(self.count(column), dtype=pl.Int64)]

    def keys(self, frame: pl.DataFrame) -> list[pl.Series]:
        """The key columns (typed as in ``frame``, which the slots were fitted on) of the
        occupied slots: decoded from the slot numbers, except categoricals, whose values
        are gathered from one row of each slot (decoding them would read every category
        the process holds, not the chunk's)."""
        codes, rest = [], self.occupied
        for card in reversed(self.coder.cards):  # mixed radix: the first key is the highest
            codes.append(rest % card)
            rest = rest // card
        out = []
        coded = zip(
            self.coder.keys, reversed(codes), self.coder.lows, self.coder.cards, strict=True
        )
        for key, code, low, card in coded:
            dtype = frame.schema[key]
            if isinstance(dtype, pl.Categorical):
                out.append(frame[key].gather(self._some_rows()))
                continue
            physical = pl.Series(key, code + low).scatter(np.flatnonzero(code == card - 1), None)
            out.append(_from_physical(physical, dtype))
        return out

    def _some_rows(self) -> pl.Series:
        """A row of each occupied slot (the rows of a slot share their keys), written
        :data:`ROW_BLOCK` rows at a time: no row-number array as long as the chunk (a
        fresh 8 MB per 1Mi-row chunk cost more in page faults than the writes)."""
        some_row = np.empty(self.size, dtype=np.int64)
        numbers = np.arange(min(ROW_BLOCK, self.ids.size), dtype=np.int64)
        for start in range(0, self.ids.size, ROW_BLOCK):
            block = self.ids[start : start + ROW_BLOCK]
            some_row[block] = numbers[: block.size] + start
        return pl.Series(some_row[self.occupied])


def _from_physical(physical: pl.Series, dtype: pl.DataType) -> pl.Series:
    """Int64 codes (as :class:`GroupCoder` reads them) back to values of ``dtype`` (not a
    categorical)."""
    if isinstance(dtype, pl.UInt64):
        return physical.cast(dtype, wrap_numerical=True)
    if isinstance(dtype, pl.Enum):  # the enum's own categories, in code order
        return dtype.categories.gather(physical.cast(pl.UInt32)).cast(dtype).alias(physical.name)
    return physical.cast(dtype)


def fit(frame: pl.DataFrame, keys: list[str], max_slots: int) -> Slots | None:
    """Slots for the rows of ``frame`` grouped by ``keys``; None when a key type can't be
    decoded or there are more than ``max_slots`` possible key combinations."""
    if not all(_decodable(frame.schema[k]) for k in keys):
        return None
    coder = GroupCoder.fit(frame, keys)
    if coder is None or coder.slots > max_slots:
        return None
    ids = coder.cells(frame)
    rows = np.zeros(coder.slots, dtype=np.int64)
    np.add.at(rows, ids, 1)  # no int64 copy of the ids, unlike np.bincount
    occupied = np.flatnonzero(rows)
    return Slots(coder, ids, occupied, rows[occupied].astype(np.int64, copy=False))
