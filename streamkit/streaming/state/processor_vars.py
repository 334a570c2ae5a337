"""A ``transform_with_state_in_pandas`` state variable: its declaration and its checkpoint
layout.

One checkpoint row per (key, variable): the key columns, :data:`VAR` (the variable's name,
or :data:`TIMERS_VAR` for the key's timers), one typed column per variable (:attr:`StateVar.
column`), its expiries with a TTL (:attr:`StateVar.expiry_column`) and :data:`TIMERS`.
:meth:`StateVar.decode` inverts :meth:`StateVar.encode`: a variable's content comes back
from a checkpoint as it was held.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import polars as pl

from streamkit.streaming.state.processor_ttl import NEVER

Key = tuple[Any, ...]
Kind = Literal["value", "list", "map"]
VAR = "__var"
TIMERS_VAR = "$timers"
"""The :data:`VAR` of a key's timers (user names may not start with ``$``)."""
TIMERS = "__timers"
PREFIX = "__v_"
EXPIRY_PREFIX = "__x_"


@dataclass(frozen=True)
class StateVar:
    """A declared state variable: ``schema`` is the value's (list items', map values')
    fields, ``key_schema`` a map's user key fields."""

    name: str
    kind: Kind
    schema: pl.Schema
    key_schema: pl.Schema | None = None
    ttl_ms: int | None = None

    @property
    def column(self) -> str:
        """Its checkpoint column."""
        return PREFIX + self.name

    @property
    def expiry_column(self) -> str:
        """Its expiries' checkpoint column (with a TTL)."""
        return EXPIRY_PREFIX + self.name

    @property
    def expiry_dtype(self) -> pl.DataType:
        """The expiry column's type."""
        return pl.Int64() if self.kind == "value" else pl.List(pl.Int64())

    @property
    def dtype(self) -> pl.DataType:
        """The checkpoint column's type."""
        item = pl.Struct(dict(self.schema))
        if self.kind == "value":
            return item
        if self.kind == "list":
            return pl.List(item)
        assert self.key_schema is not None
        return pl.List(pl.Struct({"key": pl.Struct(dict(self.key_schema)), "value": item}))

    def encode(self, held: Any) -> Any:
        """The in-memory content as the checkpoint column's Python value."""
        names = self.schema.names()
        if self.kind == "value":
            return dict(zip(names, held, strict=True))
        if self.kind == "list":
            return [dict(zip(names, v, strict=True)) for v in held]
        assert self.key_schema is not None
        knames = self.key_schema.names()
        return [
            {"key": dict(zip(knames, k, strict=True)), "value": dict(zip(names, v, strict=True))}
            for k, v in held.items()
        ]

    def decode(self, cell: Any) -> Any:
        """The checkpoint column's Python value as the in-memory content."""
        if self.kind == "value":
            return tuple(cell.values())
        if self.kind == "list":
            return [tuple(v.values()) for v in cell]
        return {tuple(e["key"].values()): tuple(e["value"].values()) for e in cell}


def expiry_of(kind: Kind, held: Any, cell: Any) -> Any:
    """The in-memory expiries of ``held`` from its checkpoint cell (None: a checkpoint
    written before the variable had a TTL: its entries never expire)."""
    if kind == "value":
        return NEVER if cell is None else cell
    cells = [NEVER] * len(held) if cell is None else cell
    return cells if kind == "list" else dict(zip(held, cells, strict=True))
