"""The lease-table audit: is every hash key covered by an unfinished lease?

KCL 2.x's leader does not list shards periodically. Its ``PeriodicShardSyncManager``
audits the lease table every ``leasesRecoveryAuditorExecutionFrequencyMillis`` (120 s):
the leases not at SHARD_END, sorted by hash range, must cover ``0 .. 2**128 - 1``
without a gap. Only when the *same* hole is seen
``leasesRecoveryAuditorInconsistencyConfidenceThreshold`` (3) audits in a row does it run a
full shard sync (ListShards); an empty table is synced at once. A hole that comes and goes
(a reshard in progress, a lease being cleaned up) never triggers one.

:func:`find_hole` and :class:`HoleTracker` are that rule (pure). Differences from KCL:
the audit reads the take cycle's scan instead of a scan of its own, and a lease written
without a hash range (older streamkit, or another tool) gets it from the shard
descriptions the worker already has, in memory, instead of an UpdateItem.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from streamkit_kinesis.types import HashKeyRange

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from .model import Lease

MIN_HASH_KEY = 0
MAX_HASH_KEY = 2**128 - 1


@dataclass(frozen=True)
class HashRangeHole:
    """A gap in the key space: the lease range that reaches furthest before it and the
    one right after it (``None`` at an end of the key space; both ``None``: no
    unfinished lease with a hash range at all)."""

    before: HashKeyRange | None
    after: HashKeyRange | None

    def describe(self) -> str:
        """Where the hole is, in hash keys (for events and logs)."""
        if self.before is None and self.after is None:
            return "no unfinished lease with a hash range"
        low = MIN_HASH_KEY if self.before is None else self.before.ending_hash_key + 1
        high = MAX_HASH_KEY if self.after is None else self.after.starting_hash_key - 1
        return f"hash keys {low}..{high} uncovered"


def active_ranges(leases: Iterable[Lease], known: Mapping[str, HashKeyRange]) -> list[HashKeyRange]:
    """Hash ranges of the unfinished leases (a lease's own, else ``known[lease_key]``;
    leases with neither are left out, as KCL does), sorted by start then end."""
    ranges = []
    for lease in leases:
        if lease.is_finished:
            continue
        found = lease.hash_key_range or known.get(lease.lease_key)
        if found is not None:
            ranges.append(found)
    return sorted(ranges, key=lambda r: (r.starting_hash_key, r.ending_hash_key))


def find_hole(leases: Iterable[Lease], known: Mapping[str, HashKeyRange]) -> HashRangeHole | None:
    """The first gap in ``0 .. 2**128 - 1`` left by the unfinished leases, or None.

    Overlapping ranges (a parent not yet finished next to its children) are merged, never
    a hole; a gap at either end of the key space is one.
    """
    ranges = active_ranges(leases, known)
    if not ranges:
        return HashRangeHole(None, None)
    if ranges[0].starting_hash_key != MIN_HASH_KEY:
        return HashRangeHole(None, ranges[0])
    edge = ranges[0]  # the range reaching furthest so far
    for current in ranges[1:]:
        if current.starting_hash_key > edge.ending_hash_key + 1:
            return HashRangeHole(edge, current)
        if current.ending_hash_key > edge.ending_hash_key:
            edge = current
    if edge.ending_hash_key != MAX_HASH_KEY:
        return HashRangeHole(edge, None)
    return None


class HoleTracker:
    """Counts how many audits in a row saw the same hole (KCL's ``HashRangeHoleTracker``)."""

    def __init__(self, confidence: int = 3) -> None:
        self.confidence = confidence
        self._hole: HashRangeHole | None = None
        self.seen = 0
        """Audits in a row that saw :attr:`hole` (0: the last audit found none)."""

    def observe(self, hole: HashRangeHole | None) -> bool:
        """Record one audit's finding; True when a shard sync is due (the same hole seen
        ``confidence`` times in a row). The count restarts after that."""
        if hole is None:
            self._hole, self.seen = None, 0
            return False
        self.seen = self.seen + 1 if hole == self._hole else 1
        self._hole = hole
        if self.seen >= self.confidence:
            self._hole, self.seen = None, 0
            return True
        return False
