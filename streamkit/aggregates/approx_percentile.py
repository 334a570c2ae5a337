"""``approx_percentile(col, q, accuracy)``: a quantile from a mergeable sketch."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial as bind
from typing import Any, ClassVar

import polars as pl

from streamkit.aggregates import kll
from streamkit.aggregates.base import AggregateFunction
from streamkit.aggregates.sum import numeric_input

ITEMS_PER_ACCURACY = 8
"""Buffer capacity ``k`` per unit of accuracy: ``eps * k = 8`` keeps the rank error of one
value within ``eps * n`` with probability above 1 - 1e-6 (see :mod:`.kll`)."""


@dataclass(frozen=True)
class ApproxPercentile(AggregateFunction):
    """The ``percentage`` quantile of the non-null values: the smallest value ``x`` such
    that at least ``percentage * n`` values are ``<= x`` (Spark's definition), of the
    input's type; null for a group without values.

    Guarantee: the rank of the returned value is within ``n / accuracy`` of
    ``percentage * n`` (``count(< x) <= q n + n/accuracy`` and ``count(<= x) >= q n -
    n/accuracy``) with probability at least 1 - 1e-6 for one query; exact while a group
    holds at most ``8 * accuracy`` values. The state is a KLL-style sketch of at most
    ``8 * accuracy`` values per level (``log2(n / (4 accuracy)) + 1`` levels), merged
    across chunks, windows and micro-batches with the same bound.
    """

    percentage: float
    accuracy: int = 100
    name: ClassVar[str] = "approx_percentile"
    state_parts: ClassVar[tuple[str, ...]] = ("v", "l")
    reads_rows: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.percentage <= 1.0:
            raise ValueError(f"percentage must be between 0 and 1, got {self.percentage}")
        if isinstance(self.accuracy, bool) or not isinstance(self.accuracy, int):
            raise TypeError(f"accuracy must be an int, got {self.accuracy!r}")
        if self.accuracy < 1:
            raise ValueError(f"accuracy must be at least 1, got {self.accuracy}")

    @property
    def capacity(self) -> int:
        """Items per level of the sketch (``k``)."""
        return ITEMS_PER_ACCURACY * self.accuracy

    def label(self, argument: str) -> str:
        return f"{self.name}({argument}, {self.percentage}, {self.accuracy})"

    def result_dtype(
        self, input_dtype: pl.DataType | None, argument: str = "the input"
    ) -> pl.DataType:
        return numeric_input(self.name, input_dtype, argument)

    def partial(
        self, inputs: list[str], states: list[str], input_dtype: pl.DataType | None
    ) -> list[pl.Expr]:
        return []

    def merge(self, states: list[str]) -> list[pl.Expr]:
        return []

    def finalize(self, states: list[str], input_dtype: pl.DataType | None) -> pl.Expr:
        assert input_dtype is not None
        pick = bind(kll.quantile, q=self.percentage)
        return pl.struct(states).map_batches(pick, return_dtype=input_dtype)

    def empty_state(self, input_dtype: pl.DataType | None) -> list[Any]:
        return [None, None]

    def build_sketch(
        self,
        rows: pl.DataFrame,
        groups: pl.DataFrame,
        keys: list[str],
        inputs: list[str],
        states: list[str],
    ) -> pl.DataFrame:
        long = kll.from_rows(rows, keys, inputs[0])
        return kll.attach(groups, long, keys, states, self.capacity)

    def merge_sketch(
        self, frame: pl.DataFrame, merged: pl.DataFrame, keys: list[str], states: list[str]
    ) -> pl.DataFrame:
        long = kll.from_states(frame, keys, states)
        return kll.attach(merged, long, keys, states, self.capacity)
