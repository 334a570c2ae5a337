"""The one contract every aggregate implements: mergeable partial states over groups.

The kernel (:mod:`streamkit.aggregate`) runs each aggregate in four steps, the same in
batch and streaming, and never asks which aggregate it holds:

1. ``inputs``: per-row columns computed from the input expression (usually the value);
2. ``partial``: group-by expressions turning a group's input rows into a small state;
3. ``merge``: group-by expressions combining states of the same group (from chunks,
   buckets, windows or micro-batches); associative and commutative; an aggregate may
   also give ``combine``, the same merge of two aligned states row by row (no group-by),
   which the keyed state store uses for the groups a batch updates;
4. ``finalize``: an expression turning a merged state into the result column.

State columns are plain Arrow columns, so the checkpoint stores them as they are (Arrow
IPC) and a restart merges them like any other partial state. An aggregate whose state is
a sketch built by a vectorised kernel rather than a group-by expression (HyperLogLog
registers, a quantile compactor) implements the two sketch hooks ``build_sketch`` and
``merge_sketch``; their defaults do nothing.

An aggregate may also compute its partial state over dense group slots (``by_slots`` and
``slot_states``, see :mod:`.slots`): when every aggregate of a query can and the keys code
compactly, the kernel skips the hash group-by for a large chunk. The states must equal
what ``partial`` and ``build_sketch`` give (float sums: added in row order).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import polars as pl

if TYPE_CHECKING:
    from streamkit.aggregates.slots import Slots


class AggregateFunction(Protocol):
    """An aggregate function; implementations are small frozen dataclasses.

    Names handed to the methods are internal column names chosen by the kernel:
    ``inputs`` (one per expression returned by :meth:`inputs`) and ``states`` (one per
    entry of :attr:`state_parts`). ``input_dtype`` is None for an aggregate without an
    input expression (``count()`` of rows).
    """

    name: ClassVar[str]
    """Spark's function name, used for default output names: ``sum`` -> ``sum(value)``."""
    state_parts: ClassVar[tuple[str, ...]] = ("v",)
    """Suffixes of the state columns (``("s", "c")`` for a sum and its count)."""
    reads_rows: ClassVar[bool] = False
    """True when :meth:`build_sketch` needs the input rows (the kernel materialises them)."""

    def label(self, argument: str) -> str:
        """The default output name for an input named ``argument``."""
        return f"{self.name}({argument})"

    def result_dtype(
        self, input_dtype: pl.DataType | None, argument: str = "the input"
    ) -> pl.DataType:
        """Validate the input type (raise SchemaError, naming the input ``argument``) and
        return the result type."""
        ...

    def inputs(self, value: pl.Expr) -> list[pl.Expr]:
        """Per-row input columns computed from the input expression ``value``."""
        return [value]

    def partial(
        self, inputs: list[str], states: list[str], input_dtype: pl.DataType | None
    ) -> list[pl.Expr]:
        """Group-by expressions computing the state columns ``states`` (may be empty
        when :meth:`build_sketch` builds them)."""
        ...

    def merge(self, states: list[str]) -> list[pl.Expr]:
        """Group-by expressions combining the states of one group (may be empty when
        :meth:`merge_sketch` merges them)."""
        ...

    def combine(self, states: list[pl.Expr], others: list[pl.Expr]) -> list[pl.Expr] | None:
        """Row-wise expressions, one per state column, merging the state ``states`` with
        ``others`` (a second state of the same group in the same row, same types): what
        :meth:`merge` gives for those two rows. None (the default): this aggregate merges
        by group only."""
        return None

    def finalize(self, states: list[str], input_dtype: pl.DataType | None) -> pl.Expr:
        """Expression turning merged state columns into the result (unnamed)."""
        ...

    def empty_state(self, input_dtype: pl.DataType | None) -> list[Any]:
        """One value per state column for a group that saw no rows."""
        ...

    # -- optional sketch hooks -----------------------------------------------------------
    def build_sketch(
        self,
        rows: pl.DataFrame,
        groups: pl.DataFrame,
        keys: list[str],
        inputs: list[str],
        states: list[str],
    ) -> pl.DataFrame:
        """``groups`` (one row per distinct ``keys`` of ``rows``) with the sketch state
        columns built from ``rows``; vectorised. Default: ``groups`` unchanged."""
        return groups

    def merge_sketch(
        self, frame: pl.DataFrame, merged: pl.DataFrame, keys: list[str], states: list[str]
    ) -> pl.DataFrame:
        """``merged`` (one row per distinct ``keys`` of ``frame``) with the sketch state
        columns of ``frame`` merged per group; vectorised. Default: ``merged`` unchanged."""
        return merged

    # -- optional dense-slot hooks ---------------------------------------------------------
    def by_slots(self, input_dtype: pl.DataType | None, slots: int) -> bool:
        """True when :meth:`slot_states` computes this aggregate's partial state over
        ``slots`` dense group slots. Default False: the kernel groups by expressions."""
        return False

    def slot_states(
        self, slots: Slots, inputs: list[pl.Series], input_dtype: pl.DataType | None
    ) -> list[pl.Series]:
        """The state columns (one per :attr:`state_parts`, a row per occupied slot of
        ``slots``, in its order) of the rows whose input columns are ``inputs``: the values
        :meth:`partial` (and :meth:`build_sketch`) give those groups. Default: raises
        (the kernel calls it only when :meth:`by_slots` said True)."""
        message = f"{self.name} has no dense-slot state"  # (a body mypy takes as concrete)
        raise NotImplementedError(message)
