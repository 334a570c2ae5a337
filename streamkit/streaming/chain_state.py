"""The states of a chain's operators (:mod:`~streamkit.streaming.chain`) as one
changelogged state, so a chain checkpoints, and resumes, as a single operator does."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from streamkit.execute import aggregate_spec
from streamkit.plan import Aggregate, Deduplicate
from streamkit.streaming.agg_stage import AggStage, agg_state_schema
from streamkit.streaming.chain_rules import Function, stateful_operators
from streamkit.streaming.checkpoint import Changelogged
from streamkit.streaming.dedup_stage import DedupStage
from streamkit.streaming.function_stage import FunctionStage
from streamkit.streaming.incremental import IncrementalQuery
from streamkit.streaming.state.changelog import DELETED
from streamkit.streaming.state.dedup import EXPIRES
from streamkit.streaming.stream_join import StreamJoinQuery

STAGE = "__stage"
"""Checkpoint column: which operator of the chain a state row belongs to (0: the first)."""

Stage = AggStage | DedupStage | FunctionStage
"""An operator of a chain above its first."""


def first_state_schema(first: IncrementalQuery | StreamJoinQuery) -> pl.Schema:
    """The state columns of the chain's first operator."""
    if isinstance(first, StreamJoinQuery):
        return first.store.rows().schema
    node = stateful_operators(first.plan)[0]
    if isinstance(node, Function):
        held = first._held
        assert held is not None
        return held.rows().schema
    if isinstance(node, Aggregate):
        return agg_state_schema(aggregate_spec(node), node)
    assert isinstance(node, Deduplicate)
    schema = node.input.schema
    return pl.Schema({**{k: schema[k] for k in node.keys}, EXPIRES: pl.Int64()})


class ChainState:
    """The chain's operators' states as one changelogged state: operator ``i``'s column
    ``c`` is ``"i:c"``, and :data:`STAGE` says whose row it is. Every frame has every
    operator's columns (null where not its own), so deltas apply as a single store's."""

    def __init__(self, first: IncrementalQuery | StreamJoinQuery, stages: Sequence[Stage]) -> None:
        """``first``: the chain's first operator's engine; ``stages``: the ones above it."""
        self._first, self._stages = first, stages
        self._schemas = [first_state_schema(first)] + [s.state_schema() for s in stages]
        full: dict[str, pl.DataType] = {STAGE: pl.Int32()}
        for i, schema in enumerate(self._schemas):
            full.update({f"{i}:{c}": t for c, t in schema.items()})
        self._full = pl.Schema(full)

    def _stores(self) -> list[Changelogged]:
        first = self._first
        held = first.store if isinstance(first, StreamJoinQuery) else first._held
        assert held is not None
        return [held, *(s.store for s in self._stages)]

    def _tag(self, i: int, frame: pl.DataFrame, deleted: bool = False) -> pl.DataFrame:
        named = frame.rename({c: f"{i}:{c}" for c in frame.columns if c != DELETED})
        named = named.with_columns(pl.lit(i, pl.Int32).alias(STAGE))
        schema = dict(self._full) | ({DELETED: pl.Boolean()} if deleted else {})
        return named.select(
            (pl.col(c).cast(t) if c in named.columns else pl.lit(None, t).alias(c))
            for c, t in schema.items()
        )

    def rows(self) -> pl.DataFrame:
        """Every operator's state rows."""
        frames = [self._tag(i, s.rows()) for i, s in enumerate(self._stores())]
        return pl.concat(frames, how="vertical")

    def take_changes(self) -> pl.DataFrame | None:
        """Every operator's delta since the last call (None: a snapshot is needed)."""
        deltas = [s.take_changes() for s in self._stores()]
        if any(d is None for d in deltas):
            return None
        frames = [self._tag(i, d, True) for i, d in enumerate(deltas) if d is not None and d.height]
        if not frames:
            return pl.DataFrame(schema={DELETED: pl.Boolean})
        return pl.concat(frames, how="vertical")

    @property
    def change_keys(self) -> list[str]:
        """:data:`STAGE` and every operator's key columns."""
        keys = [STAGE]
        for i, s in enumerate(self._stores()):
            keys += [f"{i}:{k}" for k in s.change_keys]
        return keys

    def split(self, state: pl.DataFrame | None) -> list[pl.DataFrame | None]:
        """Operator ``i``'s rows of a checkpointed ``state``, under their own names."""
        out: list[pl.DataFrame | None] = []
        for i, schema in enumerate(self._schemas):
            if state is None or not state.height:
                out.append(None)
                continue
            mine = state.filter(pl.col(STAGE) == i)
            out.append(mine.select(pl.col(f"{i}:{c}").alias(c) for c in schema.names()))
        return out
