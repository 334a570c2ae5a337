"""The contracts between the micro-batch engine and its sources, sinks and checkpoint store.

Offsets are plain JSON-able mappings (partition id -> position string) so that every source
(Kinesis shards, Kafka partitions, file listings, memory) checkpoints the same way.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pyarrow as pa

Offsets = Mapping[str, str]
"""Position reached per partition (shard id, topic-partition, file listing...)."""

DEAD_LETTER_SCHEMA_FIELDS = ("raw", "partition", "position", "reason", "batch_id")
"""Columns of the dead-letter table: raw bytes, where the record came from, and why."""


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


@dataclass(frozen=True)
class SourceBatch:
    """What a source hands to the engine for one micro-batch.

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


class StreamSource(Protocol):
    """A replayable source of micro-batches.

    Guarantee required by exactly-once: after ``open(offsets)``, batches contain exactly the
    records after ``offsets`` in partition order, so replaying from a committed offsets
    entry yields the same records again.
    """

    @property
    def schema(self) -> pa.Schema:
        """Schema of decoded rows (declared, or inferred once and then enforced)."""
        ...

    async def open(self, offsets: Offsets | None) -> None:
        """Start reading after ``offsets`` (None: the source's initial position)."""
        ...

    async def next_batch(self, max_wait: float) -> SourceBatch | None:
        """The records available now (waiting at most ``max_wait`` s), or None if none."""
        ...

    async def end_offsets(self) -> Offsets:
        """The current end of every partition (for ``available_now``)."""
        ...

    def reached(self, offsets: Offsets, target: Offsets) -> bool:
        """True when ``offsets`` is at or past ``target`` on every partition."""
        ...

    async def commit(self, offsets: Offsets) -> None:
        """Called after a batch is committed (e.g. advance Kinesis lease checkpoints)."""
        ...

    async def close(self) -> None:
        """Release resources (leases, connections)."""
        ...


@runtime_checkable
class ProjectingSource(Protocol):
    """A source that can decode only some columns (projection pushdown). The engine calls
    :meth:`read_only` before ``open`` when the query reads a subset of the columns and the
    unbounded input table keeps no rows, so nobody can see the other columns."""

    def read_only(self, columns: Collection[str] | None) -> bool:
        """From now on, rows hold only ``columns`` (in schema order; None: every column).
        Returns False, changing nothing, when this source cannot (e.g. a custom decoder)."""
        ...


class Sink(Protocol):
    """Receives each micro-batch's output once per batch id.

    Idempotent sinks (memory, Parquet) replace the output of a batch id that is written
    again after a restart, which makes the whole query exactly-once.
    """

    async def add_batch(self, batch_id: int, table: pa.Table) -> None:
        """Write ``table`` as the output of ``batch_id``; return when it is durable."""
        ...

    async def close(self) -> None:
        """Flush and release resources."""
        ...


class CheckpointStore(Protocol):
    """Atomic small-file storage under a checkpoint location (local dir or s3:// prefix)."""

    def write_bytes(self, relative_path: str, data: bytes) -> None:
        """Write ``data`` atomically: readers see the old content or the new, never a mix."""
        ...

    def read_bytes(self, relative_path: str) -> bytes | None:
        """The content, or None when absent."""
        ...

    def list(self, relative_dir: str) -> list[str]:
        """Names (not paths) of the files directly under ``relative_dir``, sorted."""
        ...

    def delete(self, relative_path: str) -> None:
        """Remove a file if present."""
        ...
