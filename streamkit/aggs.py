"""Aggregate functions as mergeable partial states.

Every aggregate is three steps, so batch and streaming share one implementation:

- ``partial``: per group of input rows, a small state (e.g. sum and non-null count);
- ``merge``: combine states of the same group (from buckets, windows or micro-batches);
- ``final``: turn a merged state into the result value.

Merging is associative and commutative, so any split of the rows into micro-batches gives
the same final result (up to floating-point rounding of sums).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import polars as pl

from streamkit import dtypes as T
from streamkit import hll
from streamkit.errors import SchemaError

if TYPE_CHECKING:
    from streamkit.expr import Expr

_SPARK_NAMES = {
    "count": "count({})",
    "sum": "sum({})",
    "avg": "avg({})",
    "min": "min({})",
    "max": "max({})",
    "count_distinct": "count(DISTINCT {})",
    "approx_count_distinct": "approx_count_distinct({})",
}


@dataclass(frozen=True, eq=False)
class AggExpr:
    """An aggregate over an input expression (``None`` for ``count()`` of rows)."""

    func: str
    input: Expr | None
    name: str | None = None
    rsd: float = 0.02

    def alias(self, name: str) -> AggExpr:
        """Name the result column."""
        return replace(self, name=name)

    @property
    def output_name(self) -> str:
        """The result column's name; Spark's default names when no alias is given."""
        if self.name is not None:
            return self.name
        if self.input is None:
            return "count"
        return _SPARK_NAMES[self.func].format(self.input.output_name)

    @property
    def is_sketch(self) -> bool:
        """True when the state is a HyperLogLog sketch (merged by the numpy kernel)."""
        return self.func == "approx_count_distinct"

    @property
    def precision(self) -> int:
        """HyperLogLog register exponent for ``approx_count_distinct``."""
        return hll.precision_for(self.rsd)

    def check(self, schema: pl.Schema) -> pl.DataType:
        """Validate the input type and return the result type; raises SchemaError."""
        if self.input is None:
            return pl.Int64()
        dtype = self.input.check(schema)
        if self.func in ("sum", "avg") and not T.is_numeric(dtype):
            raise SchemaError(
                f"{self.func}() needs a numeric column, but {self.input!r} has type "
                f"{T.describe(dtype)}; cast it with .cast('float64') or use count()/min()/max()"
            )
        if self.func in ("min", "max") and isinstance(dtype, pl.List | pl.Struct | pl.Array):
            raise SchemaError(f"{self.func}() cannot order values of type {T.describe(dtype)}")
        return self.result_dtype(dtype)

    def result_dtype(self, input_dtype: pl.DataType) -> pl.DataType:
        """The result type for an input of ``input_dtype``."""
        if self.func in ("count", "count_distinct", "approx_count_distinct"):
            return pl.Int64()
        if self.func == "avg":
            return pl.Float64()
        if self.func == "sum":
            return pl.Int64() if input_dtype.is_integer() else pl.Float64()
        return input_dtype

    def state_columns(self, i: int) -> list[str]:
        """Names of the partial-state columns of aggregate number ``i``."""
        parts = {"sum": ["s", "c"], "avg": ["s", "c"]}.get(self.func, ["v"])
        return [f"__p{i}_{p}" for p in parts]

    def empty_state(self, i: int) -> dict[str, Any]:
        """The state of a group that saw no rows (used for a global aggregate of nothing)."""
        names = self.state_columns(i)
        if self.func == "count":
            return {names[0]: 0}
        if self.func in ("sum", "avg"):
            return {names[0]: None, names[1]: 0}
        if self.func == "count_distinct":
            return {names[0]: []}
        if self.func == "approx_count_distinct":
            return {names[0]: [0] * (1 << self.precision)}
        return {names[0]: None}

    def partial(self, i: int, src: str, input_dtype: pl.DataType) -> list[pl.Expr]:
        """Group-by expressions computing the state from input column ``src``."""
        c = pl.col(src)
        names = self.state_columns(i)
        if self.func == "count":
            state = pl.len() if self.input is None else c.count()
            return [state.cast(pl.Int64).alias(names[0])]
        if self.func in ("sum", "avg"):
            target = self.result_dtype(input_dtype) if self.func == "sum" else pl.Float64()
            return [c.cast(target).sum().alias(names[0]), c.count().cast(pl.Int64).alias(names[1])]
        if self.func in ("min", "max"):
            return [getattr(c, self.func)().alias(names[0])]
        if self.func == "count_distinct":
            return [c.drop_nulls().unique().alias(names[0])]
        raise AssertionError(f"{self.func} is merged by the sketch kernel")

    def merge(self, i: int) -> list[pl.Expr]:
        """Group-by expressions combining states of the same group."""
        cols = [pl.col(n) for n in self.state_columns(i)]
        if self.func in ("count", "sum", "avg"):
            return [c.sum() for c in cols]
        if self.func in ("min", "max"):
            return [getattr(cols[0], self.func)()]
        if self.func == "count_distinct":
            return [cols[0].explode().drop_nulls().unique()]
        raise AssertionError(f"{self.func} is merged by the sketch kernel")

    def final(self, i: int) -> pl.Expr:
        """Expression turning the merged state into the result column."""
        cols = [pl.col(n) for n in self.state_columns(i)]
        out = self.output_name
        if self.func == "sum":
            return pl.when(cols[1] > 0).then(cols[0]).otherwise(None).alias(out)
        if self.func == "avg":
            return pl.when(cols[1] > 0).then(cols[0] / cols[1]).otherwise(None).alias(out)
        if self.func == "count_distinct":
            return cols[0].list.len().cast(pl.Int64).alias(out)
        if self.func == "approx_count_distinct":
            return cols[0].map_batches(hll.estimate, return_dtype=pl.Int64).alias(out)
        return cols[0].alias(out)

    def __repr__(self) -> str:
        text = _SPARK_NAMES[self.func].format(repr(self.input) if self.input is not None else "*")
        return f"{text} AS {self.output_name}"
