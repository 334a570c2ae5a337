"""Write-free leader decision: one worker runs the shard audit/sync and lease cleanup.

KCL 2.x's default ``DeterministicShuffleShardSyncLeaderDecider`` elects from the lease
table it already reads: the distinct ``leaseOwner`` values, sorted, shuffled by
``java.util.Random(1947)`` (``Collections.shuffle``), the first
``numPeriodicShardSyncWorkers`` (1) lead; when no lease is owned (a fresh table) every
worker leads. No item is written for it. :func:`elect_leaders` applies the same rule
bit for bit (the shuffle is Java's; proven against a JVM in the tests), so a streamkit
worker and a Java KCL 2.x worker sharing a table agree on the leader.

One difference, on purpose: KCL counts every owner named in the table, so a dead worker
stays leader until all its leases were taken (and KCL re-elects every 5 minutes, with an
extra Scan). Here the decision is re-made on every take cycle from that cycle's scan (no
extra read), and only owners of leases that are not expired on this worker's clock
(counter moved within ``failover_time``) count: a dead leader's role moves at the first
take cycle after ``failover_time``, even before its leases are taken.

Guarantee: workers that saw the same table elect the same single leader. Scans taken at
different moments can disagree briefly (two leaders or none for one take interval);
everything a leader does is idempotent (conditional creates, deletes), so that costs a
repeated call, never a wrong result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .taker import is_expired

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from .model import Lease

SHUFFLE_SEED = 1947
"""KCL's ``DETERMINISTIC_SHUFFLE_SEED``."""

_MULTIPLIER = 0x5DEECE66D
_MASK = (1 << 48) - 1


class JavaRandom:
    """``java.util.Random``'s generator (48-bit LCG), as much of it as a shuffle needs."""

    def __init__(self, seed: int) -> None:
        self._seed = (seed ^ _MULTIPLIER) & _MASK

    def _next(self, bits: int) -> int:
        self._seed = (self._seed * _MULTIPLIER + 0xB) & _MASK
        return self._seed >> (48 - bits)

    def next_int(self, bound: int) -> int:
        """``Random.nextInt(bound)``: uniform in ``[0, bound)``."""
        r = self._next(31)
        m = bound - 1
        if bound & m == 0:  # a power of two
            return (bound * r) >> 31
        u = r
        while True:
            r = u % bound
            if u - r + m < 1 << 31:  # Java: no int overflow
                return r
            u = self._next(31)


def java_shuffle(items: Sequence[str], seed: int = SHUFFLE_SEED) -> list[str]:
    """``Collections.shuffle(list, new Random(seed))`` of a copy of ``items``."""
    out = list(items)
    rnd = JavaRandom(seed)
    for i in range(len(out), 1, -1):
        j = rnd.next_int(i)
        out[i - 1], out[j] = out[j], out[i - 1]
    return out


def java_sorted(values: Iterable[str]) -> list[str]:
    """Sorted as Java's ``String.compareTo`` sorts (by UTF-16 code unit)."""
    return sorted(values, key=lambda v: v.encode("utf-16-be", "surrogatepass"))


def elect_leaders(owners: Iterable[str], count: int = 1) -> frozenset[str]:
    """KCL's rule: distinct ``owners``, sorted, shuffled with seed 1947, the first
    ``count``. Empty when there is no owner (then every worker leads)."""
    return frozenset(java_shuffle(java_sorted(set(owners)))[:count])


def live_owners(
    leases: Iterable[Lease], last_change: Mapping[str, float], now: float, failover_time: float
) -> set[str]:
    """Owners of the leases not expired at ``now`` (see :func:`~.taker.is_expired`)."""
    return {
        lease.lease_owner
        for lease in leases
        if lease.lease_owner is not None and not is_expired(lease, last_change, now, failover_time)
    }


class LeaderDecider:
    """Whether this worker leads, re-decided from each take cycle's scan (no writes)."""

    def __init__(self, worker_id: str, failover_time: float, count: int = 1) -> None:
        self.worker_id = worker_id
        self._failover = failover_time
        self._count = count
        self._leaders: frozenset[str] | None = None  # None: no scan seen yet

    @property
    def is_leader(self) -> bool:
        """True when the last scan elected this worker, or nobody owns a live lease.
        False before the first scan."""
        if self._leaders is None:
            return False
        return not self._leaders or self.worker_id in self._leaders

    @property
    def leaders(self) -> frozenset[str]:
        """The workers the last scan elected (empty: every worker leads)."""
        return self._leaders or frozenset()

    def observe(
        self, leases: Iterable[Lease], last_change: Mapping[str, float], now: float
    ) -> None:
        """Decide from a scan of the table (``last_change``: the take cycle's tracker)."""
        self._leaders = elect_leaders(
            live_owners(leases, last_change, now, self._failover), self._count
        )

    def forget(self) -> None:
        """Stop leading (the worker stops): decided again by the next scan."""
        self._leaders = None
