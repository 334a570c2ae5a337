"""The progress records a running query keeps: its last 100 batches and any stall."""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from streamkit.streaming.progress import PhaseDurations, QueryProgress

if TYPE_CHECKING:
    from streamkit.streaming.contracts import SourceBatch
    from streamkit.streaming.contracts.batches import PartitionProgress


class ProgressLog:
    """Progress of up to the last 100 batches (oldest first) in :attr:`records`; during
    a stall, one idle record is the latest (see :meth:`stall`)."""

    def __init__(self) -> None:
        self.records: deque[QueryProgress] = deque(maxlen=100)
        self._idle: QueryProgress | None = None
        self._last_start: float | None = None

    def batch(  # noqa: PLR0917
        self,
        bid: int,
        batch: SourceBatch,
        late: int,
        out_rows: int,
        phases: PhaseDurations,
        started: float,
        watermark: datetime | None,
        state_rows: int,
    ) -> QueryProgress:
        """Record committed batch ``bid``, started at ``started`` on the query's clock."""
        n = batch.rows.num_rows
        since = started - self._last_start if self._last_start is not None else None
        self._last_start = started
        record = QueryProgress(
            batch_id=bid,
            timestamp=datetime.now(UTC),
            num_input_rows=n,
            input_rows_per_second=n / since if since else 0.0,
            processed_rows_per_second=n / (phases.total or 1e-9),
            durations=phases,
            watermark=watermark,
            state_rows=state_rows,
            late_rows=late,
            dead_letters=batch.dead_letters.num_rows,
            output_rows=out_rows,
            partitions=batch.partitions,
        )
        self.records.append(record)
        return record

    def stall(
        self,
        stalled: tuple[PartitionProgress, ...],
        last_bid: int,
        watermark: datetime | None,
        state_rows: int,
    ) -> QueryProgress | None:
        """While partitions cannot be read (an endpoint outage the source retries for
        ever), keep one idle record as the latest (0 rows, the last batch's id, those
        partitions, as Spark reports idle triggers), replaced while the stall lasts and
        dropped when it ends (``stalled`` empty). Returns the idle record, if any."""
        records = self.records
        if not stalled:
            if self._idle is not None and records and records[-1] is self._idle:
                records.pop()  # the stall is over: the last batch is the latest again
            self._idle = None
            return None
        idle = QueryProgress(
            batch_id=last_bid, timestamp=datetime.now(UTC), num_input_rows=0,
            input_rows_per_second=0.0, processed_rows_per_second=0.0,
            durations=PhaseDurations(), watermark=watermark, state_rows=state_rows,
            late_rows=0, dead_letters=0, output_rows=0, partitions=stalled,
        )  # fmt: skip
        if records and records[-1] is self._idle:
            records[-1] = idle
        else:
            records.append(idle)
        self._idle = idle
        return idle
