"""What every aggregation task's engine keeps besides its operator's state: per source
shard what was applied (the dedup map) and its event-time maximum, the fleet watermark,
the counters, and the checkpoint of all of it with the operator's state.

:class:`ExchangeTask` is the base of :class:`~streamkit.fleet.aggregation_stage.
AggregationStage` (an aggregation, ``drop_duplicates`` or a chain) and
:class:`~streamkit.fleet.join_stage.JoinStage` (a join of two streams); the watermark
rules are step 6 of :mod:`~streamkit.fleet.aggregation_stage` (a join's: the minimum of
its two sides', :mod:`~streamkit.fleet.join_stage`).

Checkpointed state (:meth:`ExchangeTask.checkpoint_state`, through the engine's
:class:`~streamkit.streaming.checkpoint.CheckpointLog`): the operator's state as
snapshots and deltas, plus ``fleet/<batch>`` (a checksummed JSON file: dedup map, shard
maxima, end flags, watermarks, counters), written before the caller's commit.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Protocol

import polars as pl

from streamkit.streaming import _envelope as envelope
from streamkit.streaming import agg_steps
from streamkit.streaming.batch_result import BatchResult
from streamkit.streaming.checkpoint import CheckpointDamagedError, CheckpointLog, location_of

from .chunk import ChunkError, ChunkHeader
from .fleet_plan import FleetPlan
from .source_progress import SourceProgress


class TaskState(Protocol):
    """An operator's state as a task checkpoints it (a changelogged store)."""

    def take_changes(self) -> pl.DataFrame | None:
        """The delta since the last call (None: only a snapshot will do)."""
        ...

    def rows(self) -> pl.DataFrame:
        """The whole state."""
        ...

    @property
    def change_keys(self) -> list[str]:
        """Columns identifying a row of a delta."""
        ...

    def load(self, state: pl.DataFrame | None) -> None:
        """Replace the state with a checkpointed :meth:`rows` (None: empty)."""
        ...

    @property
    def height(self) -> int:
        """Rows held."""
        ...


class ExchangeTask(ABC):
    """The source shards, fleet watermark and checkpoint of one aggregation task
    (module docstring); subclasses run the operator (:meth:`apply`)."""

    _store: TaskState

    def _track(self, fleet: FleetPlan, query: str | None) -> None:
        """What every task's engine keeps besides its operator's state: the source shards
        (dedup map, maxima, idle flags), the fleet watermark and the counters. Idleness is
        declared by the sources (idle markers), so the task has no timeout of its own."""
        self.fleet, self.query = fleet, query
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

    @abstractmethod
    def apply(self, records: Sequence[bytes], now: float) -> BatchResult:
        """One micro-batch of exchange records."""

    @property
    @abstractmethod
    def owes_batch(self) -> bool:
        """Whether a no-data batch is due (:meth:`run_no_data`)."""

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

    def _check_query(self, header: ChunkHeader) -> None:
        if self.query is not None and header.query != self.query:
            raise ChunkError(
                f"chunk of query {header.query!r} read by query {self.query!r}: two queries "
                "share one exchange stream; give each query its own app_name"
            )

    # -- watermark ---------------------------------------------------------------------
    def expect_sources(self, ids: Iterable[str]) -> None:
        """The source shards that exist and have not finished (the caller refreshes it,
        e.g. each lease cycle); those not heard from yet hold the fleet watermark back
        (step 6 of :mod:`~streamkit.fleet.aggregation_stage`). Checkpointed with the
        state."""
        self._expected = frozenset(str(i) for i in ids)

    def hold_sources(self, ids: Iterable[str]) -> None:
        """Source shards whose lease is changing hands (no live owner, or a new owner
        for less than ``idle_timeout``; the caller refreshes it, e.g. each lease cycle):
        they count as active even when their last word was an idle marker, so records
        put to an idle shard while its reader died hold the watermark until the next
        owner said it is idle again, and a previous owner's idle marker arriving after the
        next owner started is not believed. Not checkpointed."""
        self._holding = frozenset(str(i) for i in ids)

    @property
    def waiting_for(self) -> list[str]:
        """Expected source shards without an event time yet (no whole range with one
        applied): they hold the watermark back, those heard from only while active."""
        known = {n for n, p in self._sources.items() if p.max_event is not None}
        return sorted(self._expected - known)

    def _held(self, now: float) -> bool:
        """Whether an expected shard without an event time holds the watermark: one never
        heard from always, one heard from until its reader said it is idle, or it ended."""
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
        """Holds the watermark back: its reader did not say it is idle (an idle marker
        since its last range), or its lease is changing hands (:meth:`hold_sources`), and
        it did not end. Silence alone is never idleness: a shard whose reader is slow,
        stalled or dead holds the watermark however long it is silent (its rows are then
        never found late), and only a live reader at the shard's tip lets it go. An ended
        shard still named by :meth:`expect_sources` counts as not ended: the lease table
        the caller read predates its SHARD_END checkpoint, so it may not list the shard's
        children yet (created before that checkpoint), which must hold the watermark from
        then."""
        awake = not progress.idle or name in self._holding
        return awake and not (progress.ended and name not in self._expected)

    def _update_watermark(self, now: float) -> None:
        if not self._watermarked:
            return
        if self._held(now):  # a shard without an event time yet: no basis until it has one
            return
        self.watermark = self._advanced(now)

    @property
    def _watermarked(self) -> bool:
        """Whether the plan has a watermark (a join: on either side)."""
        return self.fleet.mark is not None

    def _advanced(self, now: float) -> int | None:
        """The fleet watermark from the shards' maxima at clock reading ``now`` (no shard
        holds it): ``min`` over the active ones, ``max`` over all when none is, less the
        delay, never below the current one."""
        mark = self.fleet.mark
        assert mark is not None
        active: list[int] = []
        everyone: list[int] = []
        for name, p in self._sources.items():
            if p.max_event is not None:
                everyone.append(p.max_event)
                if self._active(name, p, now):
                    active.append(p.max_event)
        basis = min(active) if active else max(everyone, default=None)
        unit = self.fleet.time_unit()
        return agg_steps.next_watermark(self.watermark, basis, mark.delay_ns, unit)

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


def _path(batch_id: int) -> str:
    return f"fleet/{batch_id:012d}"
