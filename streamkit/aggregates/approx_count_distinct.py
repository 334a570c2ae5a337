"""``approx_count_distinct(col, rsd)``: HyperLogLog distinct count (see :mod:`.hll`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import polars as pl

from streamkit.aggregates import hll
from streamkit.aggregates.base import AggregateFunction

if TYPE_CHECKING:
    from streamkit.aggregates.slots import Slots


@dataclass(frozen=True)
class ApproxCountDistinct(AggregateFunction):
    """Approximate number of distinct non-null values, with relative standard error at
    most ``rsd``; state: ``2**p`` HyperLogLog registers (``Array(UInt8, 2**p)``), merged
    register-wise, so any split into micro-batches gives exactly the batch sketch."""

    rsd: float = 0.02
    name: ClassVar[str] = "approx_count_distinct"
    reads_rows: ClassVar[bool] = True

    def __post_init__(self) -> None:
        hll.precision_for(self.rsd)  # raises ValueError for an rsd outside (0, 1)

    @property
    def precision(self) -> int:
        """HyperLogLog register exponent ``p``."""
        return hll.precision_for(self.rsd)

    def result_dtype(
        self, input_dtype: pl.DataType | None, argument: str = "the input"
    ) -> pl.DataType:
        return pl.Int64()

    def inputs(self, value: pl.Expr) -> list[pl.Expr]:
        return list(hll.hash_rho(value, self.precision))

    def partial(
        self, inputs: list[str], states: list[str], input_dtype: pl.DataType | None
    ) -> list[pl.Expr]:
        return []

    def merge(self, states: list[str]) -> list[pl.Expr]:
        return []

    def finalize(self, states: list[str], input_dtype: pl.DataType | None) -> pl.Expr:
        return pl.col(states[0]).map_batches(hll.estimate, return_dtype=pl.Int64)

    def empty_state(self, input_dtype: pl.DataType | None) -> list[Any]:
        return [[0] * (1 << self.precision)]

    def build_sketch(
        self,
        rows: pl.DataFrame,
        groups: pl.DataFrame,
        keys: list[str],
        inputs: list[str],
        states: list[str],
    ) -> pl.DataFrame:
        p = self.precision
        registers = hll.build(rows, groups, keys=keys, hashes=inputs[0], rho=inputs[1], p=p)
        return groups.with_columns(pl.Series(states[0], registers, pl.Array(pl.UInt8, 1 << p)))

    def by_slots(self, input_dtype: pl.DataType | None, slots: int) -> bool:
        return slots << self.precision <= hll.MAX_DENSE_BYTES

    def slot_states(
        self, slots: Slots, inputs: list[pl.Series], input_dtype: pl.DataType | None
    ) -> list[pl.Series]:
        p = self.precision
        registers = hll.build_slots(slots, inputs[0], inputs[1], p)
        return [pl.Series(registers, dtype=pl.Array(pl.UInt8, 1 << p))]

    def merge_sketch(
        self, frame: pl.DataFrame, merged: pl.DataFrame, keys: list[str], states: list[str]
    ) -> pl.DataFrame:
        sketch = hll.merge(frame.select([*keys, states[0]]), keys, states[0])
        return merged.join(sketch, on=keys, how="left", nulls_equal=True)
