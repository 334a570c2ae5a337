"""A source task's engine: one batch of a source shard's rows -> chunks per exchange partition.

:meth:`SourceStage.run` reduces the batch to partial states with the single-process
engine's kernel (:func:`~streamkit.streaming.agg_steps.partial_states`), and measures the
batch's largest event time over the rows that move the watermark (Spark's rule, as
:class:`~streamkit.streaming.incremental.IncrementalQuery` applies it), on the event-time
column as it reaches ``with_watermark`` (computed or renamed below it:
:mod:`~streamkit.streaming.event_times`). No row is judged
late here: lateness is judged where the fleet watermark is known, in the aggregation task.

:meth:`SourceStage.chunks` routes the states by their group key
(:mod:`~streamkit.fleet.routing`) and encodes one chunk per partition, split into parts
that fit an exchange record (:func:`~streamkit.fleet.chunk.split_parts`). Every partition
gets at least one chunk, also without rows: it carries the shard's watermark progress.
:meth:`SourceStage.end_chunks` are the end markers of a shard that ended after a range
already emitted, :meth:`SourceStage.start_chunks` the start markers of a shard whose task
starts reading it, :meth:`SourceStage.idle_chunks` the idle markers of a shard whose reader
found nothing new at its tip for ``idle_timeout`` (every partition gets one of each).
The encoding is deterministic for the same rows (states merged per window for sliding
windows, sorted by their keys), so a batch re-read after a takeover yields the same parts;
the static tables of stream-static joins are fixed for the query's life for that reason
(:mod:`~streamkit.fleet.static_snapshot`).

For a ``drop_duplicates`` plan the rows sent are the batch's rows after the part of the
plan below it, in arrival order, keeping the first row of each key of the batch when that
cannot change which rows are late (no watermark, or its column among the keys: rows of one
key then have one event time); routed by the keys.

When the aggregation task's late-row count would otherwise differ from the rows read
that the single-process engine counts (a sliding window, a stream-static join below, the
first row of a key standing for the batch's rows of it), what is sent carries the rows
read each row stands for (:mod:`~streamkit.fleet.late_rows`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import polars as pl

from streamkit import aggregate as K
from streamkit.errors import PlanError
from streamkit.execute import aggregate_rows, compile_plan, given
from streamkit.streaming import agg_steps
from streamkit.streaming.event_times import EventTimes
from streamkit.streaming.watermark_input import ROW, counted, threaded
from streamkit.windows import TimeWindow

from . import late_rows
from .chunk import DEFAULT_BUDGET, ChunkHeader, encode_chunk, split_parts
from .fleet_plan import FleetPlan
from .late_rows import LATE
from .routing import split_by_partition


@dataclass(frozen=True)
class SourceOutput:
    """What one source batch produced."""

    states: pl.DataFrame
    """Partial states of the batch's rows (sorted by the state keys), with
    ``__late_rows`` where ``__n`` is not the rows read they stand for
    (:mod:`~streamkit.fleet.late_rows`); for ``drop_duplicates``, the rows to send."""
    max_event: int | None
    """Largest event time of the batch's rows that move the watermark (ticks; None:
    none, or no watermark)."""
    rows: int
    """Rows read in the batch."""


class SourceStage:
    """Partial aggregation of a source task (module docstring)."""

    def __init__(self, fleet: FleetPlan, budget: int = DEFAULT_BUDGET) -> None:
        if fleet.stateless:
            raise PlanError(
                "a stateless plan needs no source stage: run it in each source task with "
                "the single-process engine (FleetPlan.stateless)"
            )
        if fleet.joined is not None:
            raise PlanError(
                "the source tasks of a join of two streams run a SideStage per stream "
                "(streamkit.fleet.join_source)"
            )
        self.fleet, self.budget = fleet, budget
        self.spec = fleet.spec if fleet.agg is not None else None
        self._times = EventTimes.of(fleet.mark) if fleet.mark is not None else None
        """The event time as computed below the watermark (None: the column as read)."""
        self._below = fleet.below
        """The plan below the stateful operator, with :data:`ROW` threaded through it when
        a stream-static join may repeat a row read (:meth:`_settle`)."""
        window = self.spec.window if self.spec is not None else None
        self._sliding = isinstance(window, TimeWindow) and not window.is_tumbling
        self._late_counts = fleet.drops_late and self._sliding
        """Whether partial states may carry :data:`~streamkit.fleet.late_rows.LATE` (a
        sliding window, or a join that repeats a row read in this batch)."""
        self._settled = not fleet.static

    def run(self, rows: pl.DataFrame) -> SourceOutput:
        """Partial states (or, for ``drop_duplicates``, the rows to deduplicate), batch
        maximum event time and row count of ``rows`` (the stream's rows as read, before
        any filter). The static sides of the plan's stream-static joins are refreshed
        first, as the single-process engine does before each batch."""
        self.fleet.refresh_static()
        self._settle()
        if self.fleet.dedup is not None:
            return SourceOutput(self._distinct(rows), self._max_event(rows), rows.height)
        agg = self.fleet.agg
        assert agg is not None
        assert self.spec is not None
        extra = None
        if not self._late_counts:
            states = agg_steps.partial_states(agg, self.spec, rows)
        else:  # a sliding window: the kernel counts the rows of each bucket's last window
            kept = self._operator_input(rows)
            last = LATE if self._sliding else None
            states = K.partial(aggregate_rows(kept.lazy(), agg, self.spec), self.spec, last)
            extra = late_rows.surplus(kept, agg, self.spec)  # copies a join made of a row
        window = self.spec.window
        if isinstance(window, TimeWindow) and not window.is_tumbling and states.height:
            sums = (LATE,) if LATE in states.columns else ()
            states = K.merge(states, self.spec, sums)  # one row per window and key
        if extra is not None and states.height:
            states = late_rows.with_counts(states, extra, self.spec)
        if LATE in states.columns:  # a count of one batch's rows: 4 bytes on the exchange
            states = states.with_columns(pl.col(LATE).cast(pl.UInt32))
        if self.spec.state_keys and states.height:
            states = states.sort(self.spec.state_keys, nulls_last=True, maintain_order=True)
        return SourceOutput(states, self._max_event(rows), rows.height)

    def _settle(self) -> None:
        """Once the static sides are pinned (fixed for the query's life on a fleet):
        thread :data:`ROW` through the plan below when a join may repeat a row read
        (:func:`~streamkit.fleet.late_rows.joins_may_repeat`)."""
        if self._settled:
            return
        self._settled = True
        below = self.fleet.below
        if late_rows.joins_may_repeat(below):
            self._below = threaded(below, below.chain()[-1]) or below
            self._late_counts = self.fleet.drops_late

    def _operator_input(self, rows: pl.DataFrame) -> pl.DataFrame:
        """The stateful operator's input rows of ``rows`` (the rows as read), with
        :data:`ROW` (the row read each comes from) when a join may repeat one."""
        if self._below is not self.fleet.below:
            rows = rows.with_row_index(ROW)
        return compile_plan(self._below, None, set(), given(rows)).collect()

    def _distinct(self, rows: pl.DataFrame) -> pl.DataFrame:
        """The rows below the ``drop_duplicates``, the first of each key of the batch when
        that is safe (module docstring), with the rows read each stands for when that is
        not one (:func:`~streamkit.fleet.late_rows.dedup_counts`)."""
        node, mark = self.fleet.dedup, self.fleet.mark
        assert node is not None
        kept = self._operator_input(rows)
        first_only = mark is None or mark.column in node.keys
        if kept.height and mark is not None and (first_only or ROW in kept.columns):
            return late_rows.dedup_counts(kept, node.keys, first_only)
        if kept.height and first_only:
            kept = kept.filter(pl.struct(node.keys).is_first_distinct())
        return kept.drop(ROW, strict=False)

    def _max_event(self, rows: pl.DataFrame) -> int | None:
        mark = self.fleet.mark
        if mark is None or not rows.height:
            return None
        timed = rows if self._times is None else self._times.timed(rows)
        ticks = timed[mark.column].dt.epoch(self.fleet.time_unit())
        mask = counted(rows, self.fleet.counts)
        if mask is not None:
            ticks = ticks.filter(mask)
        top = ticks.max()
        return int(top) if isinstance(top, int) else None

    def chunks(  # noqa: PLR0917
        self,
        out: SourceOutput,
        source: str,
        first: str | None,
        last: str,
        max_event: int | None,
        ended: bool,
        partitions: int,
        query: str,
    ) -> list[list[bytes]]:
        """Per exchange partition, the parts of its chunk (in put order) for the batch
        ``out`` of ``source`` covering records after ``first`` up to ``last``;
        ``max_event`` is the shard's largest event time so far (cumulative)."""
        return route_chunks(out.states, self.fleet.route_keys, source, first, last,
                            max_event, ended, partitions, query, self.budget)  # fmt: skip

    @staticmethod
    def end_chunks(source: str, last: str, partitions: int, query: str) -> list[list[bytes]]:
        """Per exchange partition, the end marker of ``source`` (one part, no rows): the
        shard ended after ``last``, the end of the range it emitted last
        (:attr:`~streamkit.fleet.chunk.ChunkHeader.is_end`). Sent again after a takeover,
        it is the same bytes (a duplicate, dropped)."""
        return _markers(source, last, True, partitions, query)

    @staticmethod
    def start_chunks(
        source: str, after: str | None, partitions: int, query: str
    ) -> list[list[bytes]]:
        """Per exchange partition, the start marker of ``source`` (one part, no rows, no
        event time): a source task starts reading it after ``after`` (its checkpoint; None:
        the shard's start, sent as ``"0"``)
        (:attr:`~streamkit.fleet.chunk.ChunkHeader.is_start`). It applies no range: an
        aggregation task that knows nothing of the shard hears of it (so ``idle_timeout``
        counts from then), one that does ignores it; sent again after a takeover or a
        restart it changes nothing."""
        return _markers(source, "0" if after is None else after, False, partitions, query)

    @staticmethod
    def idle_chunks(
        source: str, after: str | None, partitions: int, query: str
    ) -> list[list[bytes]]:
        """Per exchange partition, the idle marker of ``source`` (one part, no rows): its
        reader read it up to ``after`` (None: nothing, sent as ``"0"``) and found nothing
        newer at its tip for ``idle_timeout``
        (:attr:`~streamkit.fleet.chunk.ChunkHeader.is_idle`): the shard stops holding the
        fleet watermark back until its next chunk."""
        at = "0" if after is None else after
        return _markers(source, at, False, partitions, query, idle=True)


def route_chunks(  # noqa: PLR0917
    rows: pl.DataFrame,
    keys: list[str],
    source: str,
    first: str | None,
    last: str,
    max_event: int | None,
    ended: bool,
    partitions: int,
    query: str,
    budget: int,
    stream: str = "",
) -> list[list[bytes]]:
    """Per exchange partition, the parts of its chunk (in put order) for a batch of shard
    ``source`` covering records after ``first`` up to ``last``: ``rows`` routed by ``keys``
    (:mod:`~streamkit.fleet.routing`), split into parts of at most ``budget`` bytes; every
    partition gets a chunk, also without rows. ``stream``: the join side the shard belongs
    to (empty: the fleet's one stream). Shared by :meth:`SourceStage.chunks` and
    :meth:`~streamkit.fleet.join_source.SideStage.chunks`."""
    if not last.isdigit():
        raise ValueError(f"last must be a sequence number string, got {last!r}")
    frames = split_by_partition(rows, keys, partitions)
    header = ChunkHeader(query, source, first, last, 0, 1, max_event, ended, 0)
    if stream:
        header = replace(header, stream=stream)
    return [split_parts(header, frame, budget) for frame in frames]


def _markers(  # noqa: PLR0917
    source: str,
    at: str,
    ended: bool,
    partitions: int,
    query: str,
    stream: str | None = None,
    *,
    idle: bool = False,
) -> list[list[bytes]]:
    """One marker chunk (``first == last == at``, no rows) per partition; ``stream``: the
    join side's stream the shard belongs to (None: the fleet's one stream); ``idle``: an
    idle marker."""
    if not at.isdigit():
        raise ValueError(f"a marker's position must be a sequence number string, got {at!r}")
    header = ChunkHeader(query, source, at, at, 0, 1, None, ended, 0, idle=idle)
    if stream is not None:
        header = replace(header, stream=stream)
    return [[encode_chunk(header, pl.DataFrame())] for _ in range(partitions)]
