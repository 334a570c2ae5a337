"""``avg(col)`` (alias ``mean``): mean of non-null values, null when there are none."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import polars as pl

from streamkit._lazy import lazy_module
from streamkit.aggregates import slots as S
from streamkit.aggregates.base import AggregateFunction
from streamkit.aggregates.sum import numeric_input

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_module("numpy")


@dataclass(frozen=True)
class Avg(AggregateFunction):
    """Mean of non-null values as Float64; state: the Float64 sum and the count."""

    name: ClassVar[str] = "avg"
    state_parts: ClassVar[tuple[str, ...]] = ("s", "c")

    def result_dtype(
        self, input_dtype: pl.DataType | None, argument: str = "the input"
    ) -> pl.DataType:
        numeric_input(self.name, input_dtype, argument)
        return pl.Float64()

    def partial(
        self, inputs: list[str], states: list[str], input_dtype: pl.DataType | None
    ) -> list[pl.Expr]:
        c = pl.col(inputs[0])
        total = c.cast(pl.Float64).sum()
        return [total.alias(states[0]), c.count().cast(pl.Int64).alias(states[1])]

    def merge(self, states: list[str]) -> list[pl.Expr]:
        return [pl.col(n).sum() for n in states]

    def combine(self, states: list[pl.Expr], others: list[pl.Expr]) -> list[pl.Expr] | None:
        return [pl.sum_horizontal(a, b) for a, b in zip(states, others, strict=True)]

    def finalize(self, states: list[str], input_dtype: pl.DataType | None) -> pl.Expr:
        s, c = pl.col(states[0]), pl.col(states[1])
        return pl.when(c > 0).then(s / c).otherwise(None)

    def empty_state(self, input_dtype: pl.DataType | None) -> list[Any]:
        return [None, 0]

    def by_slots(self, input_dtype: pl.DataType | None, slots: int) -> bool:
        return input_dtype is not None and S.summable(input_dtype)

    def slot_states(
        self, slots: S.Slots, inputs: list[pl.Series], input_dtype: pl.DataType | None
    ) -> list[pl.Series]:
        assert input_dtype is not None
        return slots.sum_states(inputs[0], np.float64)
