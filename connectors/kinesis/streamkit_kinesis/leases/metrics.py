"""Counters for lease-store calls, per-call timings, and the coordinator's metrics snapshot."""

from __future__ import annotations

import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping


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


OPERATION_KEY = {"TakeLeases": "WorkerIdentifier", "RenewAllLeases": "WorkerIdentifier"}
"""The second dimension of each operation's call metrics (``ShardId`` for the others)."""


@dataclass(frozen=True)
class CallStat:
    """The calls of one kind since the last :meth:`CallTimings.drain`."""

    operation: str
    """The KCL's ``Operation`` dimension (``TakeLeases``, ``RenewAllLeases``, ``ProcessTask``)."""
    name: str
    """The metric prefix (``TakeLease``, ``KinesisDataFetcher.getRecords``, ...); empty for
    the operation's own ``Time`` and ``Success``."""
    key: str
    """The value of the operation's second dimension: the worker id (lease operations, see
    :data:`OPERATION_KEY`) or the shard id."""
    millis: Mapping[int, int]
    """Durations in whole milliseconds (rounded) -> calls that took that long."""
    calls: int
    successes: int


class Call:
    """One timed call; :meth:`failed` marks it failed although nothing was raised."""

    __slots__ = ("ok",)

    def __init__(self) -> None:
        self.ok = True

    def failed(self) -> None:
        """Count this call as a failure."""
        self.ok = False


class CallTimings:
    """Latency and outcome of lease and Kinesis calls, the KCL's per-call ``Time`` and
    ``Success`` metrics (thread-safe; recording is off until :attr:`enabled` is set, so a
    consumer nobody reports on keeps nothing).

    A call counts as a success when the block it times raises nothing (and is not marked
    :meth:`Call.failed`), as KCL's ``MetricsUtil.addSuccessAndLatency`` in a ``finally``: a
    conditional write that loses its race is a failed ``TakeLease``, as in KCL."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._stats: dict[tuple[str, str, str], tuple[Counter[int], list[int]]] = {}
        self.enabled = False

    @contextmanager
    def timed(self, operation: str, name: str, key: str) -> Iterator[Call]:
        """Time the block as one call of ``name`` (``""``: the operation itself) under
        ``operation`` for ``key`` (see :class:`CallStat`)."""
        call = Call()
        if not self.enabled:
            yield call
            return
        start = self._clock()
        try:
            yield call
        except BaseException:
            call.failed()
            raise
        finally:
            self.record(operation, name, key, (self._clock() - start) * 1000, call.ok)

    def record(self, operation: str, name: str, key: str, millis: float, ok: bool) -> None:
        """Add one call that took ``millis`` ms and succeeded or not."""
        if not self.enabled:
            return
        with self._lock:
            times, counts = self._stats.setdefault((operation, name, key), (Counter(), [0, 0]))
            times[round(millis)] += 1
            counts[0] += 1
            counts[1] += ok

    def drain(self) -> list[CallStat]:
        """Everything recorded since the last drain (then forgotten)."""
        with self._lock:
            stats, self._stats = self._stats, {}
        return [
            CallStat(op, name, key, MappingProxyType(dict(times)), calls, ok)
            for (op, name, key), (times, (calls, ok)) in stats.items()
        ]
