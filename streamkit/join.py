"""Equi-joins on named columns (Spark's ``df.join(other, on=[...], how=...)``).

One plan node, :class:`Join`, runs batch joins and, with a stream on one side, the
stream-static joins of Structured Streaming. Semantics (Spark's ``USING`` join):

- rows match when every ``on`` column is equal; a null key never matches (not even
  another null), so an outer join keeps such a row unmatched;
- output columns: the ``on`` columns once, in ``on`` order (the left side's values for
  inner/left, the right side's for right, the non-null one for full), then the left
  side's other columns, then the right side's; ``semi`` and ``anti`` return the left
  side's columns only;
- every match is a row: a key repeated on both sides gives the product of the repeats.

Execution is one vectorised Polars join per call (hash join, no per-row Python).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import polars as pl

from streamkit.errors import ColumnNotFoundError, PlanError, SchemaError
from streamkit.plan import Plan, Scan

JoinType = Literal["inner", "left", "right", "full", "semi", "anti"]
JOIN_TYPES: tuple[JoinType, ...] = ("inner", "left", "right", "full", "semi", "anti")

_ALIASES: dict[str, JoinType] = {
    "inner": "inner",
    "left": "left", "leftouter": "left", "left_outer": "left",
    "right": "right", "rightouter": "right", "right_outer": "right",
    "full": "full", "outer": "full", "fullouter": "full", "full_outer": "full",
    "semi": "semi", "leftsemi": "semi", "left_semi": "semi",
    "anti": "anti", "leftanti": "anti", "left_anti": "anti",
}  # fmt: skip
"""Spark's spellings of each join type (case-insensitive)."""


def join_type(how: str) -> JoinType:
    """Spark's name for a join type (``"left_outer"``, ``"leftanti"``...) as ours."""
    kind = _ALIASES.get(how.lower()) if isinstance(how, str) else None
    if kind is None:
        spelled = ", ".join(repr(k) for k in _ALIASES)
        raise PlanError(f"unknown join type {how!r}; use one of {spelled}")
    return kind


@runtime_checkable
class Pinned(Protocol):
    """A source whose rows are fixed in memory for the micro-batch being run: the static
    side of a stream-static join (:mod:`streamkit.streaming.static_sides`). A loader that
    serves a stream's micro-batch in place of its scan reads these instead."""

    def pinned(self, columns: list[str]) -> pl.LazyFrame:
        """The pinned rows, ``columns`` only."""
        ...


def is_streaming(plan: Plan) -> bool:
    """True when a leaf of ``plan`` reads a stream (its source says ``is_stream``)."""
    if isinstance(plan, Scan):
        return bool(getattr(plan.source, "is_stream", False))
    return any(is_streaming(child) for child in plan.children)


_SPARK_REFUSALS: dict[tuple[JoinType, str], str] = {
    ("left", "right"): "LeftOuter join with a streaming DataFrame/Dataset on the right and a "
    "static DataFrame/Dataset on the left is not supported",
    ("right", "left"): "RightOuter join with a streaming DataFrame/Dataset on the left and a "
    "static DataFrame/DataSet on the right not supported",
    ("full", "left"): "FullOuter joins with streaming DataFrames/Datasets on the left and a "
    "static DataFrame/Dataset on the right is not supported",
    ("full", "right"): "FullOuter joins with streaming DataFrames/Datasets on the right and "
    "a static DataFrame/Dataset on the left is not supported",
    ("semi", "right"): "LeftSemi join with a streaming DataFrame/Dataset on the right and a "
    "static DataFrame/Dataset on the left is not supported",
    ("anti", "right"): "LeftAnti joins with a streaming DataFrame/Dataset on the right are "
    "not supported",
}
"""Spark 4's refusals of stream-static joins (UnsupportedOperationChecker), by (join type,
streaming side): an outer join must preserve the stream's side only, since the static
side's unmatched rows would have to wait for a stream that never ends."""

_FIXES: dict[JoinType, str] = {
    "left": "put the stream on the left (stream.join(static, on, 'left'))",
    "right": "put the stream on the right (static.join(stream, on, 'right')) or use a left "
    "join with the stream on the left",
    "full": "use a left join with the stream on the left",
    "semi": "put the stream on the left (stream.join(static, on, 'semi'))",
    "anti": "put the stream on the left (stream.join(static, on, 'anti'))",
}


