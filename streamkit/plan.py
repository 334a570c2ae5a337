"""The logical plan: immutable nodes, each validated and typed when it is constructed.

A plan says what to compute, never how; :mod:`streamkit.execute` is its only executor.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import polars as pl

from streamkit.errors import PlanError
from streamkit.expr import Col, Expr
from streamkit.windows import WINDOW_COLUMN, SessionWindow, TimeWindow

if TYPE_CHECKING:
    from streamkit.aggs import AggExpr


class Source(Protocol):
    """Where a plan's rows come from (a table in memory, files, a stream's table)."""

    @property
    def schema(self) -> pl.Schema:
        """Schema of the rows, known without reading them."""
        ...

    def batches(self, columns: list[str], dictionary: list[str]) -> Iterator[pl.DataFrame]:
        """Read ``columns`` in chunks (at least one, possibly empty), in order; string
        columns in ``dictionary`` may come back categorical."""
        ...

    def describe(self) -> str:
        """One line for ``explain()``."""
        ...


class Plan:
    """A node of the logical plan."""

    schema: pl.Schema

    @property
    def children(self) -> tuple[Plan, ...]:
        """Input nodes."""
        return ()

    def describe(self) -> str:
        """One line for ``explain()``."""
        raise NotImplementedError

    def chain(self) -> list[Plan]:
        """This node, then its first input, and so on down to a leaf (root first)."""
        nodes: list[Plan] = [self]
        while nodes[-1].children:
            nodes.append(nodes[-1].children[0])
        return nodes

    def explain(self, indent: int = 0) -> str:
        """The plan as an indented tree, root first."""
        lines = ["  " * indent + self.describe()]
        lines += [c.explain(indent + 1) for c in self.children]
        return "\n".join(lines)


def _exprs(items: tuple[Expr, ...]) -> str:
    return ", ".join(repr(e) for e in items)


@dataclass(frozen=True, eq=False)
class Scan(Plan):
    """Rows from a :class:`Source`."""

    source: Source
    schema: pl.Schema = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "schema", self.source.schema)

    def describe(self) -> str:
        return f"Scan {self.source.describe()}"


@dataclass(frozen=True, eq=False)
class Filter(Plan):
    """Rows where ``predicate`` is true (null counts as false)."""

    input: Plan
    predicate: Expr
    schema: pl.Schema = field(init=False)

    def __post_init__(self) -> None:
        dtype = self.predicate.check(self.input.schema)
        if not isinstance(dtype, pl.Boolean):
            raise PlanError(f"filter needs a boolean condition; {self.predicate!r} is {dtype}")
        object.__setattr__(self, "schema", self.input.schema)

    @property
    def children(self) -> tuple[Plan, ...]:
        return (self.input,)

    def describe(self) -> str:
        return f"Filter {self.predicate!r}"


@dataclass(frozen=True, eq=False)
class Project(Plan):
    """``select`` (``keep_input=False``) or ``with_columns`` (``keep_input=True``)."""

    input: Plan
    exprs: tuple[Expr, ...]
    keep_input: bool
    schema: pl.Schema = field(init=False)

    def __post_init__(self) -> None:
        out = dict(self.input.schema) if self.keep_input else {}
        names: set[str] = set()
        for e in self.exprs:
            if e.output_name in names:
                raise PlanError(f"column {e.output_name!r} is produced twice; use .alias(...)")
            names.add(e.output_name)
            out[e.output_name] = e.check(self.input.schema)
        object.__setattr__(self, "schema", pl.Schema(out))

    @property
    def children(self) -> tuple[Plan, ...]:
        return (self.input,)

    def describe(self) -> str:
        return f"{'WithColumns' if self.keep_input else 'Select'} {_exprs(self.exprs)}"


@dataclass(frozen=True, eq=False)
class Watermark(Plan):
    """Declares event-time column and lateness bound (used by streaming; batch ignores it)."""

    input: Plan
    column: str
    delay_ns: int
    schema: pl.Schema = field(init=False)

    def __post_init__(self) -> None:
        dtype = Col(self.column).check(self.input.schema)
        if not isinstance(dtype, pl.Datetime):
            raise PlanError(f"with_watermark needs a timestamp column; {self.column!r} is {dtype}")
        object.__setattr__(self, "schema", self.input.schema)

    @property
    def children(self) -> tuple[Plan, ...]:
        return (self.input,)

    def describe(self) -> str:
        return f"Watermark {self.column} delay={self.delay_ns}ns"


@dataclass(frozen=True, eq=False)
class Aggregate(Plan):
    """``group_by(window?, keys...).agg(aggs...)``."""

    input: Plan
    window: TimeWindow | SessionWindow | None
    keys: tuple[Expr, ...]
    aggs: tuple[AggExpr, ...]
    order: tuple[str, ...]
    """Group columns in the user's order (``window`` marks where the window struct goes)."""
    schema: pl.Schema = field(init=False)

    def __post_init__(self) -> None:
        if not self.aggs:
            raise PlanError("agg() needs at least one aggregate, e.g. sk.count()")
        out: dict[str, pl.DataType] = {}
        key_types = {k.output_name: k.check(self.input.schema) for k in self.keys}
        for name in self.order:
            if name == WINDOW_COLUMN and self.window is not None:
                t = self.window.time_dtype(self.input.schema)
                out[name] = pl.Struct({"start": t, "end": t})
            else:
                out[name] = key_types[name]
        for agg in self.aggs:
            if agg.output_name in out:
                raise PlanError(f"column {agg.output_name!r} is produced twice; use .alias(...)")
            out[agg.output_name] = agg.check(self.input.schema)
        object.__setattr__(self, "schema", pl.Schema(out))

    @property
    def children(self) -> tuple[Plan, ...]:
        return (self.input,)

    def describe(self) -> str:
        parts = [repr(self.window)] if self.window is not None else []
        parts += [repr(k) for k in self.keys]
        return f"Aggregate by [{', '.join(parts)}]: {', '.join(repr(a) for a in self.aggs)}"


@dataclass(frozen=True, eq=False)
class Deduplicate(Plan):
    """``drop_duplicates(subset)``: the first row of each distinct ``subset`` (None: all
    columns). ``within_watermark`` is Spark's ``dropDuplicatesWithinWatermark``: on a
    stream a key is forgotten once the watermark reaches its first event time plus the
    delay (batch: the same as ``drop_duplicates``)."""

    input: Plan
    subset: tuple[str, ...] | None
    within_watermark: bool = False
    schema: pl.Schema = field(init=False)

    def __post_init__(self) -> None:
        for name in self.keys:
            Col(name).check(self.input.schema)
        if self.subset is not None and not self.subset:
            raise PlanError("drop_duplicates needs at least one column in subset (or None)")
        object.__setattr__(self, "schema", self.input.schema)

    @property
    def keys(self) -> list[str]:
        """The columns that identify a duplicate."""
        return list(dict.fromkeys(self.subset or self.input.schema.names()))

    @property
    def children(self) -> tuple[Plan, ...]:
        return (self.input,)

    def describe(self) -> str:
        name = "DeduplicateWithinWatermark" if self.within_watermark else "Deduplicate"
        return f"{name} [{', '.join(self.keys)}]"
