"""``AggExpr``: an aggregate function applied to an input expression, as used in ``agg()``.

What the aggregate computes lives in its :class:`~streamkit.aggregates.AggregateFunction`
(one class per aggregate in :mod:`streamkit.aggregates`); this node only names the result
and resolves the input's type.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import polars as pl

from streamkit.aggregates.base import AggregateFunction

if TYPE_CHECKING:
    from streamkit.expr import Expr


@dataclass(frozen=True, eq=False)
class AggExpr:
    """``function`` over an input expression (``None`` for ``count()`` of rows)."""

    function: AggregateFunction
    input: Expr | None
    name: str | None = None

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
        return self.function.label(self.input.output_name)

    def input_dtype(self, schema: pl.Schema) -> pl.DataType | None:
        """The input expression's type over ``schema`` (None without an input)."""
        return self.input.check(schema) if self.input is not None else None

    def check(self, schema: pl.Schema) -> pl.DataType:
        """Validate the input type and return the result type; raises SchemaError."""
        argument = repr(self.input) if self.input is not None else "*"
        return self.function.result_dtype(self.input_dtype(schema), argument)

    def __repr__(self) -> str:
        argument = repr(self.input) if self.input is not None else "*"
        return f"{self.function.label(argument)} AS {self.output_name}"
