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
class _Extremum(AggregateFunction):
    """Smallest or largest non-null value (by ``name``), of the input's type; state: that
    value, merged with the same reduction."""

    def result_dtype(
        self, input_dtype: pl.DataType | None, argument: str = "the input"
    ) -> pl.DataType:
        return _orderable(self.name, input_dtype)

    def _reduce(self, column: str) -> pl.Expr:
        expr = pl.col(column)
        return expr.min() if self.name == "min" else expr.max()

    def partial(
        self, inputs: list[str], states: list[str], input_dtype: pl.DataType | None
    ) -> list[pl.Expr]:
        return [self._reduce(inputs[0]).alias(states[0])]

    def merge(self, states: list[str]) -> list[pl.Expr]:
        return [self._reduce(states[0])]

    def combine(self, states: list[pl.Expr], others: list[pl.Expr]) -> list[pl.Expr] | None:
        pick = pl.min_horizontal if self.name == "min" else pl.max_horizontal
        return [pick(states[0], others[0])]

    def finalize(self, states: list[str], input_dtype: pl.DataType | None) -> pl.Expr:
        return pl.col(states[0])

    def empty_state(self, input_dtype: pl.DataType | None) -> list[Any]:
        return [None]


@dataclass(frozen=True)
class Min(_Extremum):
    """Smallest non-null value, of the input's type; state: that value."""

    name: ClassVar[str] = "min"


@dataclass(frozen=True)
class Max(_Extremum):
    """Largest non-null value, of the input's type; state: that value."""

    name: ClassVar[str] = "max"
