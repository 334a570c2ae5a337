"""``count_distinct(col)``: exact number of distinct non-null values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import polars as pl

from streamkit.aggregates.base import AggregateFunction


@dataclass(frozen=True)
class CountDistinct(AggregateFunction):
    """Exact distinct count; state: the list of distinct values (grows with them)."""

    name: ClassVar[str] = "count"

    def label(self, argument: str) -> str:
        return f"count(DISTINCT {argument})"

    def result_dtype(
        self, input_dtype: pl.DataType | None, argument: str = "the input"
    ) -> pl.DataType:
        return pl.Int64()

    def partial(
        self, inputs: list[str], states: list[str], input_dtype: pl.DataType | None
    ) -> list[pl.Expr]:
        return [pl.col(inputs[0]).drop_nulls().unique().alias(states[0])]

    def merge(self, states: list[str]) -> list[pl.Expr]:
        return [pl.col(states[0]).explode().drop_nulls().unique()]

    def finalize(self, states: list[str], input_dtype: pl.DataType | None) -> pl.Expr:
        return pl.col(states[0]).list.len().cast(pl.Int64)

    def empty_state(self, input_dtype: pl.DataType | None) -> list[Any]:
        return [[]]
