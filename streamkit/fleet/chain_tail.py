"""A chain (README rule 11) in an aggregation task: the operators above its first.

A fleet runs a chain whose first operator is ``drop_duplicates`` (or
``drop_duplicates_within_watermark``) and whose operators above it are aggregations,
with filters, projections and stream-static joins between them
(:meth:`~streamkit.fleet.fleet_plan.FleetPlan.of` checks the plan). Rows are routed by
keys that every operator of the chain keys by (:attr:`FleetPlan.route_keys`), so all
the rows of a deduplication key and of a group meet in one aggregation task, which runs
the whole chain on them with the single-process engine's operators
(:class:`~streamkit.streaming.chain.ChainQuery`): the deduplication first, then each
operator above it on the rows the one below emitted in the same batch, judging late rows
with the fleet watermark in force in the previous batch and evicting with the one in
force in this batch, as the deduplication passes the watermark on unchanged. The static
sides of joins between the operators are pinned before each batch (one snapshot for the
query's life on a fleet: :mod:`~streamkit.fleet.static_snapshot`).

Its state is every operator's, checkpointed and restored as one changelogged state
(:class:`~streamkit.streaming.chain_state.ChainState`), so a takeover resumes the whole
chain from the batch the fence names.
"""

from __future__ import annotations

import polars as pl

from streamkit.streaming.agg_stage import AggStage
from streamkit.streaming.chain import ChainQuery
from streamkit.streaming.dedup import StreamingDedup
from streamkit.streaming.incremental import IncrementalQuery

from .fleet_plan import FleetPlan


class ChainTail:
    """The chain of :attr:`FleetPlan.plan` for one aggregation task (module docstring)."""

    def __init__(self, fleet: FleetPlan) -> None:
        self.fleet = fleet
        self._chain = ChainQuery(fleet.plan, fleet.mode)
        first = self._chain.first
        assert isinstance(first, IncrementalQuery)
        engine = first._dedup
        assert isinstance(engine, StreamingDedup)
        self.dedup = engine
        """The chain's first operator (its ``drop_duplicates``), as the engine builds it
        (its late-row column pruned to what the operator above reads)."""

    def run(self, rows: pl.DataFrame, late_mark: int | None, in_force: int | None) -> pl.DataFrame:
        """The operators above the deduplication on ``rows`` (what it emitted in this
        batch), then the plan above the last one; the watermarks are the fleet's (ticks
        of the watermark column): ``late_mark`` in force in the previous batch, ``in_force``
        in this one."""
        self.fleet.refresh_static()
        return self._chain.run_above(rows, late_mark, in_force)

    def current_result(self) -> pl.DataFrame:
        """The last aggregation's result over every group it holds."""
        return self._chain.current_result()

    # -- state: every operator's, as one changelogged state ------------------------------
    def take_changes(self) -> pl.DataFrame | None:
        """Every operator's delta since the last call (None: a snapshot is needed)."""
        return self._chain.state.take_changes()

    def rows(self) -> pl.DataFrame:
        """Every operator's state rows."""
        return self._chain.state.rows()

    @property
    def change_keys(self) -> list[str]:
        """The columns identifying a row of a delta."""
        return self._chain.state.change_keys

    def load(self, state: pl.DataFrame | None) -> None:
        """Every operator's state from a checkpointed :meth:`rows` (None: empty)."""
        first, *above = self._chain.state.split(state)
        self.dedup.store.load(first)
        for stage, part in zip(self._stages, above, strict=True):
            stage.store.load(part)

    @property
    def height(self) -> int:
        """Rows held by every operator (keys of the deduplication, groups above it)."""
        return self.dedup.store.height + sum(s.store.height for s in self._stages)

    @property
    def _stages(self) -> list[AggStage]:
        stages = [s for s in self._chain.stages if isinstance(s, AggStage)]
        assert len(stages) == len(self._chain.stages)
        return stages