def check_streaming_join(how: JoinType, left_streams: bool, right_streams: bool) -> None:
    """Refuse what Spark refuses for a join with a stream on one side (or both)."""
    if left_streams and right_streams:
        raise PlanError(
            "a join of two streams is not supported by this join; join a stream with a "
            "batch DataFrame (sk.read.parquet(...), sk.from_arrow(...))"
        )
    side = "left" if left_streams else "right" if right_streams else None
    if side is None:
        return
    reason = _SPARK_REFUSALS.get((how, side))
    if reason is not None:
        raise PlanError(f"{reason} (Spark refuses it too): {_FIXES[how]}")


@dataclass(frozen=True, eq=False)
class Join(Plan):
    """``left.join(right, on, how)``: an equi-join on the named columns (see the module
    docstring for the output). ``children`` lists the streaming side first, so that
    ``chain()`` follows the stream down to its scan."""

    left: Plan
    right: Plan
    on: tuple[str, ...]
    how: JoinType = "inner"
    schema: pl.Schema = field(init=False)

    def __post_init__(self) -> None:
        if self.how not in JOIN_TYPES:
            raise PlanError(f"unknown join type {self.how!r}; use one of {JOIN_TYPES}")
        if not self.on:
            raise PlanError("join needs at least one column in on=")
        if len(set(self.on)) != len(self.on):
            raise PlanError(f"join columns repeat in on={list(self.on)}")
        check_streaming_join(self.how, is_streaming(self.left), is_streaming(self.right))
        ls, rs = self.left.schema, self.right.schema
        for name in self.on:
            for side, schema in (("left", ls), ("right", rs)):
                if name not in schema:
                    error = ColumnNotFoundError(name, schema.names())
                    error.add_note(f"join column {name!r} is missing on the {side} side")
                    raise error
            if ls[name] != rs[name]:
                raise SchemaError(
                    f"join column {name!r} is {ls[name]} on the left and {rs[name]} on the "
                    "right; cast one side first (with_column(name, col(name).cast(...)))"
                )
        out = {name: ls[name] for name in self.on}
        out.update((n, t) for n, t in ls.items() if n not in out)
        if self.how not in ("semi", "anti"):
            for name, dtype in rs.items():
                if name in self.on:
                    continue
                if name in out:
                    raise PlanError(
                        f"column {name!r} is on both sides of the join and not in on=; "
                        "rename it on one side first, e.g. "
                        f"right.with_column('{name}_right', col('{name}')).select(...)"
                    )
                out[name] = dtype
        object.__setattr__(self, "schema", pl.Schema(out))

    @property
    def children(self) -> tuple[Plan, ...]:
        if is_streaming(self.right) and not is_streaming(self.left):
            return (self.right, self.left)
        return (self.left, self.right)

    def describe(self) -> str:
        return f"Join {self.how} on [{', '.join(self.on)}]"

    def explain(self, indent: int = 0) -> str:
        lines = ["  " * indent + self.describe()]
        lines += [c.explain(indent + 1) for c in (self.left, self.right)]
        return "\n".join(lines)


_POLARS_HOW: dict[JoinType, Literal["inner", "left", "right", "full", "semi", "anti"]] = {
    "inner": "inner", "left": "left", "right": "right", "full": "full",
    "semi": "semi", "anti": "anti",
}  # fmt: skip
_ORDER: dict[JoinType, Literal["left", "right", "left_right"]] = {
    "inner": "left", "left": "left", "right": "right", "full": "left_right",
    "semi": "left", "anti": "left",
}  # fmt: skip
"""Row order kept from the input (the driving side first), so output is deterministic."""


Compile = Callable[[Plan, set[str] | None], pl.LazyFrame]


def compile_join(plan: Join, needed: set[str] | None, compile_child: Compile) -> pl.LazyFrame:
    """The join as a lazy Polars frame; ``compile_child(node, columns)`` compiles an input
    reading only ``columns`` (None: all)."""
    keys = list(plan.on)
    names = [n for n in plan.schema.names() if needed is None or n in needed or n in keys]
    left_need = set(keys) | {n for n in names if n in plan.left.schema}
    right_need = set(keys)
    if plan.how not in ("semi", "anti"):
        right_need |= {n for n in names if n in plan.right.schema}
    left = compile_child(plan.left, left_need)
    right = compile_child(plan.right, right_need)
    if plan.how in ("semi", "anti"):
        right = right.select(keys)
    joined = left.join(
        right,
        on=keys,
        how=_POLARS_HOW[plan.how],
        nulls_equal=False,
        coalesce=True,
        maintain_order=_ORDER[plan.how],
    )
    return joined.select(names)
