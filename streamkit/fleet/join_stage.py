"""An aggregation task's engine for a join of two streams: chunks of both sides for one
exchange partition -> the join's output (README "Running on many machines", steps 3-5).

One :meth:`JoinStage.apply` is one micro-batch, the steps of
:class:`~streamkit.fleet.aggregation_stage.AggregationStage` (the source shards,
watermark and checkpoint of :class:`~streamkit.fleet.exchange_task.ExchangeTask`) with
the single-process join (:class:`~streamkit.streaming.stream_join.StreamJoinQuery`) in place of the
aggregation:

1. decode every chunk; each names its stream (``left`` or ``right``), and a shard is
   known by stream and shard id (:attr:`~streamkit.fleet.chunk.ChunkHeader.key`);
2. drop a chunk applied already (a re-emission after a takeover) by its shard's last
   applied ``(range end, part)``, so each row reaches the join once and each pair is
   emitted once;
3. take each shard's event-time maximum (ms, as the join keeps them);
4. judge each side's rows late against the fleet watermark in force in the previous
   batch, on the side's column carrying its watermark (the join's step 1; counted in
   :attr:`late_rows`, returned as the join's late-rows table);
5. the join's steps 2 and 3 on the partition's new rows of both sides, its buffers'
   state watermarks derived from the fleet watermark in force in this batch, as
   ``stream_join`` derives them from W_n: pairs, eviction, and the null-extended rows of
   an outer join's preserved side; then the plan above the join, or the aggregation or
   ``drop_duplicates`` above it (keyed by the join keys: :mod:`~streamkit.fleet.join_split`)
   given the join's output watermark, as :class:`~streamkit.streaming.chain.ChainQuery`
   gives it;
6. the fleet watermark after the batch: Spark's global watermark, the minimum of the two
   sides', taken over source shards: ``min`` over the shards of both sides that have an
   event time and are active of ``max_event - delay`` (each with its side's delay, whole
   ms), the ``max`` over all of them when none is active; there is none until every side
   with a watermark has a shard with an event time (Spark counts a side that has seen
   none as 0), and it never decreases. Expected shards (:meth:`expect_sources`, named
   ``stream/shard``) of a side with a watermark hold it as in an aggregation task.

A batch without records (:meth:`run_no_data`) evicts what the watermark in force closed
and emits an outer join's null-extended rows; it is owed (:attr:`owes_batch`) when the
watermark moved past the one in force in the last batch and a buffer evicts (an operator
above the join: whenever it moved, as ``ChainQuery``), and right after a :meth:`restore`.
Both buffers, the matched flags and the state of the operator above are the task's
checkpointed state (:mod:`~streamkit.fleet.join_state`), next to the dedup map.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import polars as pl

from streamkit.errors import PlanError
from streamkit.streaming.batch_result import BatchResult
from streamkit.streaming.chain import ChainQuery, make_engine
from streamkit.streaming.join_sides import SIDES
from streamkit.streaming.stream_join import StreamJoinQuery, join_engine

from .chunk import ChunkError, ChunkHeader, decode_chunk
from .exchange_task import ExchangeTask
from .fleet_plan import FleetPlan
from .join_split import JoinSplit
from .join_state import JoinState
from .source_progress import advance


class JoinStage(ExchangeTask):
    """The engine of one aggregation task of a join of two streams (module docstring)."""

    def __init__(
        self,
        fleet: FleetPlan,
        *,
        query: str | None = None,
    ) -> None:
        if fleet.joined is None:
            raise PlanError("a JoinStage runs a join of two streams (FleetPlan.joined)")
        self._track(fleet, query)
        self.split: JoinSplit = fleet.joined
        engine = join_engine(fleet.plan, fleet.mode, emit_on_same_batch=False, policy="min")
        if engine is None:  # an aggregation or drop_duplicates above the join: a chain
            chain = make_engine(fleet.plan, fleet.mode)
            assert isinstance(chain, ChainQuery)
            assert isinstance(chain.first, StreamJoinQuery)
            self._engine: StreamJoinQuery | ChainQuery = chain
            first = chain.first
        else:
            self._engine = first = engine
        self.join = first
        self._store = JoinState(self._engine)

    # -- per batch ---------------------------------------------------------------------
    def apply(self, records: Sequence[bytes], now: float) -> BatchResult:
        """One micro-batch of exchange records (steps 1-6 of the module docstring)."""
        decoded = [decode_chunk(r) for r in records]
        sources = dict(self._sources)
        fresh: tuple[list[pl.DataFrame], list[pl.DataFrame]] = ([], [])
        dropped = 0
        for header, rows in decoded:
            self._check_query(header)
            side = _side(header)
            outcome = advance(sources, header, now)
            dropped += outcome == "duplicate"
            if outcome == "applied" and rows.height:
                fresh[side].append(rows)
        self._sources, self.duplicates_dropped = sources, self.duplicates_dropped + dropped
        late_mark, in_force = self._in_force, self.watermark
        self._update_watermark(now)
        self._in_force = in_force
        kept, late = [], []
        for i in (0, 1):
            empty = pl.DataFrame(schema=self.split.sides[i].plan.schema)
            rows = pl.concat([empty, *fresh[i]], how="vertical_relaxed")
            new, old = self.join.split_late(i, rows, late_mark)
            kept.append(new)
            late.append(old)
        self.late_rows += late[0].height + late[1].height
        output = self.join.join_rows(kept[0], kept[1], in_force)
        if isinstance(self._engine, ChainQuery):
            passed = self.join.output_watermark
            output = self._engine.run_above(output, passed(late_mark), passed(in_force))
        return BatchResult(output, self.join.late_frame(late), self.watermark)

    @property
    def owes_batch(self) -> bool:
        """The watermark moved past the one in force in the last batch (also right after
        a restore: the previous owner may have died before running the batch it owed),
        and a buffer evicts with it or an operator above the join sees it move."""
        moved = self.watermark is not None and (
            self._in_force is None or self.watermark > self._in_force
        )
        return moved and (isinstance(self._engine, ChainQuery) or self.join.evicts)

    # -- watermark: the minimum of the two sides' --------------------------------------
    def expect_sources(self, ids: Iterable[str]) -> None:
        """The source shards of both streams that exist and have not finished, each named
        ``stream/shard`` (``left/shardId-...``); see
        :meth:`ExchangeTask.expect_sources`. Raises ValueError for a name without
        its stream."""
        names = [str(i) for i in ids]
        for name in names:
            _side_of_key(name)
        super().expect_sources(names)

    def _timed(self, name: str) -> bool:
        return self.split.delay_ms(_side_of_key(name)) is not None

    @property
    def _watermarked(self) -> bool:
        return any(self.split.delay_ms(i) is not None for i in (0, 1))

    def _advanced(self, now: float) -> int | None:
        """The minimum of the two sides' watermarks over the shards (module docstring,
        step 6): per shard ``max_event`` less its side's delay; the one-process join's
        rule for the first one (above 0) and for moving on (only forward)."""
        delays = [self.split.delay_ms(i) for i in (0, 1)]
        active: list[int] = []
        everyone: list[int] = []
        timed: set[int] = set()
        for name, p in self._sources.items():
            side = _side_of_key(name)
            delay = delays[side]
            if delay is None or p.max_event is None:
                continue
            timed.add(side)
            everyone.append(p.max_event - delay)
            if self._active(name, p, now):
                active.append(p.max_event - delay)
        if any(d is not None and i not in timed for i, d in enumerate(delays)):
            return self.watermark  # a side that has seen no event time counts as 0 (Spark)
        chosen = min(active) if active else max(everyone)
        if self.watermark is None:
            return chosen if chosen > 0 else None
        return max(chosen, self.watermark)

    @property
    def source_watermarks(self) -> dict[str, int]:
        """Per source shard with an event time (``stream/shard``): its ``max_event`` less
        its side's delay (ms)."""
        out = {}
        for name, p in self._sources.items():
            delay = self.split.delay_ms(_side_of_key(name))
            if delay is not None and p.max_event is not None:
                out[name] = p.max_event - delay
        return out


def _side(header: ChunkHeader) -> int:
    """The side of a chunk of a join's exchange; :class:`ChunkError` for one without."""
    if header.stream not in SIDES:
        raise ChunkError(
            f"chunk from source {header.source!r} names no stream of a join of two streams "
            "(left or right): a worker that runs another query, or another streamkit "
            "version, wrote it; give each query its own app_name"
        )
    return SIDES.index(header.stream)


def _side_of_key(name: str) -> int:
    """The side of a shard named ``stream/shard``."""
    stream, slash, _ = name.partition("/")
    if not slash or stream not in SIDES:
        raise ValueError(
            f"a source shard of a join of two streams is named 'left/<shard id>' or "
            f"'right/<shard id>', got {name!r}"
        )
    return SIDES.index(stream)
