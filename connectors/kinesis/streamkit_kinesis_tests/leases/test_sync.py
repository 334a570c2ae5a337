"""Shard sync decisions and the parent-before-child rule (no server)."""

from __future__ import annotations

import asyncio

import pytest
from streamkit_kinesis.leases import (
    InMemoryLeaseStore,
    Lease,
    decide_takes,
    parents_done,
    plan_sync,
    sync_shards,
)
from streamkit_kinesis.leases.sync import create_child_leases, plan_child_leases
from streamkit_kinesis.types import (
    AT_TIMESTAMP,
    LATEST,
    SHARD_END,
    TRIM_HORIZON,
    ExtendedSequenceNumber,
    HashKeyRange,
    ShardInfo,
)

from streamkit.errors import ConfigError

TOP = 2**128 - 1
HALF = 2**127


def shard(
    sid: str, parents: tuple[str, ...] = (), lo: int = 0, hi: int = TOP, closed: bool = False
) -> ShardInfo:
    return ShardInfo(sid, parents, HashKeyRange(lo, hi), "100", "200" if closed else None)


def by_key(plan_leases: tuple[Lease, ...]) -> dict[str, Lease]:
    return {lease.lease_key: lease for lease in plan_leases}


# A stream that was split once: p (closed) -> c1, c2 (open).
SPLIT = [shard("p", closed=True), shard("c1", ("p",), 0, HALF - 1), shard("c2", ("p",), HALF)]


def test_fresh_stream_all_leases_at_the_initial_position() -> None:
    plan = plan_sync([shard("a", hi=HALF - 1), shard("b", lo=HALF)], [], TRIM_HORIZON)
    assert plan.children_to_record == ()
    assert plan.to_create == (
        Lease("a", checkpoint=TRIM_HORIZON, hash_key_range=HashKeyRange(0, HALF - 1)),
        Lease("b", checkpoint=TRIM_HORIZON, hash_key_range=HashKeyRange(HALF, TOP)),
    )


def test_fresh_table_leases_only_the_roots_children_wait_for_shard_end() -> None:
    created = by_key(plan_sync(SPLIT, [], TRIM_HORIZON).to_create)
    assert set(created) == {"p"}  # c1, c2 are created when p reaches SHARD_END
    assert created["p"].checkpoint == TRIM_HORIZON
    assert created["p"].child_shard_ids == ("c1", "c2")  # lineage recorded for cleanup


def test_at_timestamp_applies_to_the_roots() -> None:
    created = by_key(plan_sync(SPLIT, [], AT_TIMESTAMP).to_create)
    assert {key: lease.checkpoint for key, lease in created.items()} == {"p": AT_TIMESTAMP}


def test_latest_leases_open_shards_only_and_at_latest() -> None:
    created = by_key(plan_sync(SPLIT, [], LATEST).to_create)
    assert {key: lease.checkpoint for key, lease in created.items()} == {
        "c1": LATEST,
        "c2": LATEST,
    }
    assert parents_done(created["c1"], created)


def test_children_of_a_live_lease_are_not_created_by_the_periodic_sync() -> None:
    existing = [
        Lease("p", lease_owner="A", lease_counter=9, checkpoint=ExtendedSequenceNumber("150"))
    ]
    plan = plan_sync(SPLIT, existing, LATEST)
    assert plan.to_create == ()
    assert plan.children_to_record == (("p", ("c1", "c2")),)


def test_children_of_a_finished_lease_start_at_trim_horizon_even_for_latest() -> None:
    """The repair path: a worker died between SHARD_END and creating the children."""
    existing = [Lease("p", checkpoint=SHARD_END)]
    created = by_key(plan_sync(SPLIT, existing, LATEST).to_create)
    assert {key: lease.checkpoint for key, lease in created.items()} == {
        "c1": TRIM_HORIZON,
        "c2": TRIM_HORIZON,
    }
    assert created["c1"].parent_shard_ids == ("p",)


