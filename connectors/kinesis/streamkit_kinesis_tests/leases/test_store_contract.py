"""One contract, every lease store: in-memory, DynamoDB on moto, DynamoDB on LocalStack.

Each DynamoDB test gets a fresh table on a real server over the wire.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from streamkit_kinesis.leases import (
    CheckpointOrderError,
    DynamoDBLeaseStore,
    InMemoryLeaseStore,
    Lease,
    LeaseConflictError,
    LeaseLostError,
    LeaseNotFoundError,
    LeaseStore,
    LeaseStoreError,
)
from streamkit_kinesis.testing.leases import new_store
from streamkit_kinesis.types import (
    SHARD_END,
    TRIM_HORIZON,
    ExtendedSequenceNumber,
    HashKeyRange,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("moto", id="moto", marks=[pytest.mark.integration, pytest.mark.moto]),
    pytest.param(
        "localstack", id="localstack", marks=[pytest.mark.integration, pytest.mark.localstack]
    ),
]


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[LeaseStore]:
    backend: str = request.param
    endpoint = None if backend == "memory" else request.getfixturevalue(f"{backend}_endpoint")
    created = await new_store(backend, endpoint, prefix="contract")
    yield created
    if isinstance(created, DynamoDBLeaseStore):
        await created.delete_table()


def seq(n: str, sub: int = 0) -> ExtendedSequenceNumber:
    return ExtendedSequenceNumber(n, sub)


async def owned(store: LeaseStore, key: str = "shard-0", owner: str = "A") -> Lease:
    lease = await store.create_lease_if_not_exists(Lease(key))
    return await store.take_lease(lease, owner)


# -- table, create, get, list ----------------------------------------------------------


async def test_create_table_is_idempotent(store: LeaseStore) -> None:
    assert await store.create_table_if_not_exists() is False
    assert await store.list_leases() == []


async def test_create_if_absent_then_conflict_with_the_existing_lease(store: LeaseStore) -> None:
    first = Lease("shard-0", checkpoint=seq("7"))
    assert await store.create_lease_if_not_exists(first) == first
    with pytest.raises(LeaseConflictError, match="already exists") as info:
        await store.create_lease_if_not_exists(Lease("shard-0"))
    assert info.value.current == first
    assert await store.get_lease("shard-0") == first


async def test_concurrent_creates_of_one_key_have_exactly_one_winner(store: LeaseStore) -> None:
    attempts = [Lease("race", checkpoint=seq(str(i))) for i in range(5)]
    results = await asyncio.gather(
        *(store.create_lease_if_not_exists(lease) for lease in attempts), return_exceptions=True
    )
    winners = [r for r in results if isinstance(r, Lease)]
    assert len(winners) == 1
    assert all(isinstance(r, LeaseConflictError) for r in results if not isinstance(r, Lease))
    assert await store.get_lease("race") == winners[0]


async def test_every_attribute_round_trips(store: LeaseStore) -> None:
    lease = Lease(
        "shardId-000000000002",
        checkpoint=seq("49590338271490256608559692538361571095921575989136588898", 3),
        owner_switches_since_checkpoint=4,
        parent_shard_ids=("shardId-000000000000", "shardId-000000000001"),
        child_shard_ids=("shardId-000000000005",),
        hash_key_range=HashKeyRange(2**127, 2**128 - 1),
    )
    await store.create_lease_if_not_exists(lease)
    assert await store.get_lease(lease.lease_key) == lease


async def test_get_absent_is_none_and_list_returns_all(store: LeaseStore) -> None:
    assert await store.get_lease("nope") is None
    keys = [f"shard-{i:03d}" for i in range(25)]
    await asyncio.gather(*(store.create_lease_if_not_exists(Lease(k)) for k in reversed(keys)))
    listed = await store.list_leases()
    assert [lease.lease_key for lease in listed] == keys
    assert all(lease == Lease(lease.lease_key) for lease in listed)


# -- renew -----------------------------------------------------------------------------


async def test_renew_increments_counter_and_returns_the_new_lease(store: LeaseStore) -> None:
    lease = await owned(store)
    renewed = await store.renew_lease(lease)
    assert renewed == lease.renewed()
    assert await store.get_lease(lease.lease_key) == renewed


async def test_renew_with_stale_counter_fails_and_changes_nothing(store: LeaseStore) -> None:
    lease = await owned(store)
    current = await store.renew_lease(lease)
    with pytest.raises(LeaseLostError, match=rf"counter {current.lease_counter}"):
        await store.renew_lease(lease)
    assert await store.get_lease(lease.lease_key) == current


async def test_renew_by_another_owner_fails(store: LeaseStore) -> None:
    lease = await owned(store, owner="A")
    with pytest.raises(LeaseLostError, match="owned by A"):
        await store.renew_lease(lease.with_owner("B"))


async def test_renew_of_a_deleted_lease_fails(store: LeaseStore) -> None:
    lease = await owned(store)
    await store.delete_lease(lease.lease_key)
    with pytest.raises(LeaseLostError, match="no longer exists"):
        await store.renew_lease(lease)


# -- take ------------------------------------------------------------------------------


async def test_take_sets_owner_and_counts_owner_switches(store: LeaseStore) -> None:
    """As KCL: only a move from one worker to another is a switch (not a take of an
    unowned lease, nor a take by the same owner)."""
    lease = await store.create_lease_if_not_exists(Lease("s"))
    a = await store.take_lease(lease, "A")  # unowned: no switch
    assert (a.lease_owner, a.lease_counter, a.owner_switches_since_checkpoint) == ("A", 1, 0)
    again = await store.take_lease(a, "A")  # same owner: no switch
    assert again.owner_switches_since_checkpoint == 0
    b = await store.take_lease(again, "B")
    assert (b.lease_owner, b.lease_counter, b.owner_switches_since_checkpoint) == ("B", 3, 1)
    released = await store.release_lease(b)
    c = await store.take_lease(released, "C")  # released, hence unowned: no switch
    assert (c.lease_owner, c.lease_counter, c.owner_switches_since_checkpoint) == ("C", 5, 1)
    d = await store.take_lease(c, "D")
    assert d.owner_switches_since_checkpoint == 2
    assert await store.get_lease("s") == d


async def test_take_with_stale_counter_fails_with_the_current_lease(store: LeaseStore) -> None:
    lease = await owned(store, owner="A")
    renewed = await store.renew_lease(lease)
    with pytest.raises(LeaseConflictError, match="owned by A") as info:
        await store.take_lease(lease, "B")
    assert info.value.current == renewed
    assert await store.get_lease(lease.lease_key) == renewed


async def test_take_of_a_deleted_lease_is_a_conflict(store: LeaseStore) -> None:
    lease = await store.create_lease_if_not_exists(Lease("s"))
    await store.delete_lease("s")
    with pytest.raises(LeaseConflictError) as info:
        await store.take_lease(lease, "A")
    assert info.value.current is None


ATOMIC = [p for p in BACKENDS if p.id != "moto"]
"""Stores whose conditional writes are atomic. Not moto's server: it evaluates a condition
and writes in separate steps per request thread, so under load two of five concurrent takes
both won (the suite's run with two CPU-bound processes beside it, 2026-12-06); LocalStack,
the stand-in for DynamoDB here, and the in-memory store must have exactly one winner."""


@pytest.mark.parametrize("store", ATOMIC, indirect=True)
async def test_concurrent_takes_have_exactly_one_winner(store: LeaseStore) -> None:
    lease = await store.create_lease_if_not_exists(Lease("s"))
    results = await asyncio.gather(
        *(store.take_lease(lease, f"W{i}") for i in range(5)), return_exceptions=True
    )
    winners = [r for r in results if isinstance(r, Lease)]
    assert len(winners) == 1
    assert sum(isinstance(r, LeaseConflictError) for r in results) == 4
    assert await store.get_lease("s") == winners[0]


# -- checkpoint ------------------------------------------------------------------------


async def test_checkpoint_stores_position_and_resets_owner_switches(store: LeaseStore) -> None:
    lease = await store.take_lease(await owned(store, owner="A"), "B")
    assert lease.owner_switches_since_checkpoint == 1
    done = await store.update_checkpoint(lease, seq("100", 2))
    assert done.checkpoint == seq("100", 2)
    assert (done.owner_switches_since_checkpoint, done.lease_counter) == (
        0,
        lease.lease_counter + 1,
    )
    assert await store.get_lease(lease.lease_key) == done


async def test_checkpoint_by_a_stale_owner_raises_lease_lost(store: LeaseStore) -> None:
    mine = await owned(store, owner="A")
    mine = await store.update_checkpoint(mine, seq("100"))
    theirs = await store.take_lease(mine, "B")
    with pytest.raises(LeaseLostError, match="owned by B"):
        await store.update_checkpoint(mine, seq("200"))
    assert await store.get_lease(mine.lease_key) == theirs  # nothing written


async def test_checkpoint_with_stale_counter_raises_lease_lost(store: LeaseStore) -> None:
    lease = await owned(store)
    current = await store.renew_lease(lease)
    with pytest.raises(LeaseLostError):
        await store.update_checkpoint(lease, seq("5"))
    assert await store.get_lease(lease.lease_key) == current


async def test_checkpoint_cannot_move_backwards(store: LeaseStore) -> None:
    lease = await owned(store)
    at_100 = await store.update_checkpoint(lease, seq("100", 1))
    for backwards in (seq("99"), seq("100", 0), TRIM_HORIZON):
        with pytest.raises(CheckpointOrderError):
            await store.update_checkpoint(at_100, backwards)
    assert await store.get_lease(lease.lease_key) == at_100
    # numeric, not lexicographic: 1000 is after 999
    at_999 = await store.update_checkpoint(at_100, seq("999"))
    assert (await store.update_checkpoint(at_999, seq("1000"))).checkpoint == seq("1000")


async def test_checkpoint_is_checked_against_the_stored_position(store: LeaseStore) -> None:
    lease = await owned(store)
    stored = await store.update_checkpoint(lease, seq("500"))
    # A forged view with the right owner and counter but an older checkpoint must not let
    # the position move backwards behind the store's back.
    forged = Lease(stored.lease_key, stored.lease_owner, stored.lease_counter, seq("10"))
    with pytest.raises(LeaseLostError):
        await store.update_checkpoint(forged, seq("20"))
    assert await store.get_lease(lease.lease_key) == stored


async def test_shard_end_is_final(store: LeaseStore) -> None:
    lease = await owned(store)
    ended = await store.update_checkpoint(lease, SHARD_END)
    with pytest.raises(CheckpointOrderError, match="final"):
        await store.update_checkpoint(ended, seq("1"))
    assert (await store.update_checkpoint(ended, SHARD_END)).checkpoint == SHARD_END


# -- release ---------------------------------------------------------------------------


async def test_release_clears_owner_so_another_worker_can_take(store: LeaseStore) -> None:
    lease = await owned(store, owner="A")
    released = await store.release_lease(lease)
    assert released.lease_owner is None
    assert released.lease_counter == lease.lease_counter + 1
    assert await store.get_lease(lease.lease_key) == released
    with pytest.raises(LeaseLostError):
        await store.renew_lease(lease)  # A's old view is stale now
    taken = await store.take_lease(released, "B")
    assert taken.lease_owner == "B"


async def test_release_with_stale_view_raises_lease_lost(store: LeaseStore) -> None:
    lease = await owned(store, owner="A")
    theirs = await store.take_lease(lease, "B")
    with pytest.raises(LeaseLostError, match="owned by B"):
        await store.release_lease(lease)
    assert await store.get_lease(lease.lease_key) == theirs


# -- children, delete, errors, metrics -------------------------------------------------


async def test_add_children_is_a_union_that_leaves_ownership_alone(store: LeaseStore) -> None:
    lease = await owned(store, "p", "A")
    first = await store.add_child_shard_ids("p", ["c2", "c1"])
    assert first.child_shard_ids == ("c1", "c2")
    again = await store.add_child_shard_ids("p", ["c2", "c3"])
    assert again.child_shard_ids == ("c1", "c2", "c3")
    assert (again.lease_owner, again.lease_counter) == ("A", lease.lease_counter)
    await store.renew_lease(lease)  # the owner's view is still valid
    with pytest.raises(LeaseNotFoundError, match="no such lease"):
        await store.add_child_shard_ids("missing", ["c"])


async def test_delete_is_idempotent(store: LeaseStore) -> None:
    await store.create_lease_if_not_exists(Lease("s"))
    await store.delete_lease("s")
    await store.delete_lease("s")
    assert await store.get_lease("s") is None
    assert await store.list_leases() == []


async def test_calls_are_counted_by_operation(store: LeaseStore) -> None:
    before = dict(store.call_counts())
    lease = await owned(store)
    await store.renew_lease(lease)
    await store.list_leases()
    after = store.call_counts()

    def delta(op: str) -> int:
        return after.get(op, 0) - before.get(op, 0)

    assert (delta("PutItem"), delta("UpdateItem"), delta("Scan")) == (1, 2, 1)


async def test_missing_table_is_a_clear_error(store: LeaseStore) -> None:
    missing: LeaseStore = (
        DynamoDBLeaseStore(store.endpoint, store.table_name + "-missing")
        if isinstance(store, DynamoDBLeaseStore)
        else InMemoryLeaseStore()
    )
    with pytest.raises(LeaseStoreError, match="create_table_if_not_exists"):
        await missing.list_leases()
