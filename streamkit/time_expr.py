"""Expressions that make UTC timestamps, built by :func:`streamkit.to_timestamp` and
:func:`streamkit.from_epoch` (and their SQL forms): strings parsed as ISO-8601 (or a
``format``) to microseconds, epoch numbers in s/ms/us/ns. Type-checked when a plan is
built, as every :class:`~streamkit.expr.Expr`: a wrong input type raises
:class:`~streamkit.errors.SchemaError` saying which function to use instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import polars as pl

from streamkit import dtypes as T
from streamkit.errors import SchemaError
from streamkit.expr import Expr

EpochUnit = Literal["s", "ms", "us", "ns"]
_EPOCH_UNITS = ("s", "ms", "us", "ns")


@dataclass(frozen=True, eq=False)
class ParseTimestamp(Expr):
    """Parses ISO-8601 strings (or strings in ``format``) into UTC timestamps (microseconds)."""

    operand: Expr
    format: str | None = None

    def to_polars(self) -> pl.Expr:
        inner = self.operand.to_polars()
        return inner.str.to_datetime(self.format, time_zone="UTC", time_unit="us")

    def _check_tree(self, schema: pl.Schema) -> pl.DataType:
        t = self.operand._check_tree(schema)
        if not isinstance(t, pl.String):
            hint = " use sk.from_epoch(...) for numbers" if T.is_numeric(t) else ""
            raise SchemaError(f"to_timestamp needs strings; {self.operand!r} has type {t};{hint}")
        return pl.Datetime("us", "UTC")

    @property
    def output_name(self) -> str:
        return self.operand.output_name

    def columns(self) -> set[str]:
        return self.operand.columns()

    def __repr__(self) -> str:
        return f"to_timestamp({self.operand!r})"


@dataclass(frozen=True, eq=False)
class FromEpoch(Expr):
    """Epoch numbers (seconds by default; ``unit`` s/ms/us/ns) as UTC timestamps."""

    operand: Expr
    unit: EpochUnit = "s"

    def to_polars(self) -> pl.Expr:
        inner = self.operand.to_polars()
        if self.unit == "s":
            micros = (inner.cast(pl.Float64) * 1_000_000).round(0).cast(pl.Int64)
            return pl.from_epoch(micros, time_unit="us").dt.replace_time_zone("UTC")
        return pl.from_epoch(inner.cast(pl.Int64), time_unit=self.unit).dt.replace_time_zone("UTC")

    def _check_tree(self, schema: pl.Schema) -> pl.DataType:
        t = self.operand._check_tree(schema)
        if not T.is_numeric(t):
            raise SchemaError(f"from_epoch needs numbers; {self.operand!r} has type {t}")
        if self.unit not in _EPOCH_UNITS:
            raise SchemaError(f"epoch unit must be one of {_EPOCH_UNITS}, got {self.unit!r}")
        return pl.Datetime("us" if self.unit == "s" else self.unit, "UTC")

    @property
    def output_name(self) -> str:
        return self.operand.output_name

    def columns(self) -> set[str]:
        return self.operand.columns()

    def __repr__(self) -> str:
        return f"from_epoch({self.operand!r}, {self.unit!r})"
