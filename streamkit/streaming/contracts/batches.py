"""What sources hand to the engine: offsets, per-partition progress, and the two batch
types (a replayable source's :class:`SourceBatch`, an acknowledging source's
:class:`AckBatch`).

Offsets are plain JSON-able mappings (partition id -> position string) so that every
replayable source (Kinesis shards, Kafka partitions, file listings, memory) checkpoints the
same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    import pyarrow as pa

Offsets = Mapping[str, str]
"""Position reached per partition (shard id, topic-partition, file listing...)."""

DEAD_LETTER_SCHEMA_FIELDS = ("raw", "partition", "position", "reason", "batch_id")
"""Columns of the dead-letter table: raw bytes, where the record came from, and why."""

T = TypeVar("T")


@dataclass(frozen=True)
class PartitionProgress:
    """Per-partition facts reported with a fetched batch."""

    partition: str
    """Shard id / topic-partition / file path."""
    records: int = 0
    """Records fetched from this partition in this batch."""
    lag_ms: int | None = None
    """How far behind the tip (ms), if known (Kinesis MillisBehindLatest)."""
    owner: str | None = None
    """Lease owner (worker id) holding this partition, if leases are used."""
    state: str = "reading"
    """``"reading"``, or ``"backing off"`` while its endpoint is out (retried for ever)."""
    consecutive_errors: int = 0
    """Retryable failures in a row (0 while reading)."""
    last_error: str | None = None
    """The latest retryable failure, if any (kept after recovery)."""


@dataclass(frozen=True)
class SourceBatch:
    """What a replayable source hands to the engine for one micro-batch.

    ``rows`` are decoded and schema-checked; records that could not be decoded are in
    ``dead_letters`` (never dropped silently). ``end_offsets`` is the position after the
    last record of this batch, per partition; committing it means "everything up to here
    is processed".
    """

    rows: pa.Table
    """Decoded records, conforming to the source's schema."""
    dead_letters: pa.Table
    """Undecodable records with raw bytes, partition, position and reason."""
    end_offsets: Offsets
    """Positions after this batch, per partition (merged with previous offsets)."""
    partitions: tuple[PartitionProgress, ...] = field(default=())
    """Per-partition records, lag and owner."""
    fetch_seconds: float = 0.0
    """Time spent fetching raw records."""
    decode_seconds: float = 0.0
    """Time spent decoding them into Arrow."""
    row_partitions: pa.Array | None = None
    """The partition of each row of ``rows`` (same length; strings or dictionary-encoded
    strings), for per-partition watermarks; None when the source cannot tell (the batch
    then counts as one partition)."""
    open_partitions: frozenset[str] | None = None
    """Partitions the source reads now that have not reached their end (Kinesis: shards
    held; Kafka: partitions assigned), declared to the per-partition watermarks: one that
    delivered no row yet holds the watermark back until it delivers or is idle. None: the
    source declares nothing (only partitions that delivered a row count)."""
    ended_partitions: frozenset[str] = frozenset()
    """Partitions whose every record was handed over (Kinesis SHARD_END): they stop
    holding the watermark back."""


@dataclass(frozen=True)
class AckBatch(Generic[T]):
    """What an acknowledging source hands to the engine for one micro-batch: rows and
    dead letters as in :class:`SourceBatch`, and instead of offsets an opaque ``token``
    that the engine passes back to ``ack`` once the batch is committed."""

    rows: pa.Table
    """Decoded records, conforming to the source's schema."""
    dead_letters: pa.Table
    """Undecodable records with raw bytes, partition, position and reason."""
    token: T
    """Opaque to the engine (an SQS receipt-handle list, a Pub/Sub ack-id list...)."""
    partitions: tuple[PartitionProgress, ...] = field(default=())
    """Per-partition records, lag and owner."""
    fetch_seconds: float = 0.0
    """Time spent fetching raw records."""
    decode_seconds: float = 0.0
    """Time spent decoding them into Arrow."""
