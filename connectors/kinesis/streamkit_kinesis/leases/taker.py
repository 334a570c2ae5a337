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
    announce: bool = False
    """An announcing take (see :func:`decide_takes`): attempt ``to_take`` in order until
    ONE succeeds, then run the next take cycle soon (the coordinator: after a quarter of a
    take interval) instead of a full interval later."""

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
    reserve: float | None = None,
    announce: bool = False,
) -> TakeDecision:
    """Decide which leases ``worker_id`` takes, given a snapshot of the lease table.

    - Finished leases (checkpoint SHARD_END) need no owner: they are neither counted nor taken.
      Nor are blocked ones (a parent's lease is not finished yet): they never fill a slot.
    - Live workers = owners of non-expired leases + this worker;
      target = ceil(leases / live workers), capped at ``max_leases``.
    - Unowned and expired leases are taken first, never beyond the target. They are shared
      out over the live workers seen in the snapshot, lowest first (water-filling), so that
      after a worker loss every survivor ends within floor/ceil of the fair share in one
      cycle instead of the first takers filling up to ceil and the last ones waiting for
      steals. When more than one worker is seen, the share is this worker's slice of the
      available leases in key order, worker ids ranked: every worker computes the same split
      from the same snapshot, so they do not collide. The slices are a courtesy, not a
      claim: another worker may never take its slice (it is capped by its own
      ``max_leases``, is a Java KCL worker, or died since the snapshot), so a lease still
      available ``reserve`` seconds after it became so (unowned: since its counter was
      last seen to change; expired: since it expired) is taken by any worker below target,
      as KCL would. ``reserve`` should cover one take cycle of every worker (the
      coordinator passes 1.5 take intervals); default ``2 * failover_time``, KCL's take
      interval. A worker that sees itself alone takes
      every available lease up to target; among them, as KCL, those whose counter has not
      moved for ``very_old_after * failover_time`` come first.
    - Only when none are available and this worker is below target, it steals, at most
      ``max_steal`` per cycle. Workers below target are matched to the leases the others
      hold over target (most needy to most loaded, ranked by count then id), so that
      concurrent thieves, which see the same snapshot, never all pick the same victim and
      push it below target. One exception, as in KCL: when nobody is over target, a worker
      that needs two or more steals one lease from each of up to ``needed - 1`` (and
      ``max_steal``) workers exactly at target (each such worker loses at most one per
      cycle), so that (for example) 4 leases over 3 workers end as 2/1/1 rather than 2/2/0.
      Each steal strictly narrows the gap, so this never oscillates.
    - With ``announce`` (off by default, KCL's way; for fleets): a worker that
      holds nothing, while no live owner holds more than one lease and two or more leases
      are available, takes just ONE lease (the first of ``to_take`` that it wins) and
      looks again soon (:attr:`TakeDecision.announce`). Why: workers that start together
      on a fresh table each see themselves alone (a worker that owns nothing is
      invisible), so each would take everything it can; they race for every lease, end
      with a random split and then need steals, ``max_steal`` a cycle (KCL: 1), to even
      out. Announcing makes every starter visible at the cost of one write; on its quick
      second cycle each sees all the announcers and the share-out above splits the rest
      exactly (same snapshot, same slices; a snapshot taken while others are filling
      their slices gives the same slices but for who gets the +1 remainders, as filled
      slices shrink in place; a rare collision is left to the reserve rule and steals).
      A worker that starts alone pays one short delay (a quarter of a take interval)
      before taking the rest, hence opt-in. Measured (bench/fleet_leases.py, 1,064
      leases, 10/25/50 workers, ``max_steal`` 1): balanced 0.3 cycles after start in
      lockstep and 0.5-1 cycle on DynamoDB Local, against 7-9 cycles for KCL's race; the
      first cycle's writes drop from workers x leases to about leases + workers. A late
      starter (after the share-out) and a Java KCL worker sharing the table are not
      affected: an owner with two or more leases ends the announce phase, and a KCL
      worker counts announcers as workers (its target shrinks) while its own takes are
      the usual conditional writes.
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
    if announce and held == 0 and len(available) > 1 and max(counts.values(), default=0) <= 1:
        return TakeDecision(
            tuple(_order(available, rng)), (), target, workers, held, left_unowned, announce=True
        )
    if available:
        chosen = _choose_takes(
            available, counts, worker_id, target, last_change, now,
            very_old_after * failover_time, rng, failover_time,
            2 * failover_time if reserve is None else reserve,
        )  # fmt: skip
        return TakeDecision(tuple(chosen[:needed]), (), target, workers, held, left_unowned)
    steal = _choose_steal(
        live,
        counts=counts,
        worker_id=worker_id,
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


def _order_ids(ids: Sequence[str], rng: random.Random | None) -> list[str]:
    """Sorted; shuffled with ``rng`` (workers that own nothing are not in anyone's snapshot,
    so two of them cannot be told apart: a shuffle spreads them)."""
    ordered = sorted(ids)
    if rng is not None:
        rng.shuffle(ordered)
    return ordered


def _unclaimed(
    lease: Lease,
    last_change: Mapping[str, float],
    now: float,
    failover_time: float,
    reserve: float,
) -> bool:
    """An available lease nobody took within ``reserve`` of it becoming available: an
    unowned one since its counter last changed, an expired one since it expired
    (``failover_time`` after its last change)."""
    since = last_change.get(lease.lease_key, now)
    if not lease.is_unowned:
        since += failover_time
    return now - since >= reserve


def _share_out(
    counts: Mapping[str, int], workers: Sequence[str], pool: int, cap: int
) -> dict[str, int]:
    """Split ``pool`` leases over ``workers`` lowest first, nobody above ``cap``: raise every
    worker to the highest common level the pool allows, then one more each, in id order, to
    those at that level. Deterministic, so every worker computes the same split."""

    def need(level: int) -> int:
        return sum(max(0, level - counts.get(w, 0)) for w in workers)

    lo, hi = 0, cap
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if need(mid) <= pool else (lo, mid - 1)
    give = {w: max(0, lo - counts.get(w, 0)) for w in workers}
    left = pool - sum(give.values())
    for w in sorted(workers):
        if left <= 0 or lo >= cap:
            break
        if counts.get(w, 0) <= lo:
            give[w] += 1
            left -= 1
    return give


def _choose_takes(  # noqa: PLR0917 - one call site, names in the signature
    available: Sequence[Lease],
    counts: Counter[str],
    worker_id: str,
    target: int,
    last_change: Mapping[str, float],
    now: float,
    very_old_age: float,
    rng: random.Random | None,
    failover_time: float,
    reserve: float,
) -> list[Lease]:
    """This worker's share of the available leases (see :func:`decide_takes`): its slice,
    then the leases left available too long for anyone's slice to be waited for."""
    workers = sorted({*counts, worker_id})
    give = _share_out(counts, workers, len(available), target)
    if len(workers) > 1 and sum(give.values()) == len(available):
        offset = sum(give[w] for w in workers[: workers.index(worker_id)])
        ordered = sorted(available, key=lambda lease: lease.lease_key)
        mine = ordered[offset : offset + give[worker_id]]
        taken = {lease.lease_key for lease in mine}
        left = [
            lease
            for lease in ordered
            if lease.lease_key not in taken
            and _unclaimed(lease, last_change, now, failover_time, reserve)
        ]
        return mine + _order(left, rng)
    old_before = now - very_old_age
    is_old = [last_change.get(lease.lease_key, now) < old_before for lease in available]
    very_old = [lease for lease, old in zip(available, is_old, strict=True) if old]
    rest = [lease for lease, old in zip(available, is_old, strict=True) if not old]
    return (_order(very_old, rng) + _order(rest, rng))[: give[worker_id]]


