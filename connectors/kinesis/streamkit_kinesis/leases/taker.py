"""Which leases a worker should take: a pure decision over one snapshot of the lease table.

Expiry is judged only on this worker's monotonic clock: a lease is expired when its counter
has not been seen to change for longer than ``failover_time`` (KCL's
``Lease.isExpired(duration, asOfNanos)``). Owners' wall clocks are never compared.
:class:`LeaseTracker` keeps the "last time the counter changed" map from successive
snapshots; :func:`decide_takes` turns a snapshot and that map into a :class:`TakeDecision`.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from .sync import is_blocked

if TYPE_CHECKING:
    import random
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from .model import Lease


def is_expired(
    lease: Lease, last_change: Mapping[str, float], now: float, failover_time: float
) -> bool:
    """True if ``lease`` is owned and its counter has not moved for more than ``failover_time``.

    A lease missing from ``last_change`` has never been observed and is not expired (it
    might be renewed right now; we give it a full ``failover_time``).
    """
    changed = last_change.get(lease.lease_key)
    return lease.lease_owner is not None and changed is not None and now - changed > failover_time


class LeaseTracker:
    """Remembers, per lease, when this worker last saw its counter change (own clock).

    ``clock`` must be monotonic (``time.monotonic`` by default; inject a fake in tests).
    A lease seen for the first time counts as changed at that moment, so a newcomer never
    treats live leases as expired; leases absent from a snapshot are forgotten.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._counters: dict[str, int] = {}
        self._changed_at: dict[str, float] = {}

    def observe(self, leases: Iterable[Lease]) -> float:
        """Record a full snapshot of the table; returns the clock reading used as "now"."""
        now = self._clock()
        seen: set[str] = set()
        for lease in leases:
            seen.add(lease.lease_key)
            self._note(lease, now)
        for key in set(self._counters) - seen:
            del self._counters[key]
            del self._changed_at[key]
        return now

    def observe_one(self, lease: Lease) -> None:
        """Record one lease as just read or written (e.g. the result of our own take)."""
        self._note(lease, self._clock())

    def _note(self, lease: Lease, now: float) -> None:
        if self._counters.get(lease.lease_key) != lease.lease_counter:
            self._counters[lease.lease_key] = lease.lease_counter
            self._changed_at[lease.lease_key] = now

    def last_changes(self) -> Mapping[str, float]:
        """Read-only view: lease key -> clock reading when its counter last changed."""
        return MappingProxyType(self._changed_at)

    def is_expired(self, lease: Lease, failover_time: float, now: float | None = None) -> bool:
        """:func:`is_expired` against this tracker's map (``now`` defaults to the clock)."""
        at = self._clock() if now is None else now
        return is_expired(lease, self._changed_at, at, failover_time)


@dataclass(frozen=True)
class TakeDecision:
    """What one take cycle should attempt (each take is still a conditional write)."""

    to_take: tuple[Lease, ...]
    """Unowned or expired leases to take."""
    to_steal: tuple[Lease, ...]
    """Live leases to take from the most loaded worker."""
    target: int
    """Leases this worker should hold: ceil(unfinished leases / live workers), capped."""
    live_workers: int
    """Owners of non-expired leases, plus this worker."""
    held: int
    """Non-expired leases this worker holds in the snapshot."""
    left_unowned: int = 0
    """Leases that ``max_leases`` leaves without an owner: active leases beyond
    ``live_workers * max_leases`` (0 without a cap)."""

    @property
    def leases(self) -> tuple[Lease, ...]:
        """Everything to attempt: ``to_take`` then ``to_steal``."""
        return self.to_take + self.to_steal


def decide_takes(
    leases: Sequence[Lease],
    worker_id: str,
    last_change: Mapping[str, float],
    now: float,
    failover_time: float,
    *,
    max_steal: int = 1,
    max_leases: int | None = None,
    rng: random.Random | None = None,
    very_old_after: float = 3.0,
) -> TakeDecision:
    """Decide which leases ``worker_id`` takes, given a snapshot of the lease table.

    - Finished leases (checkpoint SHARD_END) need no owner: they are neither counted nor taken.
      Nor are blocked ones (a parent's lease is not finished yet): they never fill a slot.
    - Live workers = owners of non-expired leases + this worker;
      target = ceil(leases / live workers), capped at ``max_leases``.
    - Unowned and expired leases are taken first, up to the target; among them, as KCL,
      those whose counter has not moved for ``very_old_after * failover_time`` come first.
    - Only when none are available and this worker is below target, it steals from the most
      loaded worker, at most ``max_steal`` per cycle and never so that the victim falls below
      target. One exception, as in KCL: if the victim is exactly at target and this worker
      needs two or more, it steals one, so that (for example) 4 leases over 3 workers end as
      2/1/1 rather than 2/2/0. Each steal strictly narrows the gap, so this never oscillates.
    - ``rng`` shuffles candidates so that workers starting together contend less; without it
      the choice is deterministic (by lease key).
    """
    by_key = {lease.lease_key: lease for lease in leases}
    active = [lease for lease in leases if not lease.is_finished and not is_blocked(lease, by_key)]
    available = [
        lease
        for lease in active
        if lease.is_unowned or is_expired(lease, last_change, now, failover_time)
    ]
    available_keys = {lease.lease_key for lease in available}
    live = [lease for lease in active if lease.lease_key not in available_keys]
    counts: Counter[str] = Counter(lease.lease_owner for lease in live if lease.lease_owner)
    workers = len(counts) + (0 if worker_id in counts else 1)
    target = math.ceil(len(active) / workers) if active else 0
    left_unowned = 0
    if max_leases is not None:
        target = min(target, max_leases)
        left_unowned = max(0, len(active) - workers * max_leases)
    held = counts[worker_id]
    needed = target - held
    decision = TakeDecision((), (), target, workers, held, left_unowned)
    if needed <= 0:
        return decision
    if available:
        old_before = now - very_old_after * failover_time
        is_old = [last_change.get(lease.lease_key, now) < old_before for lease in available]
        very_old = [lease for lease, old in zip(available, is_old, strict=True) if old]
        rest = [lease for lease, old in zip(available, is_old, strict=True) if not old]
        chosen = (_order(very_old, rng) + _order(rest, rng))[:needed]
        return TakeDecision(tuple(chosen), (), target, workers, held, left_unowned)
    steal = _choose_steal(
        live,
        counts=counts,
        worker_id=worker_id,
        needed=needed,
        target=target,
        max_steal=max_steal,
        rng=rng,
    )
    return TakeDecision((), tuple(steal), target, workers, held, left_unowned)


def _order(leases: Sequence[Lease], rng: random.Random | None) -> list[Lease]:
    ordered = sorted(leases, key=lambda lease: lease.lease_key)
    if rng is not None:
        rng.shuffle(ordered)
    return ordered


def _choose_steal(
    live: Sequence[Lease],
    *,
    counts: Counter[str],
    worker_id: str,
    needed: int,
    target: int,
    max_steal: int,
    rng: random.Random | None,
) -> list[Lease]:
    others = sorted((-count, owner) for owner, count in counts.items() if owner != worker_id)
    if not others or max_steal <= 0:
        return []
    victim_count, victim = -others[0][0], others[0][1]
    if victim_count > target:
        n = min(needed, victim_count - target, max_steal)
    elif victim_count == target and needed > 1:
        n = 1
    else:
        return []
    candidates = _order([lease for lease in live if lease.lease_owner == victim], rng)
    return candidates[:n]
