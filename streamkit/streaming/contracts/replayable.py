"""The replayable source contract (Kinesis, Kafka, files, memory): exactly-once restarts."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pyarrow as pa

    from streamkit.streaming.contracts.batches import Offsets, SourceBatch


class ReplayableSource(Protocol):
    """A source that can seek: it has offsets, and replays from them.

    Guarantee required by exactly-once: after ``open(offsets)``, batches contain exactly the
    records after ``offsets`` in partition order, so replaying from a committed offsets
    entry yields the same records again. ``end_offsets`` gives a concrete end, which makes
    ``available_now`` and ``process_all_available`` exact.
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
        """The current end of every partition (for ``available_now``). Only ``reached``
        reads the values, so a value may stand for an end the source is still finding
        (Kinesis: its readers find each shard's end as they read)."""
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


@runtime_checkable
class BoundedSource(Protocol):
    """A replayable source that can re-read one exact range: what Spark's offset log gives
    a restart. After a crash between ``offsets/N`` and ``commits/N`` the engine opens the
    source at the committed offsets, calls ``bound(offsets/N)``, and fetches until the
    source ``reached`` them, so batch N is re-run with exactly the records it had.
    """

    def bound(self, target: Offsets | None) -> None:
        """Until ``bound(None)``, no batch goes past ``target`` on any partition (records
        beyond it stay unread, for later batches); partitions absent from ``target`` give
        nothing."""
        ...
