"""Shard sync decisions and the parent-before-child rule (no server)."""

from __future__ import annotations

import asyncio

import pytest
from streamkit_kinesis.leases import (
    InMemoryLeaseStore,
    Lease,
    parents_done,
    plan_sync,
    sync_shards,
)
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


def test_new_parent_and_children_created_together_record_lineage() -> None:
    created = by_key(plan_sync(SPLIT, [], TRIM_HORIZON).to_create)
    assert created["p"].child_shard_ids == ("c1", "c2")
    assert created["c1"].parent_shard_ids == ("p",)
    assert {lease.checkpoint for lease in created.values()} == {TRIM_HORIZON}


def test_at_timestamp_applies_to_every_new_lineage() -> None:
    created = by_key(plan_sync(SPLIT, [], AT_TIMESTAMP).to_create)
    assert {lease.checkpoint for lease in created.values()} == {AT_TIMESTAMP}


def test_latest_closes_closed_shards_and_starts_open_ones_at_latest() -> None:
    created = by_key(plan_sync(SPLIT, [], LATEST).to_create)
    assert created["p"].checkpoint == SHARD_END
    assert created["c1"].checkpoint == LATEST
    assert created["c2"].checkpoint == LATEST
    assert parents_done(created["c1"], created)


def test_children_of_an_existing_lease_start_at_trim_horizon_even_for_latest() -> None:
    existing = [
        Lease("p", lease_owner="A", lease_counter=9, checkpoint=ExtendedSequenceNumber("150"))
    ]
    plan = plan_sync(SPLIT, existing, LATEST)
    created = by_key(plan.to_create)
    assert set(created) == {"c1", "c2"}
    assert created["c1"].checkpoint == TRIM_HORIZON == created["c2"].checkpoint
    assert plan.children_to_record == (("p", ("c1", "c2")),)


def test_sync_is_a_no_op_once_the_table_matches() -> None:
    existing = list(plan_sync(SPLIT, [], TRIM_HORIZON).to_create)
    assert plan_sync(SPLIT, existing, TRIM_HORIZON).is_empty


def test_merge_records_the_child_on_both_parents() -> None:
    existing = [Lease("a"), Lease("b")]
    plan = plan_sync(
        [shard("a", closed=True), shard("b", closed=True), shard("m", ("a", "b"))], existing
    )
    assert plan.children_to_record == (("a", ("m",)), ("b", ("m",)))
    assert by_key(plan.to_create)["m"].parent_shard_ids == ("a", "b")


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
    assert sorted(created) == ["c1", "c2", "p"]  # each lease created exactly once
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
    assert result.created == ("c1", "c2")
    assert result.children_recorded == ("p",)
    after = await store.get_lease("p")
    assert after is not None
    # Recording children does not touch owner or counter: the owner's renewals go on.
    assert (after.lease_owner, after.lease_counter) == ("A", taken.lease_counter)
    assert after.child_shard_ids == ("c1", "c2")
    await store.renew_lease(taken)
