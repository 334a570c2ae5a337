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
   :meth:`expect_sources`), and sent a chunk less than ``idle_timeout`` seconds ago, of
   ``max_event - delay`` (Spark's whole-ms arithmetic); the ``max`` over all of them when
   none is active; it never decreases. A shard named by :meth:`expect_sources` (the
   source shards that exist and are not finished, from the source lease table) holds it
   where it is until a whole range of it with an event time is applied: whatever the
   clock while it sent nothing (a shard whose task starts late cannot find its rows
   late), and while it is active once it sent something (a start marker counts: a shard
   that never receives a record stops holding ``idle_timeout`` after its task started,
   as an idle one does). Without
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
watermarks, counters), written before the caller's commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

import polars as pl

from streamkit import aggregate as K
from streamkit.errors import PlanError
from streamkit.streaming import _envelope as envelope
from streamkit.streaming import agg_steps
from streamkit.streaming.batch_result import BatchResult
from streamkit.streaming.checkpoint import CheckpointDamagedError, CheckpointLog, location_of
from streamkit.streaming.dedup import StreamingDedup
from streamkit.streaming.state import StateStore, make_store
from streamkit.streaming.state.dedup import DedupStore
from streamkit.streaming.watermark_lineage import dedup_time_columns
from streamkit.windows import WEND

from .chain_tail import ChainTail
from .chunk import ChunkError, ChunkHeader, decode_chunk
from .fleet_plan import FleetPlan
from .join_state import JoinState
from .late_rows import LATE
from .source_progress import SourceProgress, advance

DEFAULT_IDLE_TIMEOUT = 30.0


