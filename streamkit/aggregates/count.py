"""``count()`` of rows and ``count(col)`` of non-null values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import polars as pl

from streamkit.aggregates.base import AggregateFunction

if TYPE_CHECKING:
    from streamkit.aggregates.slots import Slots


@dataclass(frozen=True)
class Count(AggregateFunction):
    """Number of rows (no input) or of non-null input values; state: the count."""

    name: ClassVar[str] = "count"

    def result_dtype(
        self, input_dtype: pl.DataType | None, argument: str = "the input"
    ) -> pl.DataType:
        return pl.Int64()

    def partial(
        self, inputs: list[str], states: list[str], input_dtype: pl.DataType | None
    ) -> list[pl.Expr]:
        state = pl.col(inputs[0]).count() if inputs else pl.len()
        return [state.cast(pl.Int64).alias(states[0])]

    def merge(self, states: list[str]) -> list[pl.Expr]:
        return [pl.col(states[0]).sum()]

    def combine(self, states: list[pl.Expr], others: list[pl.Expr]) -> list[pl.Expr] | None:
        return [pl.sum_horizontal(states[0], others[0])]

    def finalize(self, states: list[str], input_dtype: pl.DataType | None) -> pl.Expr:
        return pl.col(states[0])

    def empty_state(self, input_dtype: pl.DataType | None) -> list[Any]:
        return [0]

    def by_slots(self, input_dtype: pl.DataType | None, slots: int) -> bool:
        return True

    def slot_states(
        self, slots: Slots, inputs: list[pl.Series], input_dtype: pl.DataType | None
    ) -> list[pl.Series]:
        return [pl.Series(slots.count(inputs[0]) if inputs else slots.rows, dtype=pl.Int64)]
