"""The pure take/steal decision and the expiry tracker (no server, injected clock)."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from streamkit_kinesis.leases import (
    InMemoryLeaseStore,
    Lease,
    LeaseTracker,
    decide_takes,
    is_expired,
)
from streamkit_kinesis.testing.leases import FakeClock
from streamkit_kinesis.types import SHARD_END, ExtendedSequenceNumber

FAILOVER = 10.0


def leases(n: int, owner: str | None = None, prefix: str = "shard") -> list[Lease]:
    return [Lease(f"{prefix}-{i:02d}", lease_owner=owner, lease_counter=1) for i in range(n)]


def owned(spec: dict[str, int]) -> list[Lease]:
    out: list[Lease] = []
    for owner, count in spec.items():
        out += leases(count, owner, prefix=f"s-{owner}")
    return out


def fresh(snapshot: list[Lease], now: float = 0.0) -> dict[str, float]:
    """Every lease seen changing at ``now``: nothing is expired."""
    return {lease.lease_key: now for lease in snapshot}


# -- taking unowned and expired leases ---------------------------------------------------


def test_alone_takes_every_unowned_lease() -> None:
    snapshot = leases(8)
    d = decide_takes(snapshot, "A", {}, 0.0, FAILOVER)
    assert [lease.lease_key for lease in d.to_take] == [lease.lease_key for lease in snapshot]
    assert d.to_steal == ()
    assert (d.target, d.live_workers, d.held) == (8, 1, 0)


def test_takes_unowned_only_up_to_target() -> None:
    snapshot = owned({"B": 4}) + leases(4)
    d = decide_takes(snapshot, "A", fresh(snapshot), 0.0, FAILOVER)
    assert d.target == 4
    assert d.live_workers == 2
    assert len(d.to_take) == 4
    assert all(lease.is_unowned for lease in d.to_take)


def test_owned_lease_expires_only_after_failover_on_our_clock() -> None:
    snapshot = owned({"B": 2})
    seen = {lease.lease_key: 100.0 for lease in snapshot}
    before = decide_takes(snapshot, "A", seen, 100.0 + FAILOVER, FAILOVER)
    assert before.to_take == ()  # exactly failover_time: not yet expired
    after = decide_takes(snapshot, "A", seen, 100.0 + FAILOVER + 0.01, FAILOVER)
    assert {lease.lease_key for lease in after.to_take} == {lease.lease_key for lease in snapshot}
    # B holds only expired leases, so it is not a live worker any more.
    assert after.live_workers == 1
    assert after.target == 2


def test_never_observed_lease_is_not_expired() -> None:
    snapshot = owned({"B": 1})
    assert not is_expired(snapshot[0], {}, 1e9, FAILOVER)


def test_unowned_lease_is_available_whatever_its_age() -> None:
    snapshot = leases(1)
    d = decide_takes(snapshot, "A", {snapshot[0].lease_key: 0.0}, 0.0, FAILOVER)
    assert d.to_take == tuple(snapshot)


def test_expired_and_unowned_are_taken_before_any_steal() -> None:
    live = owned({"B": 6})
    dead = owned({"C": 2})
    seen = {**fresh(live, 50.0), **fresh(dead, 0.0)}
    d = decide_takes(live + dead, "A", seen, 50.0, FAILOVER)
    assert d.to_steal == ()
    assert {lease.lease_owner for lease in d.to_take} == {"C"}


def test_max_leases_caps_the_target() -> None:
    d = decide_takes(leases(8), "A", {}, 0.0, FAILOVER, max_leases=3)
    assert d.target == 3
    assert len(d.to_take) == 3


def test_max_leases_reports_what_it_leaves_unowned() -> None:
    assert decide_takes(leases(8), "A", {}, 0.0, FAILOVER, max_leases=3).left_unowned == 5
    snapshot = owned({"B": 3}) + leases(5)
    d = decide_takes(snapshot, "A", fresh(snapshot), 0.0, FAILOVER, max_leases=3)
    assert (d.live_workers, d.left_unowned) == (2, 2)  # 8 leases, 2 workers x 3 slots
    assert decide_takes(snapshot, "A", fresh(snapshot), 0.0, FAILOVER).left_unowned == 0
    roomy = decide_takes(snapshot, "A", fresh(snapshot), 0.0, FAILOVER, max_leases=4)
    assert roomy.left_unowned == 0


@pytest.mark.parametrize("seed", range(5))
def test_leases_unrenewed_for_three_failovers_are_taken_first(seed: int) -> None:
    now = 100.0
    recent = owned({"C": 4})  # expired: unchanged for 1.5 x failover
    ancient = owned({"D": 2})  # unchanged for 3.5 x failover
    idle = leases(3)  # unowned, unchanged for 3.2 x failover
    fresh_idle = leases(3, prefix="new")  # unowned, just released
    snapshot = recent + ancient + idle + fresh_idle
    seen = {
        **fresh(recent, now - 1.5 * FAILOVER),
        **fresh(ancient, now - 3.5 * FAILOVER),
        **fresh(idle, now - 3.2 * FAILOVER),
        **fresh(fresh_idle, now),
    }
    old = {lease.lease_key for lease in ancient + idle}
    for cap, expected in ((3, None), (5, old), (7, None)):
        d = decide_takes(
            snapshot, "A", seen, now, FAILOVER, max_leases=cap, rng=random.Random(seed)
        )
        taken = {lease.lease_key for lease in d.to_take}
        assert len(taken) == cap
        if cap < len(old):
            assert taken < old
        elif expected is not None:
            assert taken == expected
        else:
            assert taken > old


def test_shard_end_leases_are_neither_counted_nor_taken() -> None:
    finished = [Lease(f"done-{i}", checkpoint=SHARD_END, lease_counter=3) for i in range(4)] + [
        Lease("done-owned", lease_owner="B", checkpoint=SHARD_END, lease_counter=3)
    ]
    active = leases(4)
    d = decide_takes(finished + active, "A", fresh(finished), 0.0, FAILOVER)
    assert d.target == 4  # only the 4 unfinished leases count; B holds nothing live
    assert d.live_workers == 1
    assert {lease.lease_key for lease in d.to_take} == {lease.lease_key for lease in active}


def test_rng_shuffles_but_default_is_deterministic() -> None:
    snapshot = leases(8)
    first = decide_takes(snapshot, "A", {}, 0.0, FAILOVER)
    again = decide_takes(list(reversed(snapshot)), "A", {}, 0.0, FAILOVER)
    assert first == again
    shuffled = decide_takes(snapshot, "A", {}, 0.0, FAILOVER, rng=random.Random(7))
    assert {lease.lease_key for lease in shuffled.to_take} == {
        lease.lease_key for lease in snapshot
    }


# -- stealing ----------------------------------------------------------------------------


def test_steals_one_per_cycle_by_default_from_the_most_loaded() -> None:
    snapshot = owned({"B": 6, "C": 2})
    d = decide_takes(snapshot, "A", fresh(snapshot), 0.0, FAILOVER)
    assert d.target == 3
    assert d.to_take == ()
    assert len(d.to_steal) == 1
    assert d.to_steal[0].lease_owner == "B"


@pytest.mark.parametrize(("max_steal", "expected"), [(0, 0), (1, 1), (2, 2), (3, 3), (9, 4)])
def test_steal_count_is_bounded_per_cycle(max_steal: int, expected: int) -> None:
    snapshot = owned({"B": 8})
    d = decide_takes(snapshot, "A", fresh(snapshot), 0.0, FAILOVER, max_steal=max_steal)
    assert len(d.to_steal) == expected


def test_never_steals_a_victim_below_target() -> None:
    # 8 over 3 workers: target 3; the victims hold exactly 3 and A needs only one.
    snapshot = owned({"B": 3, "C": 3, "A": 2})
    d = decide_takes(snapshot, "A", fresh(snapshot), 0.0, FAILOVER, max_steal=5)
    assert d.target == 3
    assert d.held == 2
    assert d.leases == ()


def test_steal_is_limited_to_what_the_victim_has_over_target() -> None:
    snapshot = owned({"B": 5, "C": 3})  # 8 over 3 workers, target 3: B is 2 over
    d = decide_takes(snapshot, "A", fresh(snapshot), 0.0, FAILOVER, max_steal=5)
    assert len(d.to_steal) == 2
    assert {lease.lease_owner for lease in d.to_steal} == {"B"}


def test_needing_two_from_a_victim_at_target_steals_one() -> None:
    # 4 over 3 workers: target 2. Without this KCL rule A would stay idle at 2/2/0.
    snapshot = owned({"B": 2, "C": 2})
    d = decide_takes(snapshot, "A", fresh(snapshot), 0.0, FAILOVER, max_steal=5)
    assert len(d.to_steal) == 1


def test_does_not_steal_when_at_target() -> None:
    snapshot = owned({"A": 4, "B": 4})
    d = decide_takes(snapshot, "A", fresh(snapshot), 0.0, FAILOVER)
    assert d.leases == ()


# -- tracker -----------------------------------------------------------------------------


def test_tracker_expiry_follows_counter_changes_on_our_clock() -> None:
    clock = FakeClock(500.0)
    tracker = LeaseTracker(clock)
    lease = Lease("s-1", lease_owner="B", lease_counter=1)
    tracker.observe([lease])  # first sight counts as a change
    clock.advance(FAILOVER)
    tracker.observe([lease])
    assert not tracker.is_expired(lease, FAILOVER)
    clock.advance(0.5)
    assert tracker.is_expired(lease, FAILOVER)
    renewed = lease.renewed()
    tracker.observe([renewed])  # the owner renewed: the counter moved
    assert not tracker.is_expired(renewed, FAILOVER)
    clock.advance(FAILOVER + 0.1)
    tracker.observe([renewed])
    assert tracker.is_expired(renewed, FAILOVER)


def test_tracker_forgets_deleted_leases_and_records_own_writes() -> None:
    clock = FakeClock()
    tracker = LeaseTracker(clock)
    a, b = Lease("a", "X", 1), Lease("b", "X", 1)
    tracker.observe([a, b])
    tracker.observe([a])
    assert set(tracker.last_changes()) == {"a"}
    clock.advance(3.0)
    tracker.observe_one(a.taken_by("me"))
    assert tracker.last_changes()["a"] == clock.now


def test_tracker_never_compares_the_owners_clock() -> None:
    # Nothing in a lease carries a wall-clock time; expiry depends only on our readings.
    clock = FakeClock(0.0)
    tracker = LeaseTracker(clock)
    lease = Lease("s", "B", 41, checkpoint=ExtendedSequenceNumber("100"))
    now = tracker.observe([lease])
    d = decide_takes([lease], "A", tracker.last_changes(), now + FAILOVER + 1, FAILOVER)
    assert d.to_take == (lease,)


# -- convergence, simulated with the pure function and the in-memory store ---------------


async def cycle(
    store: InMemoryLeaseStore, worker: str, tracker: LeaseTracker, max_steal: int = 1
) -> None:
    """One take cycle of ``worker``: snapshot, decide, conditional takes."""
    snapshot = await store.list_leases()
    now = tracker.observe(snapshot)
    decision = decide_takes(
        snapshot, worker, tracker.last_changes(), now, FAILOVER, max_steal=max_steal
    )
    for lease in decision.leases:
        await store.take_lease(lease, worker)


async def split(store: InMemoryLeaseStore) -> dict[str, int]:
    return dict(Counter(lease.lease_owner or "-" for lease in await store.list_leases()))


async def new_store(n: int) -> InMemoryLeaseStore:
    store = InMemoryLeaseStore()
    await store.create_table_if_not_exists()
    for lease in leases(n):
        await store.create_lease_if_not_exists(Lease(lease.lease_key))
    return store


async def test_two_workers_converge_to_four_each_one_steal_per_cycle() -> None:
    store = await new_store(8)
    clock = FakeClock()
    trackers = {w: LeaseTracker(clock) for w in "AB"}
    await cycle(store, "A", trackers["A"])
    assert await split(store) == {"A": 8}
    history = []
    for _ in range(5):
        await cycle(store, "A", trackers["A"])
        await cycle(store, "B", trackers["B"])
        history.append((await split(store)).get("B", 0))
    assert history == [1, 2, 3, 4, 4]  # one steal per cycle, then stable
    assert await split(store) == {"A": 4, "B": 4}


async def test_third_worker_joining_gives_three_three_two() -> None:
    store = await new_store(8)
    clock = FakeClock()
    trackers = {w: LeaseTracker(clock) for w in "ABC"}
    for _ in range(5):
        for w in "AB":
            await cycle(store, w, trackers[w])
    assert await split(store) == {"A": 4, "B": 4}
    for _ in range(4):
        for w in "ABC":
            await cycle(store, w, trackers[w])
    assert sorted((await split(store)).values()) == [2, 3, 3]
    before = await store.list_leases()
    for w in "ABC":
        await cycle(store, w, trackers[w])
    assert await store.list_leases() == before  # balanced: no more takes or steals


async def test_dead_workers_leases_move_after_failover() -> None:
    store = await new_store(6)
    clock = FakeClock()
    trackers = {w: LeaseTracker(clock) for w in "AB"}
    for _ in range(4):
        await cycle(store, "A", trackers["A"])
        await cycle(store, "B", trackers["B"])
    assert await split(store) == {"A": 3, "B": 3}
    # B dies (stops renewing); A keeps renewing its own leases.
    for _ in range(3):
        clock.advance(FAILOVER / 2)
        for lease in await store.list_leases():
            if lease.lease_owner == "A":
                await store.renew_lease(lease)
        await cycle(store, "A", trackers["A"])
    assert await split(store) == {"A": 6}


# -- slices are a courtesy: a slice nobody takes is taken after the reserve ------------------


def test_a_slice_left_by_a_capped_worker_is_taken_after_the_reserve() -> None:
    """A holds 1 and never takes more (its own max_leases is 1, unknown to B): the lease the
    share-out leaves to A must not stay unowned for ever (it did: the UI test's query
    worker waited for a shard nobody would take). Default reserve: 2 * failover_time."""
    free = leases(2)
    snapshot = owned({"A": 1}) + free
    first_seen = fresh(snapshot, now=0.0)
    early = decide_takes(snapshot, "B", first_seen, 0.0, FAILOVER)
    assert early.target == 2
    assert len(early.to_take) == 1  # its slice only; the other one is A's for now
    mine = early.to_take[0]
    left = next(lease for lease in free if lease.lease_key != mine.lease_key)
    after = [*owned({"A": 1}), mine.taken_by("B"), left]
    a_renewed = fresh(owned({"A": 1}), now=2 * FAILOVER - 1)  # A is alive, renewing
    seen = {**first_seen, mine.lease_key: 2 * FAILOVER - 1, **a_renewed}  # B renews its own
    assert decide_takes(after, "B", seen, 2 * FAILOVER - 0.1, FAILOVER).to_take == ()
    late = decide_takes(after, "B", seen, 2 * FAILOVER, FAILOVER)
    assert [lease.lease_key for lease in late.to_take] == [left.lease_key]


def test_an_expired_slice_is_reserved_for_its_worker_from_the_expiry() -> None:
    """Leases of a dead worker Z are shared out when they expire; the one in A's slice is
    taken by B only once it stayed available for ``reserve`` after expiring."""
    dead = owned({"Z": 2})
    snapshot = owned({"A": 1}) + dead
    seen = fresh(snapshot, now=0.0)
    for lease in dead:
        seen[lease.lease_key] = -FAILOVER - 0.5  # expired half a second ago
    reserve = 3.0
    for now in (0.0, 2.4):
        d = decide_takes(snapshot, "B", seen, now, FAILOVER, reserve=reserve)
        assert len(d.to_take) == 1
    later = decide_takes(snapshot, "B", seen, 2.5, FAILOVER, reserve=reserve)
    assert {lease.lease_key for lease in later.to_take} == {lease.lease_key for lease in dead}


# -- announcing: workers starting together on a fresh table first make themselves seen -------


def test_announce_takes_one_lease_when_holding_nothing_before_any_share_out() -> None:
    """Fresh table, nobody owns anything (or only announcers own one each): a worker holding
    nothing announces (one lease, any of them will do: the coordinator stops at the first
    it wins) instead of taking up to its target (KCL's race for every lease)."""
    fresh_table = leases(12)
    d = decide_takes(fresh_table, "A", {}, 0.0, FAILOVER, announce=True)
    assert d.announce
    assert sorted(lease.lease_key for lease in d.to_take) == [f"shard-{i:02d}" for i in range(12)]
    assert d.to_steal == ()
    announcers = owned({"B": 1, "C": 1}) + leases(10)
    d = decide_takes(announcers, "A", fresh(announcers), 0.0, FAILOVER, announce=True)
    assert d.announce
    assert d.live_workers == 3
    assert {lease.lease_owner for lease in d.to_take} == {None}
    # off (the default, KCL): a worker alone takes everything up to its target
    assert len(decide_takes(fresh_table, "A", {}, 0.0, FAILOVER).to_take) == 12


@pytest.mark.parametrize(
    "snapshot",
    [
        owned({"A": 1, "B": 1}) + leases(10),  # A has announced: its quick cycle splits
        owned({"B": 2}) + leases(10),  # someone already shared out: no announce phase
        owned({"B": 1}) + leases(1),  # a single available lease: just take it
    ],
)
def test_no_announce_once_holding_a_lease_or_after_a_share_out(snapshot: list[Lease]) -> None:
    d = decide_takes(snapshot, "A", fresh(snapshot), 0.0, FAILOVER, announce=True)
    assert not d.announce


def test_after_announcing_every_worker_computes_the_same_disjoint_exact_slices() -> None:
    """The quick second cycle: 5 announcers (one lease each) and 98 unowned leases; each
    decides from the same snapshot; the slices are disjoint, cover every lease and leave
    each worker at floor or ceil of 103 / 5 (an independent count: 21, 21, 21, 20, 20)."""
    snapshot = owned(dict.fromkeys("ABCDE", 1)) + leases(98)
    seen = fresh(snapshot)
    picks = [
        decide_takes(snapshot, w, seen, 0.0, FAILOVER, announce=True, rng=random.Random(w))
        for w in "ABCDE"
    ]
    assert not any(d.announce for d in picks)
    keys = [lease.lease_key for d in picks for lease in d.to_take]
    assert len(keys) == len(set(keys)) == 98
    assert sorted(1 + len(d.to_take) for d in picks) == [20, 20, 21, 21, 21]
