"""A source task's engine for one side of a join of two streams: a batch of one shard's
rows -> the side's rows, routed by the join keys, as chunks per exchange partition.

:meth:`SideStage.run` takes the batch's rows through the side's plan below the join
(filters, projections, ``with_watermark``) and drops the rows with a null in a column
whose nulls Spark filters before the join, with the single-process join's own function
(:func:`~streamkit.streaming.join_sides.side_output`), and measures the batch's largest
event time where the side's ``with_watermark`` sees it, in whole ms (the unit of the
join's watermarks). No row is judged late here: the aggregation task judges them against
the fleet watermark (:mod:`~streamkit.fleet.join_stage`).

:meth:`SideStage.chunks` routes the rows by the side's equality keys in the order of the
join's pairs (:mod:`~streamkit.fleet.routing`: equal keys of the two sides hash
equally), and encodes one chunk per partition, each naming its stream (``left`` or
``right``: :attr:`~streamkit.fleet.chunk.ChunkHeader.stream`), so the two streams'
shards never share an entry of an aggregation task's dedup map even where their shard
ids are equal. Every partition gets a chunk, also without rows (the shard's watermark
progress), in parts that fit an exchange record; a batch re-read after a takeover gives
the same rows in the same order, so the same parts. Start and end markers are those of
:class:`~streamkit.fleet.source_stage.SourceStage`, with the stream.
"""

from __future__ import annotations

import polars as pl

from streamkit.errors import PlanError
from streamkit.streaming.join_sides import side_output

from .chunk import DEFAULT_BUDGET
from .fleet_plan import FleetPlan
from .join_split import JoinSplit
from .source_stage import SourceOutput, _markers, route_chunks


class SideStage:
    """One side's part of a join of two streams in a source task (module docstring)."""

    def __init__(self, fleet: FleetPlan, stream: str, budget: int = DEFAULT_BUDGET) -> None:
        if fleet.joined is None:
            raise PlanError("a side stage runs a side of a join of two streams (FleetPlan.joined)")
        self.fleet, self.stream, self.budget = fleet, stream, budget
        self.split: JoinSplit = fleet.joined
        self._side = JoinSplit.side_of(stream)  # ValueError unless left or right

    def run(self, rows: pl.DataFrame) -> SourceOutput:
        """The side's rows of ``rows`` (the stream's rows as read), their largest event
        time (ms; None: none, or no watermark on this side) and the rows read."""
        side = self.split.sides[self._side]
        out, top = side_output(side, self.split.checked[self._side], rows)
        return SourceOutput(out, top, rows.height)

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
        """Per exchange partition, the parts of its chunk for the batch ``out`` of shard
        ``source`` of this side's stream covering records after ``first`` up to ``last``;
        ``max_event`` is the shard's largest event time so far (ms, cumulative)."""
        return route_chunks(out.states, self.split.keys(self._side), source, first, last,
                            max_event, ended, partitions, query, self.budget,
                            self.stream)  # fmt: skip

    def end_chunks(self, source: str, last: str, partitions: int, query: str) -> list[list[bytes]]:
        """Per exchange partition, the end marker of shard ``source`` of this side's
        stream (:meth:`SourceStage.end_chunks`)."""
        return self._markers(source, last, True, partitions, query)

    def start_chunks(
        self, source: str, after: str | None, partitions: int, query: str
    ) -> list[list[bytes]]:
        """Per exchange partition, the start marker of shard ``source`` of this side's
        stream (:meth:`SourceStage.start_chunks`)."""
        at = "0" if after is None else after
        return self._markers(source, at, False, partitions, query)

    def idle_chunks(
        self, source: str, after: str | None, partitions: int, query: str
    ) -> list[list[bytes]]:
        """Per exchange partition, the idle marker of shard ``source`` of this side's
        stream (:meth:`SourceStage.idle_chunks`)."""
        at = "0" if after is None else after
        return self._markers(source, at, False, partitions, query, idle=True)

    def _markers(
        self, source: str, at: str, ended: bool, partitions: int, query: str, *, idle: bool = False
    ) -> list[list[bytes]]:
        return _markers(source, at, ended, partitions, query, self.stream, idle=idle)