# p split into c1, c2; then c1 split into g1, g2 (two reshards between two syncs).
TWO_SPLITS = [
    shard("p", closed=True),
    shard("c1", ("p",), 0, HALF - 1, closed=True),
    shard("c2", ("p",), HALF),
    shard("g1", ("c1",), 0, HALF // 2 - 1),
    shard("g2", ("c1",), HALF // 2, HALF - 1),
]


def test_grandchildren_wait_for_their_parent_and_never_start_at_latest() -> None:
    reading = [Lease("p", lease_owner="A", checkpoint=ExtendedSequenceNumber("150"))]
    assert plan_sync(TWO_SPLITS, reading, LATEST).to_create == ()
    p_done = [Lease("p", checkpoint=SHARD_END)]
    assert set(by_key(plan_sync(TWO_SPLITS, p_done, LATEST).to_create)) == {"c1", "c2"}
    c1_done = [*p_done, Lease("c1", checkpoint=SHARD_END), Lease("c2", checkpoint=LATEST)]
    created = by_key(plan_sync(TWO_SPLITS, c1_done, LATEST).to_create)
    assert {key: lease.checkpoint for key, lease in created.items()} == {
        "g1": TRIM_HORIZON,
        "g2": TRIM_HORIZON,
    }


def test_ancestors_of_leased_shards_are_never_leased_again() -> None:
    """Cleanup deleted p and c1 once their children started: a later sync must not lease
    them again at the initial position (the records would be read twice)."""
    started = ExtendedSequenceNumber("300")
    table = [
        Lease("c2", parent_shard_ids=("p",), checkpoint=started),
        Lease("g1", parent_shard_ids=("c1",), checkpoint=started),
        Lease("g2", parent_shard_ids=("c1",), checkpoint=started),
    ]
    for initial in (TRIM_HORIZON, LATEST, AT_TIMESTAMP):
        assert plan_sync(TWO_SPLITS, table, initial).to_create == ()
    # a child whose parents are gone (cleaned up) and that has no lease yet is repaired
    assert set(by_key(plan_sync(TWO_SPLITS, table[1:], TRIM_HORIZON).to_create)) == {"c2"}


def test_descendants_of_at_timestamp_start_at_timestamp() -> None:
    created = by_key(plan_sync(SPLIT, [Lease("p", checkpoint=SHARD_END)], AT_TIMESTAMP).to_create)
    assert {lease.checkpoint for lease in created.values()} == {AT_TIMESTAMP}


def test_sync_is_a_no_op_once_the_table_matches() -> None:
    existing = list(plan_sync(SPLIT, [], TRIM_HORIZON).to_create)
    assert plan_sync(SPLIT, existing, TRIM_HORIZON).is_empty


def test_merge_child_waits_for_both_parents_and_is_recorded_on_both() -> None:
    merge = [shard("a", closed=True), shard("b", closed=True), shard("m", ("a", "b"))]
    half_done = [Lease("a", checkpoint=SHARD_END), Lease("b")]
    plan = plan_sync(merge, half_done)
    assert plan.to_create == ()
    assert plan.children_to_record == (("a", ("m",)), ("b", ("m",)))
    done = [Lease("a", checkpoint=SHARD_END), Lease("b", checkpoint=SHARD_END)]
    assert by_key(plan_sync(merge, done).to_create)["m"].parent_shard_ids == ("a", "b")


def test_child_leases_at_shard_end_defer_a_merge_child_whose_other_parent_has_no_lease() -> None:
    m = shard("m", ("a", "b"))
    created, deferred = plan_child_leases("a", [m], {"b": None}, {"a", "b", "m"}, LATEST)
    assert (created, deferred) == ((), ("m",))
    created, deferred = plan_child_leases("a", [m], {"b": Lease("b")}, {"a", "b", "m"}, LATEST)
    assert [(c.lease_key, c.checkpoint, c.parent_shard_ids) for c in created] == [
        ("m", TRIM_HORIZON, ("a", "b"))
    ]
    # b trimmed (not listed, no lease): nothing to wait for
    created, _ = plan_child_leases("a", [m], {"b": None}, {"a", "m"}, LATEST)
    assert [c.lease_key for c in created] == ["m"]


async def test_create_child_leases_writes_children_once_and_records_them() -> None:
    store = InMemoryLeaseStore()
    await store.create_table_if_not_exists()
    await store.create_lease_if_not_exists(Lease("p", checkpoint=ExtendedSequenceNumber("150")))
    kids = SPLIT[1:]
    results = await asyncio.gather(
        *(create_child_leases(store, "p", kids, {"p", "c1", "c2"}, LATEST) for _ in range(3))
    )
    assert sorted(key for result in results for key in result) == ["c1", "c2"]
    table = {lease.lease_key: lease for lease in await store.list_leases()}
    assert table["p"].child_shard_ids == ("c1", "c2")
    assert table["c1"].checkpoint == TRIM_HORIZON == table["c2"].checkpoint


def test_blocked_children_take_no_slot() -> None:
    """4 children of 2 unfinished parents, max_leases=2: the parents are taken, never a
    child (which would wait for a parent nobody reads: a deadlock)."""
    parents = [Lease("p0"), Lease("p1")]
    kids = [Lease(f"c{i}", parent_shard_ids=(f"p{i // 2}",)) for i in range(4)]
    decision = decide_takes([*kids, *parents], "w", {}, 0.0, 10.0, max_leases=2)
    assert sorted(lease.lease_key for lease in decision.to_take) == ["p0", "p1"]
    assert decision.target == 2
    # one parent finished: its children are free, the other parent's are still blocked
    done = [Lease("p0", checkpoint=SHARD_END), Lease("p1", lease_owner="w")]
    decision = decide_takes([*kids, *done], "w", {"p1": 0.0}, 1.0, 10.0, max_leases=2)
    assert [lease.lease_key for lease in decision.to_take] == ["c0"]  # by key, no rng
    assert decision.target == 2


def test_initial_position_must_be_a_start_sentinel() -> None:
    with pytest.raises(ConfigError, match="initial position"):
        plan_sync(SPLIT, [], SHARD_END)


def test_parents_done_requires_every_leased_parent_at_shard_end() -> None:
    child = Lease("m", parent_shard_ids=("a", "b"))
    a_done = Lease("a", checkpoint=SHARD_END)
    b_reading = Lease("b", checkpoint=ExtendedSequenceNumber("120"))
    assert not parents_done(child, {"a": a_done, "b": b_reading})
    assert parents_done(child, {"a": a_done, "b": Lease("b", checkpoint=SHARD_END)})
    # b's lease is gone (e.g. cleaned up after retention): it counts as done.
    assert parents_done(child, {"a": a_done})
    assert parents_done(Lease("root"), {})


async def test_sync_shards_is_idempotent_and_safe_when_run_concurrently() -> None:
    store = InMemoryLeaseStore()
    await store.create_table_if_not_exists()
    results = await asyncio.gather(*(sync_shards(store, SPLIT) for _ in range(3)))
    created = [key for result in results for key in result.created]
    assert created == ["p"]  # created exactly once
    leases = {lease.lease_key: lease for lease in await store.list_leases()}
    assert leases["p"].child_shard_ids == ("c1", "c2")
    again = await sync_shards(store, SPLIT)
    assert again.created == ()
    assert again.children_recorded == ()


async def test_sync_after_a_split_adds_children_to_the_live_parent() -> None:
    store = InMemoryLeaseStore()
    await store.create_table_if_not_exists()
    await sync_shards(store, [shard("p")], LATEST)
    parent = await store.get_lease("p")
    assert parent is not None
    taken = await store.take_lease(parent, "A")
    result = await sync_shards(store, SPLIT, LATEST)
    assert result.created == ()  # the children wait for p's SHARD_END
    assert result.children_recorded == ("p",)
    after = await store.get_lease("p")
    assert after is not None
    # Recording children does not touch owner or counter: the owner's renewals go on.
    assert (after.lease_owner, after.lease_counter) == ("A", taken.lease_counter)
    assert after.child_shard_ids == ("c1", "c2")
    await store.renew_lease(taken)
