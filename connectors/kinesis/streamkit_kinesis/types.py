"""Value types shared by the Kinesis producer, reader, leases and consumer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class Sentinel(StrEnum):
    """Checkpoint values that are not sequence numbers (KCL's sentinel checkpoints)."""

    TRIM_HORIZON = "TRIM_HORIZON"
    LATEST = "LATEST"
    AT_TIMESTAMP = "AT_TIMESTAMP"
    SHARD_END = "SHARD_END"


@dataclass(frozen=True, order=True)
class ExtendedSequenceNumber:
    """A position in a shard: a sequence number (or a sentinel) and a sub-sequence number.

    Ordering compares real sequence numbers numerically; sentinels are not ordered against
    them (use :meth:`is_sentinel` first).
    """

    sequence_number: str
    """Decimal sequence number as a string, or a :class:`Sentinel` value."""
    sub_sequence_number: int = 0
    """Position inside an aggregated record (always 0 for non-aggregated records)."""

    @property
    def is_sentinel(self) -> bool:
        """True for TRIM_HORIZON / LATEST / AT_TIMESTAMP / SHARD_END."""
        return self.sequence_number in Sentinel.__members__

    def as_int(self) -> int:
        """The numeric sequence number; raises ValueError for a sentinel."""
        if self.is_sentinel:
            raise ValueError(f"{self.sequence_number} is a sentinel, not a sequence number")
        return int(self.sequence_number)

    @classmethod
    def sentinel(cls, value: Sentinel) -> ExtendedSequenceNumber:
        """The position for a sentinel value."""
        return cls(value.value, 0)


TRIM_HORIZON = ExtendedSequenceNumber.sentinel(Sentinel.TRIM_HORIZON)
LATEST = ExtendedSequenceNumber.sentinel(Sentinel.LATEST)
AT_TIMESTAMP = ExtendedSequenceNumber.sentinel(Sentinel.AT_TIMESTAMP)
SHARD_END = ExtendedSequenceNumber.sentinel(Sentinel.SHARD_END)


@dataclass(frozen=True)
class HashKeyRange:
    """The inclusive 128-bit hash key range a shard covers."""

    starting_hash_key: int
    """Lowest hash key of the shard (inclusive)."""
    ending_hash_key: int
    """Highest hash key of the shard (inclusive)."""


@dataclass(frozen=True)
class ShardInfo:
    """A shard as ListShards describes it."""

    shard_id: str
    """Shard id, e.g. ``shardId-000000000000``."""
    parent_shard_ids: tuple[str, ...]
    """Parent (and adjacent parent, after a merge) shard ids; empty for an original shard."""
    hash_key_range: HashKeyRange
    """Hash key range covered."""
    starting_sequence_number: str
    """First sequence number the shard can hold."""
    ending_sequence_number: str | None = None
    """Last sequence number of a closed shard; ``None`` while the shard is open."""

    @property
    def is_closed(self) -> bool:
        """True once the shard was split or merged and accepts no more writes."""
        return self.ending_sequence_number is not None


@dataclass(frozen=True)
class KinesisRecord:
    """One record read from a shard."""

    data: bytes
    """The payload, exactly as produced."""
    partition_key: str
    """Partition key given by the producer."""
    sequence_number: str
    """Sequence number assigned by Kinesis (decimal string)."""
    approximate_arrival: datetime | None = None
    """Server-side arrival time, when the server reports it."""
    sub_sequence_number: int = 0
    """Sub-sequence number (non-zero only for de-aggregated KPL records)."""


@dataclass(frozen=True)
class UserRecord(KinesisRecord):
    """A user record taken out of a KPL aggregated record (a :class:`KinesisRecord` whose
    ``sub_sequence_number`` is its index in the aggregate)."""

    explicit_hash_key: str | None = None
    """The explicit hash key the producer gave (decimal), or None."""


@dataclass(frozen=True)
class RecordBatch:
    """A batch of records from one shard, as yielded to a consumer.

    ``records`` are in shard order. ``first``/``last`` bound the batch; ``millis_behind_latest``
    is the server's lag estimate at the time of the read.
    """

    shard_id: str
    """Shard the records came from."""
    records: Sequence[KinesisRecord]
    """Records in sequence order: a tuple, or (from the polling and fan-out readers) a
    :class:`~streamkit_kinesis.retrieval.record_columns.RecordColumns`, which holds them as
    Arrow columns and builds the objects only when they are read."""
    millis_behind_latest: int | None = None
    """How far the reader is behind the tip of the shard (ms), if reported."""
    shard_ended: bool = False
    """True when this batch reached the end of a closed shard."""
    child_shard_ids: tuple[str, ...] = field(default=())
    """Children reported at SHARD_END (empty when the server does not report them)."""
    child_shards: tuple[ShardInfo, ...] = field(default=())
    """Those children described (parents, hash range) from ``ChildShards``, when given."""

    @property
    def first_sequence_number(self) -> str | None:
        """Sequence number of the first record, or None for an empty batch."""
        return self.records[0].sequence_number if self.records else None

    @property
    def last_sequence_number(self) -> str | None:
        """Sequence number of the last record, or None for an empty batch."""
        return self.records[-1].sequence_number if self.records else None
