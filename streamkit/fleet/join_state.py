"""The checkpointed state of an aggregation task that runs a join of two streams: both
sides' buffers (with the matched flags of outer joins), and the state of the operator
above the join when there is one, as one changelogged state.

A delta or snapshot of it is written under the task's fence with its dedup map
(:meth:`~streamkit.fleet.aggregation_stage.AggregationStage.checkpoint_state`), so a
takeover resumes the buffers of the batch the fence names: a row buffered before the
takeover still meets the other side's later rows, and one emitted with nulls is not
emitted again.
"""

from __future__ import annotations

import polars as pl

from streamkit.streaming.chain import ChainQuery
from streamkit.streaming.stream_join import StreamJoinQuery


class JoinState:
    """The state of a task's join engine (module docstring): the join's
    :class:`~streamkit.streaming.state.join_store.JoinStore`, or a chain's
    :class:`~streamkit.streaming.chain_state.ChainState` (the join's buffers and the
    operator above)."""

    def __init__(self, engine: StreamJoinQuery | ChainQuery) -> None:
        self._engine = engine

    def take_changes(self) -> pl.DataFrame | None:
        """The delta since the last call (None: a snapshot is needed)."""
        engine = self._engine
        if isinstance(engine, ChainQuery):
            return engine.state.take_changes()
        return engine.store.take_changes()

    def rows(self) -> pl.DataFrame:
        """The whole state."""
        engine = self._engine
        return engine.state.rows() if isinstance(engine, ChainQuery) else engine.store.rows()

    @property
    def change_keys(self) -> list[str]:
        """The columns identifying a row of a delta."""
        engine = self._engine
        if isinstance(engine, ChainQuery):
            return engine.state.change_keys
        return engine.store.change_keys

    def load(self, state: pl.DataFrame | None) -> None:
        """The state from a checkpointed :meth:`rows` (None: empty)."""
        engine = self._engine
        if not isinstance(engine, ChainQuery):
            engine.store.load(state)
            return
        first, *above = engine.state.split(state)
        assert isinstance(engine.first, StreamJoinQuery)
        engine.first.store.load(first)
        for stage, part in zip(engine.stages, above, strict=True):
            stage.store.load(part)

    @property
    def height(self) -> int:
        """Rows held: buffered on both sides, and held by the operator above."""
        return self._engine.state_rows
