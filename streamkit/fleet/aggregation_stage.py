"""An aggregation task's engine: chunks of one exchange partition -> the query's output.

One :meth:`AggregationStage.apply` is one micro-batch (the chunks read in one poll):

1. decode every chunk (a damaged or foreign one refuses the whole batch with a
   :class:`~streamkit.fleet.chunk.ChunkError`; nothing changes);
2. drop duplicates: per source shard the stage keeps the last applied ``(range end,
   part)``; a chunk at or before it was applied already (a re-emission after a takeover)
   and is dropped and counted (:attr:`duplicates_dropped`); the next chunk of a shard must
   be the next part of the same range, or part 0 of a range that starts where the last
   one ended, else :class:`~streamkit.fleet.source_progress.ChunkOrderError` (records lost
   or reordered on the exchange; :mod:`~streamkit.fleet.source_progress`);
3. take each shard's event-time maximum and end flag (once the last part of a range is
   applied, or from an end marker that follows it) and arrival time (the injected clock);
   a start marker (a source task started reading the shard) of a shard not known yet
   records it as heard of, with no range applied
   (:data:`~streamkit.fleet.source_progress.NOTHING`) and no event time,
   and is otherwise ignored (neither applied nor counted as a duplicate);
4. judge late partial states against the watermark in force in the previous batch
   (``__wend <= late_mark`` is dropped, as the single-process engine drops late rows;
   without a window, a group key carrying the watermark ``<= late_mark``) and count the
   rows read they stand for (:attr:`late_rows`: ``__late_rows`` summed where the source
   sent it, else ``__n``; :mod:`~streamkit.fleet.late_rows`), the single-process engine's
   count;
5. merge into the engine's state store (:func:`~streamkit.streaming.state.make_store`),
   evict and emit per output mode with the watermark in force in this batch, run the
   operations after the aggregation (the same steps as
   :class:`~streamkit.streaming.incremental.IncrementalQuery`,
   :mod:`~streamkit.streaming.agg_steps`);
6. the fleet watermark after the batch: ``min`` over the source shards that have an event
   time, did not end (an end marker or a chunk flagged ``ended``, and no longer named by
   :meth:`expect_sources`), and were not declared idle by their reader (an idle marker
   since their last range; or their lease is changing hands, :meth:`hold_sources`), of
   ``max_event - delay`` (Spark's whole-ms arithmetic); the ``max`` over all of them when
   none is active; it never decreases. Silence never makes a shard idle, whatever the
   clock. A shard named by :meth:`expect_sources` (the source shards that exist and are
   not finished, from the source lease table) holds it where it is until a whole range of
   it with an event time is applied: while it sent nothing (a shard whose task starts
   late cannot find its rows late), and once it sent a start marker until its reader
   declares it idle (a shard that never receives a record). Without
   :meth:`expect_sources` only the shards heard from count.

For a ``drop_duplicates`` plan, steps 4 and 5 are those of the single-process engine's
:class:`~streamkit.streaming.dedup.StreamingDedup` over the chunks' rows (late rows, each
counted as the rows read it stands for, against
the watermark in force in the previous batch, the first row of each key not held is
emitted, keys evicted with the watermark in force in this batch), its key store checkpointed
like the aggregation's. For a chain (``drop_duplicates`` then an aggregation,
:attr:`FleetPlan.chain`), the rows it emits then go through the operators above it with
the same two watermarks, and the state checkpointed is every operator's
(:mod:`~streamkit.fleet.chain_tail`).

Driving it (an aggregation task, per poll of its exchange shard): records read ->
``apply(records, now)``, sink the output, ``checkpoint_state(log, batch_id)``, commit,
checkpoint the exchange lease; a poll without records -> ``refresh(now)`` and, if
:attr:`owes_batch`, ``run_no_data(now)`` as a batch of its own. ``now`` is the task's
clock in seconds (``time.monotonic`` in production, injected in tests).

Checkpointed state (:meth:`checkpoint_state`, through the engine's
:class:`~streamkit.streaming.checkpoint.CheckpointLog`): the store as snapshots and deltas,
plus ``fleet/<batch>`` (a checksummed JSON file: dedup map, shard maxima, end flags,
watermarks, counters), written before the caller's commit. The shard tracking, watermark
and checkpoint are shared with a join's task (:mod:`~streamkit.fleet.exchange_task`).
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from streamkit import aggregate as K
from streamkit.errors import PlanError
from streamkit.streaming import agg_steps
from streamkit.streaming.batch_result import BatchResult
from streamkit.streaming.dedup import StreamingDedup
from streamkit.streaming.state import StateStore, make_store
from streamkit.streaming.state.dedup import DedupStore
from streamkit.streaming.watermark_lineage import dedup_time_columns
from streamkit.windows import WEND

from .chain_tail import ChainTail
from .chunk import ChunkError, decode_chunk
from .exchange_task import ExchangeTask
from .fleet_plan import FleetPlan
from .late_rows import LATE
from .source_progress import advance


class AggregationStage(ExchangeTask):
    """The engine of one aggregation task (module docstring)."""

    def __init__(
        self,
        fleet: FleetPlan,
        *,
        query: str | None = None,
    ) -> None:
        if fleet.stateless:
            raise PlanError("a stateless plan has no aggregation stage (FleetPlan.stateless)")
        if fleet.joined is not None:
            raise PlanError(
                "a join of two streams runs in a JoinStage (streamkit.fleet.join_stage)"
            )
        self._track(fleet, query)
        self._dedup: StreamingDedup | None = None
        self._tail: ChainTail | None = None
        self._store: StateStore | DedupStore | ChainTail
        if fleet.chain is not None:
            self._tail = ChainTail(fleet)
            self._dedup, self._store = self._tail.dedup, self._tail
        elif fleet.dedup is not None:
            times = dedup_time_columns(fleet.dedup, fleet.mark, fleet.above)
            self._dedup = StreamingDedup(fleet.dedup, fleet.mark, times)
            self._store = self._dedup.store
        else:
            self.spec = fleet.spec
            self._store = make_store(self.spec, fleet.key_mark)

    # -- per batch ---------------------------------------------------------------------
    def apply(self, records: Sequence[bytes], now: float) -> BatchResult:
        """One micro-batch of exchange records (steps 1-6 of the module docstring).
        ``late_rows`` of the result holds the partial states (or ``drop_duplicates`` rows)
        dropped as late, as sent (with ``__late_rows`` when the source sent it)."""
        decoded = [decode_chunk(r) for r in records]
        sources = dict(self._sources)
        fresh: list[pl.DataFrame] = []
        dropped = 0
        for header, rows in decoded:
            self._check_query(header)
            if header.stream:
                raise ChunkError(
                    f"chunk from source {header.key!r} of a join of two streams read by a "
                    "query that reads one stream: two queries share one exchange stream; "
                    "give each query its own app_name"
                )
            outcome = advance(sources, header, now)
            dropped += outcome == "duplicate"
            if outcome == "applied" and rows.height:
                fresh.append(rows)
        self._sources, self.duplicates_dropped = sources, self.duplicates_dropped + dropped
        late_mark, in_force = self._in_force, self.watermark
        self._update_watermark(now)
        self._in_force = in_force
        if self._dedup is not None:
            return self._deduplicate(fresh, late_mark, in_force)
        states = _weighted(fresh, K.ROWS)
        late = states.head(0)
        if late_mark is not None and states.height and self._drops_late:
            key = self.fleet.key_mark
            is_late = (
                pl.col(WEND) <= late_mark
                if key is None
                else (pl.col(key).to_physical() <= late_mark).fill_null(False)
            )
            late, states = states.filter(is_late), states.filter(~is_late)
            count = LATE if LATE in late.columns else K.ROWS
            self.late_rows += int(late[count].sum()) if late.height else 0
        states = states.drop(LATE, strict=False)
        store, agg = self._store, self.agg
        assert not isinstance(store, DedupStore | ChainTail)
        assert agg is not None
        touched = store.merge(states)
        timed = self.fleet.window_mark is not None or self.fleet.key_mark is not None
        evict = in_force if timed else None
        output = agg_steps.emit(store, agg, self.spec, self.mode, touched, evict)
        return BatchResult(self._finish(output), late, self.watermark)

    def _deduplicate(
        self, fresh: list[pl.DataFrame], late_mark: int | None, in_force: int | None
    ) -> BatchResult:
        """Steps 4 and 5 of a ``drop_duplicates`` plan (the engine's StreamingDedup)."""
        dedup, node = self._dedup, self.fleet.dedup
        assert dedup is not None
        assert node is not None
        empty = pl.DataFrame(schema=node.input.schema)
        rows = _weighted([empty, *fresh], None)
        rows, late = dedup.split_late(rows, late_mark)
        self.late_rows += int(late[LATE].sum()) if LATE in late.columns else late.height
        output = dedup.run(rows.drop(LATE, strict=False), in_force)
        if self._tail is not None:  # a chain: the aggregation above, with the same marks
            output = self._tail.run(output, late_mark, in_force)
            return BatchResult(output, late, self.watermark)
        return BatchResult(self._finish(output), late, self.watermark)

    @property
    def owes_batch(self) -> bool:
        """True when the fleet watermark moved past the one in force in the last batch,
        in append or update mode with a watermark (as ``IncrementalQuery.owes_batch``;
        a chain in any mode: its ``drop_duplicates`` runs in append mode, as in
        ``ChainQuery.owes_batch``),
        also right after a :meth:`restore`: the batch the previous owner owed is owed by
        the next one (unlike a restarted single-process query, which owes none until input
        comes, as Spark: here input may never come again for this exchange partition)."""
        first = "append" if self._tail is not None else self.mode  # a chain's first's mode
        if self.fleet.mark is None or first == "complete":
            return False
        return agg_steps.watermark_moved(self.watermark, self._in_force, restored=False)

    @property
    def _drops_late(self) -> bool:
        return self.fleet.drops_late

    def _finish(self, rows: pl.DataFrame) -> pl.DataFrame:
        if self.fleet.above is None:
            return rows
        from streamkit.execute import compile_plan, given

        return compile_plan(self.fleet.above, None, set(), given(rows)).collect()

    def current_result(self) -> pl.DataFrame:
        """The result over all groups held (what complete mode would emit)."""
        if self._tail is not None:
            return self._tail.current_result()
        if self.agg is None:
            raise PlanError("a drop_duplicates stage has no result over its state")
        return self._finish(agg_steps.final(self._store.rows(), self.agg, self.spec))


def _weighted(frames: list[pl.DataFrame], rows: str | None) -> pl.DataFrame:
    """``frames`` as one; where some carry :data:`LATE` and others do not (chunks of a
    version that sent none), theirs is ``rows`` (``__n``; None: one per row)."""
    if not frames:
        return pl.DataFrame()
    frame = pl.concat(frames, how="diagonal_relaxed")
    if LATE in frame.columns and any(LATE not in f.columns for f in frames if f.height):
        frame = frame.with_columns(pl.col(LATE).fill_null(pl.col(rows) if rows else 1))
    return frame
