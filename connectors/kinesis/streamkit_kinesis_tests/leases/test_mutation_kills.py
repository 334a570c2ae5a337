"""Lease taker and checkpointer behaviour that `make mutation` found untested.

Expected values come from the rules as documented (taker module docstring, ``decide_takes``,
``Checkpointer.checkpoint``, ``HeldLeases.confirmed``), computed here by hand.
"""

from __future__ import annotations

import asyncio
import math
import random

import pytest
from streamkit_kinesis.leases import (
    Checkpointer,
    CheckpointOrderError,
    HeldLeases,
    InMemoryLeaseStore,
    Lease,
    LeaseEvent,
    LeaseEventKind,
    LeaseLostError,
    LeaseRenewer,
    LeaseStoreUnavailableError,
    LeaseTracker,
    decide_takes,
)
from streamkit_kinesis.leases.metrics import CallTimings
from streamkit_kinesis.testing.leases import ExceptionThrowingLeaseStore, FakeClock
from streamkit_kinesis.types import SHARD_END, ExtendedSequenceNumber

FAILOVER = 10.0
WRITE_TAKES = 7.0


class SlowWritesStore(InMemoryLeaseStore):
    """The in-memory store, with checkpoint and renewal writes that take WRITE_TAKES s."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self._clock = clock

    async def update_checkpoint(self, lease: Lease, checkpoint: ExtendedSequenceNumber) -> Lease:
        self._clock.advance(WRITE_TAKES)
        return await super().update_checkpoint(lease, checkpoint)

    async def renew_lease(self, lease: Lease) -> Lease:
        self._clock.advance(WRITE_TAKES)
        return await super().renew_lease(lease)


async def held_by_me(store: InMemoryLeaseStore, held: HeldLeases, key: str) -> None:
    await store.create_table_if_not_exists()
    lease = await store.create_lease_if_not_exists(Lease(key))
    held.gained(await store.take_lease(lease, "me"))


def owned(spec: dict[str, int]) -> list[Lease]:
    return [
        Lease(f"s-{owner}-{i:02d}", lease_owner=owner, lease_counter=1)
        for owner, count in spec.items()
        for i in range(count)
    ]


# -- checkpointer -------------------------------------------------------------------------


async def test_a_checkpoint_confirms_the_lease_as_of_when_the_write_was_sent() -> None:
    clock = FakeClock(1000.0)
    store, held = SlowWritesStore(clock), HeldLeases(clock)
    await held_by_me(store, held, "a")
    clock.advance(5.0)
    sent = clock.now
    await Checkpointer(store, held, "a").checkpoint("100")
    assert clock.now == sent + WRITE_TAKES
    entry = held.entry("a")
    assert entry is not None
    assert entry.confirmed_at == sent  # the send time, not the time the answer came back
    assert entry.lease.checkpoint == ExtendedSequenceNumber("100")


async def _stolen_then(method: str) -> InMemoryLeaseStore:
    """Lease "a" held here, taken by "thief", then ``Checkpointer.<method>("150")``: it
    raises LeaseLostError, the LOST event carries the store's reason (naming the thief)
    and the lease is dropped; returns the store."""
    clock = FakeClock()
    store, held = InMemoryLeaseStore(), HeldLeases(clock)
    events: list[LeaseEvent] = []
    held.add_listener(events.append)
    await held_by_me(store, held, "a")
    current = await store.get_lease("a")
    assert current is not None
    await store.take_lease(current, "thief")
    with pytest.raises(LeaseLostError) as raised:
        await getattr(Checkpointer(store, held, "a"), method)("150")
    lost = [e for e in events if e.kind is LeaseEventKind.LOST]
    assert [(e.shard_id, e.reason) for e in lost] == [("a", str(raised.value))]
    assert "thief" in lost[0].reason
    assert held.get("a") is None
    return store


async def test_a_lost_checkpoint_reports_the_stores_reason_in_the_lost_event() -> None:
    await _stolen_then("checkpoint")


async def test_a_backward_checkpoint_names_the_shard() -> None:
    clock = FakeClock()
    store, held = InMemoryLeaseStore(), HeldLeases(clock)
    await held_by_me(store, held, "shardId-000000000042")
    cp = Checkpointer(store, held, "shardId-000000000042")
    await cp.checkpoint("200")
    with pytest.raises(CheckpointOrderError, match="shardId-000000000042"):
        await cp.checkpoint("100")


class SlowPrepareStore(SlowWritesStore):
    """SlowWritesStore whose pending-checkpoint writes take WRITE_TAKES s too."""

    async def prepare_checkpoint(self, lease: Lease, pending: ExtendedSequenceNumber) -> Lease:
        self._clock.advance(WRITE_TAKES)
        return await super().prepare_checkpoint(lease, pending)


async def test_a_prepared_checkpoint_is_stored_timed_and_confirms_as_of_the_send() -> None:
    clock = FakeClock(1000.0)
    store, held = SlowPrepareStore(clock), HeldLeases(clock)
    await held_by_me(store, held, "a")
    timings = CallTimings(clock)
    timings.enabled = True
    cp = Checkpointer(store, held, "a", timings)
    await cp.checkpoint("50")
    timings.drain()
    clock.advance(5.0)
    sent = clock.now
    returned = await cp.prepare_checkpoint("100")
    assert clock.now == sent + WRITE_TAKES
    stored = await store.get_lease("a")
    assert stored is not None
    assert returned == stored
    assert stored.pending_checkpoint == ExtendedSequenceNumber("100")
    assert stored.checkpoint == ExtendedSequenceNumber("50")  # the checkpoint stays
    entry = held.entry("a")
    assert entry is not None
    assert entry.lease == stored
    assert entry.confirmed_at == sent  # the send time, not the time the answer came back
    assert cp.pending_checkpoint == ExtendedSequenceNumber("100")
    [stat] = timings.drain()
    assert (stat.operation, stat.name, stat.key, stat.calls, stat.successes) == (
        "ProcessTask",
        "UpdateLease",
        "a",
        1,
        1,
    )
    assert dict(stat.millis) == {round(WRITE_TAKES * 1000): 1}


async def test_a_lost_prepare_drops_the_lease_with_the_stores_reason_and_writes_nothing() -> None:
    store = await _stolen_then("prepare_checkpoint")
    stored = await store.get_lease("a")
    assert stored is not None
    assert stored.pending_checkpoint is None


async def test_a_prepare_needs_the_lease_and_a_position_at_or_after_the_checkpoint() -> None:
    clock = FakeClock()
    store, held = InMemoryLeaseStore(), HeldLeases(clock)
    await held_by_me(store, held, "shardId-000000000042")
    cp = Checkpointer(store, held, "shardId-000000000042")
    with pytest.raises(LeaseLostError, match="shardId-000000000007"):
        await Checkpointer(store, held, "shardId-000000000007").prepare_checkpoint("100")
    await cp.checkpoint("200")
    with pytest.raises(CheckpointOrderError, match="shardId-000000000042"):
        await cp.prepare_checkpoint("100")
    with pytest.raises(CheckpointOrderError, match="shardId-000000000042"):
        await cp.prepare_checkpoint(SHARD_END.sequence_number)  # a sentinel is no record
    stored = await store.get_lease("shardId-000000000042")
    assert stored is not None
    assert stored.pending_checkpoint is None
    assert (await cp.prepare_checkpoint("200")).pending_checkpoint == ExtendedSequenceNumber("200")


# -- renewer ------------------------------------------------------------------------------


async def test_a_renewal_confirms_the_lease_as_of_when_the_write_was_sent() -> None:
    clock = FakeClock(1000.0)
    store, held = SlowWritesStore(clock), HeldLeases(clock)
    await held_by_me(store, held, "a")
    clock.advance(4.0)
    sent = clock.now
    result = await LeaseRenewer(store, held, FAILOVER, clock).renew_all()
    assert result.renewed == ("a",)
    entry = held.entry("a")
    assert entry is not None
    assert entry.confirmed_at == sent
    assert entry.lease.lease_counter == 2  # taken (1), renewed (2)


async def test_transient_failures_keep_a_lease_silent_for_exactly_the_failover_time() -> None:
    clock = FakeClock(1000.0)
    real = InMemoryLeaseStore()
    store, held = ExceptionThrowingLeaseStore(real), HeldLeases(clock)
    await held_by_me(real, held, "a")  # confirmed at 1000
    renewer = LeaseRenewer(store, held, FAILOVER, clock)
    throttled = LeaseStoreUnavailableError("throttled (injected)")
    store.inject("renew_lease", lambda: throttled, times=2)
    clock.advance(FAILOVER)  # silent for exactly the failover time: not more
    result = await renewer.renew_all()
    assert (result.renewed, result.lost, result.transient_errors) == ((), (), 1)
    assert held.shard_ids() == {"a"}
    clock.advance(0.5)
    result = await renewer.renew_all()
    assert (result.renewed, result.lost) == ((), ("a",))
    assert held.shard_ids() == frozenset()


async def test_renewals_and_checkpoints_are_timed_under_the_kcl_names() -> None:
    clock = FakeClock(1000.0)
    store, held = SlowWritesStore(clock), HeldLeases(clock)
    await held_by_me(store, held, "a")
    await held_by_me(store, held, "b")
    timings = CallTimings(clock)
    timings.enabled = True
    renewer = LeaseRenewer(store, held, FAILOVER, clock, timings=timings, worker_id="w-7")
    await renewer.renew_all()
    await Checkpointer(store, held, "b", timings).checkpoint("100")
    got = {
        (s.operation, s.name, s.key): (dict(s.millis), s.calls, s.successes)
        for s in timings.drain()
    }
    write = round(WRITE_TAKES * 1000)
    assert got == {
        # the two renewals run concurrently, each write advancing the fake clock
        ("RenewAllLeases", "", "w-7"): ({2 * write: 1}, 1, 1),
        ("RenewAllLeases", "RenewLease", "w-7"): ({write: 1, 2 * write: 1}, 2, 2),
        ("ProcessTask", "UpdateLease", "b"): ({write: 1}, 1, 1),
    }
    await LeaseRenewer(store, held, FAILOVER, clock, timings=timings).renew_all()
    assert {s.key for s in timings.drain()} == {""}  # no worker id given: the empty one


class BrokenAThenSlowBStore(InMemoryLeaseStore):
    """Renewing "a" fails at once with a bug; renewing "b" takes a few event-loop turns."""

    async def renew_lease(self, lease: Lease) -> Lease:
        if lease.lease_key == "a":
            raise RuntimeError("bug (injected)")
        for _ in range(10):
            await asyncio.sleep(0)
        return await super().renew_lease(lease)


async def test_a_failing_renewal_is_raised_only_after_every_other_renewal_finished() -> None:
    clock = FakeClock()
    store, held = BrokenAThenSlowBStore(), HeldLeases(clock)
    await held_by_me(store, held, "a")
    await held_by_me(store, held, "b")
    with pytest.raises(RuntimeError, match="bug"):
        await LeaseRenewer(store, held, FAILOVER, clock).renew_all()
    stored = await store.get_lease("b")
    assert stored is not None
    assert stored.lease_counter == 2  # "b" was renewed before the error came out
    assert held.get("b") == stored


# -- taker ----------------------------------------------------------------------------------


def test_tracker_judges_expiry_at_the_given_time_not_its_clock() -> None:
    clock = FakeClock(1000.0)
    tracker = LeaseTracker(clock)
    lease = Lease("a", lease_owner="B", lease_counter=1)
    tracker.observe([lease])  # counter seen changing at 1000
    assert tracker.is_expired(lease, FAILOVER, now=1000.0 + FAILOVER + 1) is True
    clock.advance(FAILOVER + 1)
    assert tracker.is_expired(lease, FAILOVER, now=1000.0 + FAILOVER / 2) is False
    assert tracker.is_expired(lease, FAILOVER) is True  # default: the clock


def test_no_steal_at_all_when_max_steal_is_zero_even_from_a_victim_at_target() -> None:
    snapshot = owned({"B": 2, "C": 2})
    last = {lease.lease_key: 0.0 for lease in snapshot}
    target = math.ceil(4 / 3)  # 4 leases, live workers B, C and A
    free = decide_takes(snapshot, "A", last, 0.0, FAILOVER, max_steal=5)
    assert (free.target, len(free.to_steal)) == (target, 1)  # KCL's one-from-a-victim-at-target
    d = decide_takes(snapshot, "A", last, 0.0, FAILOVER, max_steal=0)
    assert (d.target, d.to_steal, d.to_take) == (target, (), ())


def test_steals_no_more_than_this_worker_needs() -> None:
    snapshot = owned({"A": 3, "B": 10, "C": 2})
    last = {lease.lease_key: 0.0 for lease in snapshot}
    target = math.ceil(15 / 3)
    needed = target - 3  # B has 10 - 5 = 5 over target, more than A needs
    d = decide_takes(snapshot, "A", last, 0.0, FAILOVER, max_steal=9)
    assert (d.target, d.live_workers, d.held, d.left_unowned, d.to_take) == (target, 3, 3, 0, ())
    assert len(d.to_steal) == needed
    assert {lease.lease_owner for lease in d.to_steal} == {"B"}


def test_with_an_rng_the_stolen_lease_varies_with_the_seed() -> None:
    snapshot = owned({"B": 6, "C": 1})
    last = {lease.lease_key: 0.0 for lease in snapshot}
    by_key = sorted(lease.lease_key for lease in snapshot if lease.lease_owner == "B")
    stolen = set()
    for seed in range(20):
        d = decide_takes(snapshot, "A", last, 0.0, FAILOVER, rng=random.Random(seed))
        assert [lease.lease_owner for lease in d.to_steal] == ["B"]
        stolen.add(d.to_steal[0].lease_key)
    assert stolen <= set(by_key)
    assert len(stolen) > 1  # not always the first by key: contending workers spread out
    plain = decide_takes(snapshot, "A", last, 0.0, FAILOVER)
    assert [lease.lease_key for lease in plain.to_steal] == by_key[:1]


def test_with_no_active_lease_the_target_is_zero() -> None:
    finished = [
        Lease(f"done-{i}", lease_owner="B", lease_counter=1, checkpoint=SHARD_END) for i in range(3)
    ]
    for snapshot in ([], finished):
        d = decide_takes(snapshot, "A", {}, 0.0, FAILOVER)
        assert (d.target, d.held, d.to_take, d.to_steal) == (0, 0, (), ())


def test_a_worker_at_target_gets_the_full_decision_and_takes_nothing() -> None:
    snapshot = owned({"A": 3, "B": 3, "C": 2})
    last = {lease.lease_key: 0.0 for lease in snapshot}
    d = decide_takes(snapshot, "A", last, 0.0, FAILOVER, max_leases=3)
    target = min(math.ceil(8 / 3), 3)
    assert (d.to_take, d.to_steal) == ((), ())
    assert (d.target, d.live_workers, d.held, d.left_unowned) == (target, 3, 3, 0)


def test_a_lease_unchanged_for_exactly_very_old_after_failovers_is_not_very_old() -> None:
    now, very_old_after = 100.0, 3.0
    snapshot = [Lease("a", lease_counter=1), Lease("b", lease_counter=1)]
    edge = now - very_old_after * FAILOVER  # "b" has not moved for exactly 30 s
    last = {"a": now - 1.0, "b": edge}
    d = decide_takes(
        snapshot, "A", last, now, FAILOVER, max_leases=1, very_old_after=very_old_after
    )
    assert [lease.lease_key for lease in d.to_take] == ["a"]  # by key: neither is very old
    last["b"] = edge - 0.5
    d = decide_takes(
        snapshot, "A", last, now, FAILOVER, max_leases=1, very_old_after=very_old_after
    )
    assert [lease.lease_key for lease in d.to_take] == ["b"]  # very old first


@pytest.mark.parametrize("age", [1.0, 100.0], ids=["recent", "very-old"])
def test_with_an_rng_the_lease_taken_varies_with_the_seed(age: float) -> None:
    now = 1000.0
    snapshot = [Lease(f"s-{i}", lease_counter=1) for i in range(6)]
    last = {lease.lease_key: now - age for lease in snapshot}
    taken = set()
    for seed in range(20):
        d = decide_takes(snapshot, "A", last, now, FAILOVER, max_leases=1, rng=random.Random(seed))
        assert len(d.to_take) == 1
        taken.add(d.to_take[0].lease_key)
    assert len(taken) > 1


def test_decisions_report_live_workers_held_and_left_unowned() -> None:
    # 9 active leases: B holds 4, 5 unowned; cap 2 per worker over 2 live workers (A, B)
    snapshot = owned({"B": 4}) + [Lease(f"u-{i}", lease_counter=1) for i in range(5)]
    last = {lease.lease_key: 0.0 for lease in snapshot}
    d = decide_takes(snapshot, "A", last, 0.0, FAILOVER, max_leases=2)
    assert (d.target, d.live_workers, d.held, d.left_unowned) == (2, 2, 0, 9 - 2 * 2)
    assert [lease.lease_key for lease in d.to_take] == ["u-0", "u-1"]
    # the same cap when A must steal: B holds 6, nothing is free
    snapshot = owned({"B": 6})
    last = {lease.lease_key: 0.0 for lease in snapshot}
    d = decide_takes(snapshot, "A", last, 0.0, FAILOVER, max_leases=2, max_steal=5)
    assert (d.target, d.live_workers, d.held, d.left_unowned) == (2, 2, 0, 6 - 2 * 2)
    assert [lease.lease_owner for lease in d.to_steal] == ["B", "B"]


def steals(snapshot: list[Lease], worker: str, max_steal: int, rng: int | None = None) -> list[str]:
    last = {lease.lease_key: 0.0 for lease in snapshot}
    seeded = None if rng is None else random.Random(rng)
    d = decide_takes(snapshot, worker, last, 0.0, FAILOVER, max_steal=max_steal, rng=seeded)
    assert d.to_take == ()
    return [lease.lease_key for lease in d.to_steal]


def test_thieves_are_matched_to_every_victims_leases_over_target_in_rounds() -> None:
    # 11 leases, 4 live workers: target 3. Over target: V 5 (2 over), W 4 (1 over), most
    # loaded first: slots V, V, W. Below: A 1 and B 1 (need 2 each), by id; each round
    # every thief takes the next slot: A V#0, B V#1, then A W#0 (B finds none left).
    snapshot = owned({"V": 5, "W": 4, "A": 1, "B": 1})
    assert steals(snapshot, "A", max_steal=2) == ["s-V-00", "s-W-00"]
    assert steals(snapshot, "B", max_steal=2) == ["s-V-01"]


def test_a_thief_that_needs_one_steals_no_second_lease_from_a_needier_one() -> None:
    # 12 leases, 3 workers: target 4, no slack. V holds 8 (4 over); A holds 1 (needs 3),
    # B 3 (needs 1), neediest first. Rounds: A V#0, B V#1; A V#2 (B has its one); A V#3.
    snapshot = owned({"V": 8, "A": 1, "B": 3})
    assert steals(snapshot, "A", max_steal=3) == ["s-V-00", "s-V-02", "s-V-03"]
    assert steals(snapshot, "B", max_steal=3) == ["s-V-01"]


def test_several_steals_from_one_victim_are_distinct_leases_in_key_order() -> None:
    snapshot = owned({"V": 6})  # target 3: A steals 3, V's first three by key
    assert steals(snapshot, "A", max_steal=3) == ["s-V-00", "s-V-01", "s-V-02"]


def test_a_worker_holding_nothing_steals_when_the_target_is_one() -> None:
    assert steals(owned({"V": 2}), "A", max_steal=1) == ["s-V-00"]


def test_nobody_over_target_a_needy_worker_takes_one_from_each_worker_at_target() -> None:
    # 9 leases, 4 workers: target 3, nobody over. A holds 0 and needs 3: it steals one
    # lease (the first by key) from each of up to needed - 1 = 2 workers at target, in id
    # order, within max_steal.
    snapshot = owned({"B": 3, "C": 3, "D": 3})
    assert steals(snapshot, "A", max_steal=2) == ["s-B-00", "s-C-00"]
    assert steals(snapshot, "A", max_steal=1) == ["s-B-00"]
    # 10 leases: A holds 1, needs 2: one steal (needed - 1), whatever max_steal allows
    assert steals(owned({"A": 1, "B": 3, "C": 3, "D": 3}), "A", max_steal=3) == ["s-B-00"]


def test_with_an_rng_the_worker_at_target_stolen_from_varies_with_the_seed() -> None:
    snapshot = owned({"B": 2, "C": 2})  # target 2: A steals one from B or C
    victims = {steals(snapshot, "A", max_steal=1, rng=seed)[0][:3] for seed in range(20)}
    assert victims == {"s-B", "s-C"}


def test_leases_never_seen_changing_are_not_unclaimed_yet() -> None:
    # two workers, 3 unowned leases: A's slice is the first two by key; the third is B's
    # slice and, with no recorded change, not left unclaimed for the reserve time yet.
    snapshot = [*owned({"B": 1}), Lease("u-0"), Lease("u-1"), Lease("u-2")]
    d = decide_takes(snapshot, "A", {}, 100.0, FAILOVER)
    assert [lease.lease_key for lease in d.to_take] == ["u-0", "u-1"]


def unowned(*keys: str) -> list[Lease]:
    return [Lease(key) for key in keys]


def fresh_owned_old_unowned(snapshot: list[Lease]) -> dict[str, float]:
    """Owned leases changed just now (live), unowned ones long ago (unclaimed at 100)."""
    return {lease.lease_key: 0.0 if lease.is_unowned else 95.0 for lease in snapshot}


def keys(leases: tuple[Lease, ...]) -> list[str]:
    return [lease.lease_key for lease in leases]


def test_the_share_out_water_fills_then_gives_the_remainder_in_id_order() -> None:
    # A 0, B 1, C 4; 2 unowned: target ceil(7 / 3) = 3. Level 1 costs 1 (A), level 2
    # costs 3 > 2: A is raised to 1, and the remainder goes to A (first id at level <= 1).
    snapshot = [*owned({"B": 1, "C": 4}), *unowned("u-0", "u-1")]
    d = decide_takes(snapshot, "A", fresh_owned_old_unowned(snapshot), 100.0, FAILOVER)
    assert keys(d.to_take) == ["u-0", "u-1"]
    # B 0 (this worker), A 2, C 1; 2 unowned: target 2; level 1 costs 1 (B), level 2
    # costs 3; the remainder goes to the first id at level <= 1: B (A is at 2).
    snapshot = [*owned({"A": 2, "C": 1}), *unowned("u-0", "u-1")]
    d = decide_takes(snapshot, "B", fresh_owned_old_unowned(snapshot), 100.0, FAILOVER)
    assert keys(d.to_take) == ["u-0", "u-1"]
    # A 0, C 1, leases never seen changing: A is raised to 1 and gets the remainder
    snapshot = [*owned({"C": 1}), *unowned("u-0", "u-1")]
    assert keys(decide_takes(snapshot, "A", {}, 100.0, FAILOVER).to_take) == ["u-0", "u-1"]


def test_a_worker_capped_by_max_leases_gets_no_slice_beyond_its_cap() -> None:
    # C 1, D 0, 2 unowned, max_leases 1: target 1; C is at its cap, so the leases are
    # not sliced between C and D: D takes the first by key.
    snapshot = [*owned({"C": 1}), *unowned("u-0", "u-1")]
    d = decide_takes(snapshot, "D", {}, 100.0, FAILOVER, max_leases=1)
    assert (keys(d.to_take), d.target, d.left_unowned) == (["u-0"], 1, 1)


def test_takes_stop_at_the_target_even_with_unclaimed_leases_left() -> None:
    # B 1, C 1, 2 unowned long unclaimed: target 2; B needs one lease, not both.
    snapshot = [*owned({"B": 1, "C": 1}), *unowned("u-0", "u-1")]
    d = decide_takes(snapshot, "B", fresh_owned_old_unowned(snapshot), 100.0, FAILOVER)
    assert keys(d.to_take) == ["u-0"]
    # A at target 2 with B at 1 and an unclaimed lease: A takes nothing
    snapshot = [*owned({"A": 2, "B": 1}), *unowned("u-0")]
    d = decide_takes(snapshot, "A", fresh_owned_old_unowned(snapshot), 100.0, FAILOVER)
    assert (d.to_take, d.to_steal, d.held, d.target) == ((), (), 2, 2)


def test_with_an_rng_unclaimed_leases_after_this_workers_slice_are_shuffled() -> None:
    # C 1, D 0, 4 unowned long unclaimed: target 3; slices C u-0 u-1, D u-2 u-3; D then
    # takes one of C's unclaimed leases, in a seed-dependent order.
    snapshot = [*owned({"C": 1}), *unowned("u-0", "u-1", "u-2", "u-3")]
    last = fresh_owned_old_unowned(snapshot)
    plain = decide_takes(snapshot, "D", last, 100.0, FAILOVER)
    assert keys(plain.to_take) == ["u-2", "u-3", "u-0"]
    third = set()
    for seed in range(20):
        d = decide_takes(snapshot, "D", last, 100.0, FAILOVER, rng=random.Random(seed))
        assert keys(d.to_take)[:2] == ["u-2", "u-3"]
        third.add(keys(d.to_take)[2])
    assert third == {"u-0", "u-1"}


def test_an_announcing_worker_reports_the_whole_decision() -> None:
    # B 1, A 0, 2 unowned, max_leases 1: target min(ceil(3 / 2), 1) = 1, left unowned
    # 3 - 2 * 1 = 1; A holds nothing, 2 are available: it announces with both as candidates.
    snapshot = [*owned({"B": 1}), *unowned("u-0", "u-1")]
    last = fresh_owned_old_unowned(snapshot)
    d = decide_takes(snapshot, "A", last, 100.0, FAILOVER, max_leases=1, announce=True)
    assert (d.announce, keys(d.to_take), d.to_steal) == (True, ["u-0", "u-1"], ())
    assert (d.target, d.live_workers, d.held, d.left_unowned) == (1, 2, 0, 1)
    firsts = set()
    for seed in range(20):
        rng = random.Random(seed)
        d = decide_takes(snapshot, "A", last, 100.0, FAILOVER, rng=rng, announce=True)
        assert d.announce
        firsts.add(keys(d.to_take)[0])
    assert firsts == {"u-0", "u-1"}


class YieldingPrepareStore(InMemoryLeaseStore):
    """Pending-checkpoint writes take a few event-loop turns before they land."""

    async def prepare_checkpoint(self, lease: Lease, pending: ExtendedSequenceNumber) -> Lease:
        for _ in range(10):
            await asyncio.sleep(0)
        return await super().prepare_checkpoint(lease, pending)


async def test_a_renewal_waits_for_a_prepare_in_flight_on_the_same_lease() -> None:
    # both write the lease conditionally on its counter: run together, the second must
    # start from the first's result (the per-lease lock), or it loses the lease.
    clock = FakeClock()
    store, held = YieldingPrepareStore(), HeldLeases(clock)
    await held_by_me(store, held, "a")
    cp = Checkpointer(store, held, "a")
    renewer = LeaseRenewer(store, held, FAILOVER, clock)
    prepared, renewed = await asyncio.gather(cp.prepare_checkpoint("100"), renewer.renew_all())
    assert prepared.pending_checkpoint == ExtendedSequenceNumber("100")
    assert renewed.renewed == ("a",)
    stored = await store.get_lease("a")
    assert stored is not None
    assert (stored.lease_owner, stored.lease_counter) == ("me", 3)  # take, prepare, renew
