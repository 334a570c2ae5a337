"""Type categories and conversions between Arrow and Polars types (the engine's view of types)."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

import polars as pl

from streamkit._lazy import lazy_module

if TYPE_CHECKING:
    import pyarrow as pa
else:
    pa = lazy_module("pyarrow")


def is_numeric(dtype: pl.DataType) -> bool:
    """Integers, floats and decimals."""
    return dtype.is_numeric()


def is_timestamp(dtype: pl.DataType) -> bool:
    """A timestamp (Polars ``Datetime``; Arrow ``timestamp``), the only event-time type."""
    return isinstance(dtype, pl.Datetime)


def is_stringlike(dtype: pl.DataType) -> bool:
    """Strings and categoricals."""
    return isinstance(dtype, pl.String | pl.Categorical | pl.Enum)


def is_boolean(dtype: pl.DataType) -> bool:
    """Booleans."""
    return isinstance(dtype, pl.Boolean)


def to_polars_dtype(dtype: Any) -> pl.DataType:
    """Accepts a Polars type, an Arrow type, or an Arrow type name such as ``"int64"``."""
    if isinstance(dtype, pl.DataType):
        return dtype
    if isinstance(dtype, type) and issubclass(dtype, pl.DataType):
        return dtype()
    if isinstance(dtype, str):
        dtype = _arrow_type_from_name(dtype)
    if isinstance(dtype, pa.DataType):
        series = pl.from_arrow(pa.array([], type=dtype))
        assert isinstance(series, pl.Series)
        return series.dtype
    raise TypeError(f"not a data type: {dtype!r}; pass e.g. 'int64', 'float64', pa.string()")


@cache
def _named() -> dict[str, pa.DataType]:
    return {
        "string": pa.string(),
        "str": pa.string(),
        "utf8": pa.string(),
        "int": pa.int64(),
        "float": pa.float64(),
        "double": pa.float64(),
        "bool": pa.bool_(),
        "boolean": pa.bool_(),
        "timestamp": pa.timestamp("us", tz="UTC"),
        "date": pa.date32(),
    }


def _arrow_type_from_name(name: str) -> pa.DataType:
    key = name.strip().lower()
    named = _named()
    if key in named:
        return named[key]
    if key.startswith("timestamp[") and key.endswith("]"):
        unit, _, tz = key[len("timestamp[") : -1].partition(",")
        return pa.timestamp(unit.strip(), tz=tz.strip() or None)
    factory = getattr(pa, key, None)
    if factory is None:
        raise TypeError(f"unknown type name {name!r}; use e.g. 'int64', 'float64', 'string'")
    result = factory()
    assert isinstance(result, pa.DataType)
    return result


def arrow_schema(schema: pl.Schema) -> pa.Schema:
    """The Arrow schema a Polars frame with this schema converts to."""
    return pl.DataFrame(schema=schema).to_arrow().schema


def describe(dtype: pl.DataType) -> str:
    """A short readable name of a type for error messages."""
    return str(dtype)
