"""``sum(col)``: sum of non-null values, null when there are none."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import polars as pl

from streamkit import dtypes as T
from streamkit._lazy import lazy_module
from streamkit.aggregates import slots as S
from streamkit.aggregates.base import AggregateFunction
from streamkit.errors import SchemaError

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_module("numpy")


def numeric_input(
    name: str, input_dtype: pl.DataType | None, argument: str = "the input"
) -> pl.DataType:
    """``input_dtype`` when it is numeric; raises SchemaError otherwise."""
    assert input_dtype is not None, f"{name}() needs an input column"
    if not T.is_numeric(input_dtype):
        raise SchemaError(
            f"{name}() needs a numeric column, but {argument} has type "
            f"{T.describe(input_dtype)}; cast it with .cast('float64') or use count()/min()/max()"
        )
    return input_dtype


@dataclass(frozen=True)
class Sum(AggregateFunction):
    """Sum of non-null values (Int64 for integers, Float64 otherwise); state: the sum and
    the non-null count (a group of nulls sums to null, as in Spark)."""

    name: ClassVar[str] = "sum"
    state_parts: ClassVar[tuple[str, ...]] = ("s", "c")

    def result_dtype(
        self, input_dtype: pl.DataType | None, argument: str = "the input"
    ) -> pl.DataType:
        dtype = numeric_input(self.name, input_dtype, argument)
        return pl.Int64() if dtype.is_integer() else pl.Float64()

    def partial(
        self, inputs: list[str], states: list[str], input_dtype: pl.DataType | None
    ) -> list[pl.Expr]:
        c = pl.col(inputs[0])
        total = c.cast(self.result_dtype(input_dtype)).sum()
        return [total.alias(states[0]), c.count().cast(pl.Int64).alias(states[1])]

    def merge(self, states: list[str]) -> list[pl.Expr]:
        return [pl.col(n).sum() for n in states]

    def combine(self, states: list[pl.Expr], others: list[pl.Expr]) -> list[pl.Expr] | None:
        return [pl.sum_horizontal(a, b) for a, b in zip(states, others, strict=True)]

    def finalize(self, states: list[str], input_dtype: pl.DataType | None) -> pl.Expr:
        s, c = pl.col(states[0]), pl.col(states[1])
        return pl.when(c > 0).then(s).otherwise(None)

    def empty_state(self, input_dtype: pl.DataType | None) -> list[Any]:
        return [None, 0]

    def by_slots(self, input_dtype: pl.DataType | None, slots: int) -> bool:
        return input_dtype is not None and S.summable(input_dtype)

    def slot_states(
        self, slots: S.Slots, inputs: list[pl.Series], input_dtype: pl.DataType | None
    ) -> list[pl.Series]:
        assert input_dtype is not None
        return slots.sum_states(inputs[0], np.int64 if input_dtype.is_integer() else np.float64)
