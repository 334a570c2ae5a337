"""Counters for lease-store calls and the coordinator's metrics snapshot."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping


class CallCounter:
    """Counts store calls by operation name (thread-safe; boto3 calls run in threads).

    For DynamoDB the operation names are the API names (``UpdateItem``, ``Scan``, ...) and
    every request counts once, including each page of a paged scan and each poll of a wait.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def record(self, operation: str, n: int = 1) -> None:
        """Add ``n`` calls of ``operation``."""
        with self._lock:
            self._counts[operation] = self._counts.get(operation, 0) + n

    def snapshot(self) -> Mapping[str, int]:
        """A read-only copy of the counts so far, by operation."""
        with self._lock:
            return MappingProxyType(dict(self._counts))

    @property
    def total(self) -> int:
        """All calls so far."""
        with self._lock:
            return sum(self._counts.values())


@dataclass(frozen=True)
class LeaseMetrics:
    """What one :class:`~.coordinator.LeaseCoordinator` did since it was created."""

    worker_id: str
    """The coordinator's worker id."""
    held: int
    """Leases held right now."""
    takes: int
    """Unowned or expired leases taken."""
    steals: int
    """Leases taken from a live worker to balance the load."""
    losses: int
    """Leases lost (renewal or checkpoint rejected, or not renewed for ``failover_time``)."""
    releases: int
    """Leases released on purpose (graceful shutdown)."""
    renewals: int
    """Successful renewals."""
    take_cycles: int
    """Completed take cycles (snapshot, decide, take)."""
    renew_cycles: int
    """Completed renewal cycles."""
    transient_errors: int
    """Store calls that failed transiently and were retried on a later cycle."""
    store_calls: int
    """Lease-store calls made through this coordinator's store (all operations)."""
    store_calls_by_operation: Mapping[str, int] = field(default_factory=dict)
    """``store_calls`` split by operation."""
    left_unowned: int = 0
    """Leases that ``max_leases`` left without an owner at the last take cycle (live workers
    x ``max_leases`` < active leases): their shards are not read. A warning is logged too."""
    is_leader: bool = True
    """Whether this worker runs shard sync and lease cleanup (holds the leader lease, or
    no election runs)."""
