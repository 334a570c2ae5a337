"""Typed progress records, one per micro-batch."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from streamkit.streaming.contracts import PartitionProgress


@dataclass(frozen=True)
class PhaseDurations:
    """Seconds spent in each phase of a micro-batch."""

    fetch: float = 0.0
    """Reading raw records from the source."""
    decode: float = 0.0
    """Turning them into Arrow rows (and dead letters)."""
    execute: float = 0.0
    """Running the plan and merging partial aggregates."""
    state: float = 0.0
    """Writing the state snapshot."""
    sink: float = 0.0
    """Handing the output to the sink until it acknowledged it."""
    commit: float = 0.0
    """Writing the offsets and commit logs and committing the source."""

    @property
    def total(self) -> float:
        """Sum of all phases."""
        return self.fetch + self.decode + self.execute + self.state + self.sink + self.commit


@dataclass(frozen=True)
class QueryProgress:
    """What one micro-batch did."""

    batch_id: int
    """Id of the batch (the sink received it with this id)."""
    timestamp: datetime
    """When the batch started (UTC)."""
    num_input_rows: int
    """Decoded input rows (late rows included, dead letters not)."""
    input_rows_per_second: float
    """Input rows over the time since the previous batch started."""
    processed_rows_per_second: float
    """Input rows over this batch's own duration."""
    durations: PhaseDurations
    """Time per phase."""
    watermark: datetime | None
    """Event-time watermark after the batch (None without ``with_watermark``)."""
    state_rows: int
    """Groups held in aggregation state after the batch."""
    late_rows: int
    """Rows older than the watermark in this batch (kept in the late-rows table)."""
    dead_letters: int
    """Records that could not be decoded in this batch (kept in the dead-letter table)."""
    output_rows: int
    """Rows handed to the sink."""
    partitions: tuple[PartitionProgress, ...] = field(default=())
    """Per partition: records, lag and lease owner."""
