"""Leader election on the lease table (issue 12, item 10): one worker runs shard sync and
cleanup. In memory and on real DynamoDB servers, with an injected clock."""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING

import pytest
from streamkit_kinesis.leases import DynamoDBLeaseStore, Lease, LeaseCoordinator, LeaseStore
from streamkit_kinesis.leases.leader import LeaderElection
from streamkit_kinesis.leases.model import LEADER_LEASE_KEY
from streamkit_kinesis.testing.leases import FakeClock, new_store

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("moto", id="moto", marks=[pytest.mark.integration, pytest.mark.moto]),
    pytest.param(
        "localstack", id="localstack", marks=[pytest.mark.integration, pytest.mark.localstack]
    ),
]
FAILOVER = 10.0


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[LeaseStore]:
    backend: str = request.param
    endpoint = None if backend == "memory" else request.getfixturevalue(f"{backend}_endpoint")
    created = await new_store(backend, endpoint, prefix="leader")
    for i in range(4):
        await created.create_lease_if_not_exists(Lease(f"shard-{i}"))
    yield created
    if isinstance(created, DynamoDBLeaseStore):
        await created.delete_table()


def leaders(*elections: LeaderElection) -> list[str]:
    return [e.worker_id for e in elections if e.is_leader]


async def test_one_leader_and_the_lease_stays_out_of_the_shard_leases(store: LeaseStore) -> None:
    clock = FakeClock()
    workers = [LeaderElection(store, w, FAILOVER, clock=clock) for w in "ABC"]
    won = await asyncio.gather(*(w.campaign() for w in workers))
    assert sum(won) == 1
    assert len(leaders(*workers)) == 1
    for _ in range(6):  # renewals keep it; campaigns of the others change nothing
        clock.advance(FAILOVER / 3)
        await asyncio.gather(*(w.renew() for w in workers))
        await asyncio.gather(*(w.campaign() for w in workers))
        assert leaders(*workers) == [workers[won.index(True)].worker_id]
    assert [lease.lease_key for lease in await store.list_leases()] == [
        f"shard-{i}" for i in range(4)
    ]
    stored = await store.get_lease(LEADER_LEASE_KEY)
    assert stored is not None
    assert stored.lease_owner == leaders(*workers)[0]


async def test_a_silent_leader_is_replaced_only_after_failover_on_the_followers_clock(
    store: LeaseStore,
) -> None:
    clock = FakeClock()
    a = LeaderElection(store, "A", FAILOVER, clock=clock)
    b = LeaderElection(store, "B", FAILOVER, clock=clock)
    assert await a.campaign()
    assert not await b.campaign()  # B first sees the counter now
    for step in (4.0, 4.0, 2.0):  # A stops renewing (crashed); B keeps campaigning
        clock.advance(step)  # 4, 8, then exactly failover: not yet expired for either
        assert a.is_leader
        assert not await b.campaign()
    clock.advance(0.01)  # now past failover for both clocks
    assert not a.is_leader  # A gave up first: never two leaders
    assert await b.campaign()
    assert leaders(a, b) == ["B"]
    await a.renew()  # A comes back: its stale lease is dropped, no write
    assert leaders(a, b) == ["B"]
    assert not await a.campaign()


async def test_release_hands_the_leadership_over_at_once(store: LeaseStore) -> None:
    clock = FakeClock()
    a = LeaderElection(store, "A", FAILOVER, clock=clock)
    b = LeaderElection(store, "B", FAILOVER, clock=clock)
    assert await a.campaign()
    assert not await b.campaign()
    await a.release()
    assert not a.is_leader
    assert await b.campaign()  # no clock advance: a released lease needs no expiry
    assert leaders(a, b) == ["B"]


async def test_never_two_leaders_under_random_crashes_and_restarts(store: LeaseStore) -> None:
    clock = FakeClock()
    rng = random.Random(7)
    workers = {w: LeaderElection(store, w, FAILOVER, clock=clock) for w in "ABC"}
    alive = set(workers)
    had_leader = 0
    for _ in range(60):
        clock.advance(rng.choice((0.5, FAILOVER / 3, FAILOVER / 2)))
        assert len(leaders(*workers.values())) <= 1
        for w in sorted(alive):
            await workers[w].renew()
            await workers[w].campaign()
            assert len(leaders(*workers.values())) <= 1
        had_leader += bool(leaders(*workers.values()))
        if rng.random() < 0.15 and alive:  # a crash: it simply stops
            alive.discard(rng.choice(sorted(alive)))
        if rng.random() < 0.15:  # a (re)start of a stopped worker, same id
            alive.add(rng.choice(sorted(set(workers))))
    assert had_leader > 30


async def test_the_coordinator_elects_on_take_cycles_and_renews_with_the_leases(
    store: LeaseStore,
) -> None:
    clock = FakeClock()
    a, b = (
        LeaseCoordinator(store, w, failover_time=FAILOVER, clock=clock, elect_leader=True)
        for w in "AB"
    )
    await a.start(background=False)
    await b.start(background=False)
    await a.take_once()
    await b.take_once()
    assert (a.is_leader, b.is_leader) == (True, False)
    assert LEADER_LEASE_KEY not in a.held_shard_ids() | b.held_shard_ids()
    for _ in range(6):  # renewals carry the leadership through two failover periods
        clock.advance(FAILOVER / 3)
        await a.renew_once()
        await b.take_once()
    assert (a.is_leader, b.is_leader) == (True, False)
    assert a.metrics().is_leader
    await a.release_all()
    assert not a.is_leader
    await b.take_once()
    assert b.is_leader
    plain = LeaseCoordinator(store, "C", failover_time=FAILOVER, clock=clock)
    assert plain.is_leader  # without an election every worker does the leader's work
    await b.stop()
    assert not b.is_leader


async def test_the_election_costs_a_heartbeat_write_and_no_extra_read(store: LeaseStore) -> None:
    """Followers learn about the leader from the take cycle's scan; the leader renews its
    lease once per heartbeat (a quarter of the 120 s lease, as KCL 3.x's leader lock)."""
    clock = FakeClock()
    a, b = (  # two leases each from the start: no steal (a stolen lease's renewal reads)
        LeaseCoordinator(
            store, w, failover_time=FAILOVER, clock=clock, elect_leader=True, max_leases=2
        )
        for w in "AB"
    )
    for c in (a, b):
        await c.start(background=False)
        await c.take_once()
    reads = store.call_counts().get("GetItem", 0)
    for _ in range(36):  # two minutes of KCL's cadence: renew every 10/3 s, take every 20 s
        clock.advance(FAILOVER / 3)
        await asyncio.gather(a.renew_once(), b.renew_once())
        if _ % 6 == 5:
            await asyncio.gather(a.take_once(), b.take_once())
        assert (a.is_leader, b.is_leader) == (True, False)
    assert store.call_counts().get("GetItem", 0) == reads
    leader = await store.get_lease(LEADER_LEASE_KEY)
    assert leader is not None
    assert leader.lease_owner == "A"
    # Taken once, then one write per heartbeat: the first renewal cycle at or after 30 s
    # (cycles are 10/3 s apart), so 3 or 4 writes in 120 s: never more than 2 a minute.
    assert 3 <= leader.lease_counter - 1 <= 4
