"""Partial aggregation keyed by the state store's slot, for aggregates that add up.

When every aggregate of a spec is a count, a sum or an average (states that combine by
addition), a batch's input rows whose key the store already holds need no group-by of
their own: the store hashes and looks up each row once, sorts the rows by the slot they
found, and :class:`SlotSums` adds each run of equal slots up with ``numpy.add.reduceat``
and onto the old state row by row. The result is :func:`streamkit.aggregate.merge`'s
(integer sums wrap alike; float sums may differ in the last bits, the order of additions
being another). :func:`slot_sums` returns None for any other spec, which then takes the
store's usual path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from streamkit import aggregate as K
from streamkit.aggregates.avg import Avg
from streamkit.aggregates.count import Count
from streamkit.aggregates.sum import Sum
from streamkit.streaming.state.hash_index import I64
from streamkit.windows import TimeWindow


@dataclass(frozen=True)
class _Part:
    """One state column: ``state`` adds up ``source`` (an input column; None: rows) as
    ``dtype``, or counts its non-null values (``nonnull``)."""

    state: str
    source: str | None
    nonnull: bool
    dtype: pl.DataType


def slot_sums(spec: K.AggregateSpec) -> SlotSums | None:
    """The reducer for ``spec``, or None when an aggregate does not add up or a window
    maps a row to several groups (sliding) or merges groups (sessions)."""
    if spec.window is not None and not (
        isinstance(spec.window, TimeWindow) and spec.window.is_tumbling
    ):
        return None
    parts = [_Part(K.ROWS, None, False, pl.Int64())]
    for i, agg in enumerate(spec.aggs):
        fn, names, inputs = agg.function, spec.states(i), spec.inputs(i)
        if type(fn) is Count:
            parts.append(_Part(names[0], inputs[0] if inputs else None, bool(inputs), pl.Int64()))
        elif type(fn) in {Sum, Avg}:
            total = fn.result_dtype(spec.input_dtypes[i])
            parts.append(_Part(names[0], inputs[0], False, total))
            parts.append(_Part(names[1], inputs[0], True, pl.Int64()))
        else:
            return None
    return SlotSums(parts)


class SlotSums:
    """Adds runs of rows up per slot and onto old states (see the module docstring)."""

    def __init__(self, parts: list[_Part]) -> None:
        self._parts = parts

    def add(self, old: pl.DataFrame, rows: pl.DataFrame, order: I64, starts: I64) -> pl.DataFrame:
        """``old`` (one state row per run) plus the runs of ``rows[order]`` beginning at
        ``starts`` (run ``i`` belongs to ``old``'s row ``i``): O(len(order))."""
        sizes = np.diff(np.append(starts, order.size))
        sums: dict[tuple[str | None, bool, pl.DataType], npt.NDArray[Any]] = {}
        columns = []
        for part in self._parts:
            key = (part.source, part.nonnull, part.dtype)
            if key not in sums:
                sums[key] = self._runs(rows, part, order, starts, sizes)
            mine = _numbers(old[part.state], part.dtype)
            columns.append(pl.Series(part.state, mine + sums[key], part.dtype))
        return old.with_columns(columns)

    @staticmethod
    def _runs(
        rows: pl.DataFrame, part: _Part, order: I64, starts: I64, sizes: I64
    ) -> npt.NDArray[Any]:
        if part.source is None:
            return sizes
        column = rows[part.source]
        if part.nonnull:
            if not column.null_count():
                return sizes
            values = column.is_not_null().cast(pl.Int64).to_numpy()
        else:
            values = _numbers(column, part.dtype)
        return np.add.reduceat(values[order], starts)


def _numbers(column: pl.Series, dtype: pl.DataType) -> npt.NDArray[Any]:
    """``column`` as ``dtype`` in numpy, nulls as 0 (what they add)."""
    if column.dtype != dtype:
        column = column.cast(dtype)
    if column.null_count():
        column = column.fill_null(0)
    return column.to_numpy()