class AggregationStage:
    """The engine of one aggregation task (module docstring)."""

    def __init__(
        self,
        fleet: FleetPlan,
        *,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        query: str | None = None,
    ) -> None:
        if fleet.stateless:
            raise PlanError("a stateless plan has no aggregation stage (FleetPlan.stateless)")
        if fleet.joined is not None:
            raise PlanError(
                "a join of two streams runs in a JoinStage (streamkit.fleet.join_stage)"
            )
        self._track(fleet, idle_timeout, query)
        self._dedup: StreamingDedup | None = None
        self._tail: ChainTail | None = None
        self._store: StateStore | DedupStore | ChainTail | JoinState
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

    def _track(self, fleet: FleetPlan, idle_timeout: float, query: str | None) -> None:
        """What every task's engine keeps besides its operator's state: the source shards
        (dedup map, maxima), the fleet watermark and the counters."""
        if idle_timeout <= 0:
            raise PlanError(f"idle_timeout must be > 0 seconds, got {idle_timeout}")
        self.fleet, self.idle_timeout, self.query = fleet, idle_timeout, query
        self.agg, self.mode = fleet.agg, fleet.mode
        self._sources: dict[str, SourceProgress] = {}
        self._expected: frozenset[str] = frozenset()
        self._holding: frozenset[str] = frozenset()
        self.watermark: int | None = None
        """The fleet watermark after the batches applied so far (ticks)."""
        self._in_force: int | None = None
        self.duplicates_dropped = 0
        """Chunks dropped because they were applied already."""
        self.late_rows = 0
        """Rows read that were dropped as late, as the single-process engine counts them
        (each row read once, late when all its windows are dropped)."""

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
        assert not isinstance(store, DedupStore | ChainTail | JoinState)
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

    def run_no_data(self, now: float) -> BatchResult:
        """A batch without records (Spark's no-data batch): evicts and emits what the
        watermark now in force closed."""
        return self.apply([], now)

    def refresh(self, now: float) -> int | None:
        """Recompute the fleet watermark at clock reading ``now`` without a batch (a
        source shard may have gone idle); then :attr:`owes_batch` tells whether a no-data
        batch is due. Returns the watermark."""
        self._update_watermark(now)
        return self.watermark

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

    def _check_query(self, header: ChunkHeader) -> None:
        if self.query is not None and header.query != self.query:
            raise ChunkError(
                f"chunk of query {header.query!r} read by query {self.query!r}: two queries "
                "share one exchange stream; give each query its own app_name"
            )

    def _finish(self, rows: pl.DataFrame) -> pl.DataFrame:
        if self.fleet.above is None:
            return rows
        from streamkit.execute import compile_plan, given

        return compile_plan(self.fleet.above, None, set(), given(rows)).collect()

    # -- watermark ---------------------------------------------------------------------
    def expect_sources(self, ids: Iterable[str]) -> None:
        """The source shards that exist and have not finished (the caller refreshes it,
        e.g. each lease cycle); those not heard from yet hold the fleet watermark back
        (module docstring, step 6). Checkpointed with the state."""
        self._expected = frozenset(str(i) for i in ids)

    def hold_sources(self, ids: Iterable[str]) -> None:
        """Source shards whose lease is changing hands (no live owner, or a new owner
        for less than ``idle_timeout``; the caller refreshes it, e.g. each lease cycle):
        they count as active however long they have been silent, so a shard whose reader
        died is not taken for idle and its rows, read again by the next owner, are not
        found late. Not checkpointed (a restored stage counts every shard active)."""
        self._holding = frozenset(str(i) for i in ids)

    @property
    def waiting_for(self) -> list[str]:
        """Expected source shards without an event time yet (no whole range with one
        applied): they hold the watermark back, those heard from only while active."""
        known = {n for n, p in self._sources.items() if p.max_event is not None}
        return sorted(self._expected - known)

    def _held(self, now: float) -> bool:
        """Whether an expected shard without an event time holds the watermark: one never
        heard from always, one heard from until it is idle or ended."""
        for name in self._expected:
            if not self._timed(name):
                continue
            progress = self._sources.get(name)
            if progress is None:
                return True
            if progress.max_event is None and self._active(name, progress, now):
                return True
        return False

    def _timed(self, name: str) -> bool:
        """Whether source shard ``name`` has an event time to wait for (every shard here;
        a join's shards of a side without a watermark have none)."""
        return True

    def _active(self, name: str, progress: SourceProgress, now: float) -> bool:
        """Sent a chunk less than ``idle_timeout`` ago and not ended. An ended shard still
        named by :meth:`expect_sources` counts as not ended: the lease table the caller
        read predates its SHARD_END checkpoint, so it may not list the shard's children
        yet (created before that checkpoint), which must hold the watermark from then."""
        fresh = progress.seen is None or now - progress.seen < self.idle_timeout
        return fresh and not (progress.ended and name not in self._expected)

    def _update_watermark(self, now: float) -> None:
        mark = self.fleet.mark
        if mark is None:
            return
        for name, progress in self._sources.items():
            if progress.seen is None or name in self._holding:  # restored, or changing hands
                self._sources[name] = replace(progress, seen=now)
        if self._held(now):  # a shard without an event time yet: no basis until it has one
            return
        active: list[int] = []
        everyone: list[int] = []
        for name, p in self._sources.items():
            if p.max_event is not None:
                everyone.append(p.max_event)
                if self._active(name, p, now):
                    active.append(p.max_event)
        basis = min(active) if active else max(everyone, default=None)
        unit = self.fleet.time_unit()
        self.watermark = agg_steps.next_watermark(self.watermark, basis, mark.delay_ns, unit)

    # -- observation -------------------------------------------------------------------
    @property
    def fleet_watermark(self) -> int | None:
        """The fleet watermark (ticks of the watermark column; None before any event)."""
        return self.watermark

    @property
    def source_watermarks(self) -> dict[str, int]:
        """Per source shard with an event time: its ``max_event - delay`` (ticks)."""
        mark = self.fleet.mark
        if mark is None:
            return {}
        out = {}
        for name, p in self._sources.items():
            wm = self.fleet.source_watermark(p.max_event)
            if wm is not None:
                out[name] = wm
        return out

    @property
    def watermark_ms(self) -> int | None:
        """The fleet watermark in ms since the epoch (for status files)."""
        return self.fleet.to_ms(self.watermark)

    @property
    def sources(self) -> dict[str, SourceProgress]:
        """What the stage knows of each source shard."""
        return dict(self._sources)

    @property
    def in_force(self) -> int | None:
        """Watermark in force in the last batch (late-row threshold of the next)."""
        return self._in_force

    @property
    def state_rows(self) -> int:
        """Groups held in state."""
        return self._store.height

    def current_result(self) -> pl.DataFrame:
        """The result over all groups held (what complete mode would emit)."""
        if self._tail is not None:
            return self._tail.current_result()
        if self.agg is None:
            raise PlanError("a drop_duplicates stage has no result over its state")
        return self._finish(agg_steps.final(self._store.rows(), self.agg, self.spec))

    # -- checkpoint --------------------------------------------------------------------
    def checkpoint_state(self, log: CheckpointLog | None, batch_id: int) -> None:
        """The state after ``batch_id`` into ``log`` (before the caller's commit): the
        store as a delta or snapshot, then ``fleet/<batch>`` with the dedup map and the
        shard maxima. Without a log the store's changes are dropped."""
        if log is None:
            self._store.take_changes()
            return
        log.write_changes(batch_id, self._store)
        body = {
            "batch_id": batch_id, "watermark": self.watermark, "in_force": self._in_force,
            "sources": {name: p.to_json() for name, p in self._sources.items()},
            "expected": sorted(self._expected),
            "duplicates_dropped": self.duplicates_dropped, "late_rows": self.late_rows,
        }  # fmt: skip
        log.store.write_bytes(_path(batch_id), envelope.seal_json(body))
        if batch_id % log.keep == 0:  # the files no restorable batch needs (one list per keep)
            for name in log.store.list("fleet"):
                if name.isdigit() and int(name) < batch_id - log.keep:
                    log.store.delete(f"fleet/{name}")

    def restore(self, log: CheckpointLog, batch_id: int) -> None:
        """Resume after committed batch ``batch_id``: its state, dedup map, shard maxima
        and expected shards; every restored shard counts as active at the next clock
        reading; a no-data batch the watermark owed after ``batch_id`` is owed at once
        (:attr:`owes_batch`): the previous owner may have died before running it. Raises
        :class:`~streamkit.streaming.checkpoint.CheckpointDamagedError` when the files
        cannot be read back."""
        state = log.state_at(batch_id)
        raw = log.store.read_bytes(_path(batch_id))
        where = f"{location_of(log.store).rstrip('/')}/{_path(batch_id)}"
        if raw is None:
            raise CheckpointDamagedError(location_of(log.store), [f"{where} is missing"])
        try:
            body = envelope.open_json(raw, where, ValueError)
            sources = {str(n): SourceProgress.from_json(p) for n, p in body["sources"].items()}
            watermark, in_force = body["watermark"], body["in_force"]
            counters = int(body["duplicates_dropped"]), int(body["late_rows"])
            expected = frozenset(str(i) for i in body.get("expected", []))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointDamagedError(location_of(log.store), [f"{where}: {exc}"]) from None
        self._store.load(state)
        self._sources, self.watermark, self._in_force = sources, watermark, in_force
        self.duplicates_dropped, self.late_rows = counters
        self._expected = expected


def _weighted(frames: list[pl.DataFrame], rows: str | None) -> pl.DataFrame:
    """``frames`` as one; where some carry :data:`LATE` and others do not (chunks of a
    version that sent none), theirs is ``rows`` (``__n``; None: one per row)."""
    if not frames:
        return pl.DataFrame()
    frame = pl.concat(frames, how="diagonal_relaxed")
    if LATE in frame.columns and any(LATE not in f.columns for f in frames if f.height):
        frame = frame.with_columns(pl.col(LATE).fill_null(pl.col(rows) if rows else 1))
    return frame


def _path(batch_id: int) -> str:
    return f"fleet/{batch_id:012d}"
