"""``min(col)`` and ``max(col)``: the smallest / largest non-null value."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import polars as pl

from streamkit import dtypes as T
from streamkit.aggregates.base import AggregateFunction
from streamkit.errors import SchemaError


def _orderable(name: str, input_dtype: pl.DataType | None) -> pl.DataType:
    assert input_dtype is not None, f"{name}() needs an input column"
    if isinstance(input_dtype, pl.List | pl.Struct | pl.Array):
        raise SchemaError(f"{name}() cannot order values of type {T.describe(input_dtype)}")
    return input_dtype


@dataclass(frozen=True)
class Min(AggregateFunction):
    """Smallest non-null value, of the input's type; state: that value."""

    name: ClassVar[str] = "min"

    def result_dtype(
        self, input_dtype: pl.DataType | None, argument: str = "the input"
    ) -> pl.DataType:
        return _orderable(self.name, input_dtype)

    def partial(
        self, inputs: list[str], states: list[str], input_dtype: pl.DataType | None
    ) -> list[pl.Expr]:
        return [pl.col(inputs[0]).min().alias(states[0])]

    def merge(self, states: list[str]) -> list[pl.Expr]:
        return [pl.col(states[0]).min()]

    def finalize(self, states: list[str], input_dtype: pl.DataType | None) -> pl.Expr:
        return pl.col(states[0])

    def empty_state(self, input_dtype: pl.DataType | None) -> list[Any]:
        return [None]


@dataclass(frozen=True)
class Max(AggregateFunction):
    """Largest non-null value, of the input's type; state: that value."""

    name: ClassVar[str] = "max"

    def result_dtype(
        self, input_dtype: pl.DataType | None, argument: str = "the input"
    ) -> pl.DataType:
        return _orderable(self.name, input_dtype)

    def partial(
        self, inputs: list[str], states: list[str], input_dtype: pl.DataType | None
    ) -> list[pl.Expr]:
        return [pl.col(inputs[0]).max().alias(states[0])]

    def merge(self, states: list[str]) -> list[pl.Expr]:
        return [pl.col(states[0]).max()]

    def finalize(self, states: list[str], input_dtype: pl.DataType | None) -> pl.Expr:
        return pl.col(states[0])

    def empty_state(self, input_dtype: pl.DataType | None) -> list[Any]:
        return [None]
