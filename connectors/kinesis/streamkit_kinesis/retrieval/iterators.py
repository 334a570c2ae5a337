"""Where a shard iterator starts: :class:`IteratorStart`, one of the five
GetShardIterator types, built from a checkpoint, a timestamp or given as is."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from streamkit_kinesis.types import ExtendedSequenceNumber, Sentinel

if TYPE_CHECKING:
    from mypy_boto3_kinesis.literals import ShardIteratorTypeType


@dataclass(frozen=True)
class IteratorStart:
    """Where a shard iterator starts: one of the five GetShardIterator types."""

    iterator_type: ShardIteratorTypeType
    """TRIM_HORIZON, LATEST, AT_SEQUENCE_NUMBER, AFTER_SEQUENCE_NUMBER or AT_TIMESTAMP."""
    sequence_number: str | None = None
    """For AT_/AFTER_SEQUENCE_NUMBER."""
    timestamp: datetime | None = None
    """For AT_TIMESTAMP."""

    @classmethod
    def trim_horizon(cls) -> IteratorStart:
        """The oldest record still in the shard."""
        return cls("TRIM_HORIZON")

    @classmethod
    def latest(cls) -> IteratorStart:
        """Just after the newest record (only records put from now on)."""
        return cls("LATEST")

    @classmethod
    def at_sequence(cls, sequence_number: str) -> IteratorStart:
        """The record with this sequence number, inclusive."""
        return cls("AT_SEQUENCE_NUMBER", sequence_number=sequence_number)

    @classmethod
    def after_sequence(cls, sequence_number: str) -> IteratorStart:
        """Just after this sequence number (resume from a checkpoint)."""
        return cls("AFTER_SEQUENCE_NUMBER", sequence_number=sequence_number)

    @classmethod
    def at_timestamp(cls, timestamp: datetime) -> IteratorStart:
        """The first record that arrived at or after ``timestamp``."""
        return cls("AT_TIMESTAMP", timestamp=timestamp)

    @classmethod
    def of(cls, start: ExtendedSequenceNumber | datetime | IteratorStart) -> IteratorStart:
        """From a checkpoint (a sequence number means AFTER it), a timestamp, or as is.

        SHARD_END and AT_TIMESTAMP (without a timestamp) cannot start an iterator; SHARD_END
        is handled by :class:`ShardReader` (the reader starts ended).
        """
        if isinstance(start, IteratorStart):
            return start
        if isinstance(start, datetime):
            return cls.at_timestamp(start)
        if not start.is_sentinel:
            return cls.after_sequence(start.sequence_number)
        if start.sequence_number == Sentinel.TRIM_HORIZON.value:
            return cls.trim_horizon()
        if start.sequence_number == Sentinel.LATEST.value:
            return cls.latest()
        raise ValueError(f"cannot start an iterator at {start.sequence_number}; pass a datetime")