def _choose_steal(
    live: Sequence[Lease],
    *,
    counts: Counter[str],
    worker_id: str,
    target: int,
    max_steal: int,
    rng: random.Random | None,
) -> list[Lease]:
    """Leases to steal: this worker's part of a matching of every below-target worker to the
    leases held over target (see :func:`decide_takes`)."""
    if max_steal <= 0:
        return []
    workers = sorted({*counts, worker_id})
    thieves = sorted((counts.get(w, 0), w) for w in workers if counts.get(w, 0) < target)
    slots: list[str] = []  # one entry per lease held over target, most loaded first
    for count, owner in sorted((-counts[w], w) for w in workers if counts.get(w, 0) > target):
        slots += [owner] * (-count - target)
    mine: list[tuple[str, int]] = []  # (victim, index of this steal among that victim's)
    taken: Counter[str] = Counter()
    allowance = {w: min(max_steal, target - c) for c, w in thieves}
    for _ in range(max_steal):  # rounds: each thief takes one slot per round
        for _, thief in thieves:
            if not slots or allowance[thief] <= 0:
                continue
            victim = slots.pop(0)
            allowance[thief] -= 1
            if thief == worker_id:
                mine.append((victim, taken[victim]))
            taken[victim] += 1
    if not taken:
        mine += _exception_steals(counts, workers, thieves, worker_id, target, max_steal, rng)
    stolen: list[Lease] = []
    for victim, index in mine:
        candidates = _order([lease for lease in live if lease.lease_owner == victim], rng)
        if index < len(candidates):
            stolen.append(candidates[index])
    return stolen


def _exception_steals(  # noqa: PLR0917 - one call site
    counts: Counter[str],
    workers: Sequence[str],
    thieves: Sequence[tuple[int, str]],
    worker_id: str,
    target: int,
    max_steal: int,
    rng: random.Random | None,
) -> list[tuple[str, int]]:
    """Nobody is over target (KCL's exception): a worker needing two or more steals from
    workers exactly at target, one lease from each (they end at target - 1, within
    floor/ceil), up to what it needs but one and ``max_steal``; needy workers in rounds."""
    at_target = _order_ids([w for w in workers if counts.get(w, 0) == target], rng)
    left = {w: min(max_steal, target - c - 1) for c, w in thieves if target - c > 1}
    mine: list[tuple[str, int]] = []
    for _ in range(max_steal):
        for _, thief in thieves:
            if at_target and left.get(thief, 0) > 0:
                left[thief] -= 1
                victim = at_target.pop(0)
                if thief == worker_id:
                    mine.append((victim, 0))
    return mine
