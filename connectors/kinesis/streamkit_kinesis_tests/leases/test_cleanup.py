"""Lease cleanup rules (KCL's LeaseCleanupManager) on the in-memory store, fake clock."""

from __future__ import annotations

import pytest
from streamkit_kinesis.leases import InMemoryLeaseStore, Lease
from streamkit_kinesis.leases.cleanup import LeaseCleaner, finished_parents, has_started
from streamkit_kinesis.leases.model import LEADER_LEASE_KEY
from streamkit_kinesis.types import (
    AT_TIMESTAMP,
    LATEST,
    SHARD_END,
    TRIM_HORIZON,
    ExtendedSequenceNumber,
    HashKeyRange,
    ShardInfo,
)

SEQ = ExtendedSequenceNumber("150")


def shard(sid: str, parents: tuple[str, ...] = (), closed: bool = False) -> ShardInfo:
    return ShardInfo(sid, parents, HashKeyRange(0, 2**128 - 1), "100", "200" if closed else None)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def store_with(*leases: Lease) -> InMemoryLeaseStore:
    store = InMemoryLeaseStore()
    await store.create_table_if_not_exists()
    for lease in leases:
        await store.create_lease_if_not_exists(lease)
    return store


async def keys(store: InMemoryLeaseStore) -> set[str]:
    return {lease.lease_key for lease in await store.list_leases()}


def test_started_means_a_sequence_number_or_shard_end() -> None:
    assert [has_started(Lease("x", checkpoint=c)) for c in (SEQ, SHARD_END)] == [True, True]
    for sentinel in (TRIM_HORIZON, LATEST, AT_TIMESTAMP):
        assert not has_started(Lease("x", checkpoint=sentinel))


def test_a_finished_parent_goes_only_once_every_child_started() -> None:
    parent = Lease("p", checkpoint=SHARD_END, child_shard_ids=("c1", "c2"))
    c1 = Lease("c1", parent_shard_ids=("p",), checkpoint=SEQ)
    waiting = Lease("c2", parent_shard_ids=("p",), checkpoint=TRIM_HORIZON)
    assert finished_parents([parent, c1, waiting], {}) == ()
    assert finished_parents([parent, c1], {}) == ()  # c2 has no lease yet
    started = Lease("c2", parent_shard_ids=("p",), checkpoint=SHARD_END)
    assert finished_parents([parent, c1, started], {}) == ("p",)


def test_children_known_only_from_the_shard_list_count_too() -> None:
    parent = Lease("p", checkpoint=SHARD_END)  # children never recorded on it
    c1 = Lease("c1", parent_shard_ids=("p",), checkpoint=SEQ)
    assert finished_parents([parent, c1], {"p": {"c1", "c2"}}) == ()
    c2 = Lease("c2", parent_shard_ids=("p",), checkpoint=SEQ)
    assert finished_parents([parent, c1, c2], {"p": {"c1", "c2"}}) == ("p",)
    assert finished_parents([parent], {}) == ()  # no known child: left to the garbage rule


def test_deletion_is_top_down_and_cascades_in_one_run() -> None:
    grand = Lease("g", checkpoint=SHARD_END, child_shard_ids=("p",))
    parent = Lease("p", parent_shard_ids=("g",), checkpoint=SHARD_END, child_shard_ids=("c",))
    child = Lease("c", parent_shard_ids=("p",), checkpoint=SEQ)
    assert finished_parents([parent, child, grand], {}) == ("g", "p")
    live_grand = Lease("g", checkpoint=SEQ, child_shard_ids=("p",))
    assert finished_parents([parent, child, live_grand], {}) == ()


def test_unfinished_leases_are_never_deleted_as_parents() -> None:
    parent = Lease("p", checkpoint=SEQ, child_shard_ids=("c",))
    child = Lease("c", parent_shard_ids=("p",), checkpoint=SEQ)
    assert finished_parents([parent, child], {}) == ()


async def test_garbage_leases_go_after_the_grace_period_on_the_injected_clock() -> None:
    clock = Clock()
    ghost = Lease("ghost", checkpoint=SEQ)
    live = Lease("a", checkpoint=SEQ)
    store = await store_with(ghost, live)
    cleaner = LeaseCleaner(store, grace=600.0, clock=clock)
    listed = [shard("a")]

    plan = await cleaner.run(await store.list_leases(), listed)
    assert plan.to_delete == ()
    clock.now += 599.0
    assert (await cleaner.run(await store.list_leases(), listed)).to_delete == ()
    clock.now += 1.0
    assert (await cleaner.run(await store.list_leases(), listed)).garbage == ("ghost",)
    assert await keys(store) == {"a"}
    assert cleaner.deleted == 1


async def test_the_leader_lease_is_never_garbage() -> None:
    clock = Clock()
    leader = Lease(LEADER_LEASE_KEY, lease_owner="w")
    store = await store_with()
    cleaner = LeaseCleaner(store, grace=0.0, clock=clock)
    assert cleaner.plan([leader, Lease("gone")], []).garbage == ("gone",)


async def test_a_shard_listed_again_restarts_its_grace_period() -> None:
    clock = Clock()
    store = await store_with(Lease("late", checkpoint=TRIM_HORIZON))
    cleaner = LeaseCleaner(store, grace=60.0, clock=clock)
    await cleaner.run(await store.list_leases(), [])
    clock.now += 50.0
    await cleaner.run(await store.list_leases(), [shard("late")])  # the list caught up
    clock.now += 50.0
    assert (await cleaner.run(await store.list_leases(), [])).to_delete == ()
    clock.now += 60.0
    assert (await cleaner.run(await store.list_leases(), [])).garbage == ("late",)


async def test_default_grace_is_kcl_s_thirty_minutes() -> None:
    cleaner = LeaseCleaner(await store_with())
    assert cleaner.grace == 1800.0
    with pytest.raises(ValueError, match="grace"):
        LeaseCleaner(await store_with(), grace=-1)


async def test_five_reshard_rounds_leave_only_the_open_shards() -> None:
    """The table does not grow: split/merge five times, each child read and finished in
    turn; after each cleanup only the open shards' leases remain."""
    clock = Clock()
    store = await store_with(Lease("s0", checkpoint=SEQ))
    cleaner = LeaseCleaner(store, grace=1800.0, clock=clock)
    shards = [shard("s0")]
    open_ids = ["s0"]
    n = 0
    for round_ in range(5):
        new_open: list[str] = []
        for sid in open_ids:
            await store.update_checkpoint(
                await store.take_lease(_must(await store.get_lease(sid)), "w"), SHARD_END
            )
            kids = [f"s{n + 1}", f"s{n + 2}"] if round_ % 2 == 0 else [f"s{n + 1}"]
            n += len(kids)
            for kid in kids:
                info = shard(kid, (sid,))
                shards.append(info)
                await store.create_lease_if_not_exists(Lease.for_shard(info, SEQ))
            new_open += kids
        open_ids = new_open
        await cleaner.run(await store.list_leases(), shards)
        assert await keys(store) == set(open_ids)


def _must(lease: Lease | None) -> Lease:
    assert lease is not None
    return lease
