"""What both query handles show about a running query (read-only, thread-safe reads)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

    from streamkit.streaming.contracts import Sink, SourceKind, StreamSource
    from streamkit.streaming.progress import QueryProgress
    from streamkit.streaming.runner import QueryRunner
    from streamkit.streaming.table import UnboundedTable
    from streamkit.streaming.trigger import Trigger


class QueryView:
    """Identity, progress and side tables of a query, read from its runner."""

    _runner: QueryRunner

    @property
    def id(self) -> str:
        """Unique id of this run of the query."""
        return self._runner.id

    @property
    def name(self) -> str:
        """The query's name (``query_name``, else ``query-<id>``)."""
        return self._runner.name

    @property
    def source(self) -> StreamSource:
        return self._runner.source

    @property
    def sink(self) -> Sink:
        return self._runner.sink

    @property
    def trigger(self) -> Trigger:
        return self._runner.trigger

    @property
    def table(self) -> UnboundedTable:
        """The unbounded input table: every decoded micro-batch is appended to it."""
        return self._runner.table

    @property
    def source_kind(self) -> SourceKind:
        """``"replayable"`` (exactly-once restarts) or ``"acknowledging"`` (at-least-once)."""
        return self._runner.feed.kind

    @property
    def last_progress(self) -> QueryProgress | None:
        """Progress of the latest batch."""
        records = self._runner.progress.records
        return records[-1] if records else None

    @property
    def recent_progress(self) -> list[QueryProgress]:
        """Progress of up to the last 100 batches, oldest first."""
        return list(self._runner.progress.records)

    @property
    def dead_letters(self) -> pa.Table | None:
        """Records that could not be decoded (raw bytes, partition, position, reason,
        batch id), the most recent ~SIDE_TABLE_ROWS of them, or None when there were none."""
        return self._runner.side.dead_letters

    @property
    def late_rows(self) -> pa.Table | None:
        """Input rows that arrived behind the watermark (the most recent ~SIDE_TABLE_ROWS),
        or None when there were none."""
        return self._runner.side.late_rows

    @property
    def committed(self) -> tuple[int | None, dict[str, str]]:
        """The last committed batch id (None before the first) and the source positions
        it ends at, per partition (empty for an acknowledging source: Kinesis keeps its
        positions in the lease table)."""
        runner = self._runner
        with runner.cond:
            bid, offsets = runner.next_id - 1, dict(runner.offsets)
        return (bid if bid >= 0 else None), offsets

    @property
    def checkpoint_location(self) -> str | None:
        """Where the query checkpoints (local folder or ``s3://`` URL), None without one."""
        return self._runner.checkpoint_location

    def raise_if_failed(self) -> None:
        """Raise :class:`~streamkit.streaming.runner.StreamingQueryError` if the query
        stopped because of an error; else return."""
        self._runner.raise_if_failed()
