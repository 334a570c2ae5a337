"""Two lease coordinators sharing one lease table: in memory, and DynamoDB on real servers.

Most tests drive the cycles by hand (``start(background=False)``, ``take_once``,
``renew_once``) with a fake clock, so "within N cycles" is exact; one test runs the real
background loops on the real clock.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import TYPE_CHECKING, Any

import pytest
from streamkit_kinesis.leases import (
    DynamoDBLeaseStore,
    Lease,
    LeaseCoordinator,
    LeaseEvent,
    LeaseEventKind,
    LeaseLostError,
    LeaseStore,
    TakeDecision,
)
from streamkit_kinesis.testing.leases import ExceptionThrowingLeaseStore, FakeClock, new_store

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("moto", id="moto", marks=[pytest.mark.integration, pytest.mark.moto]),
    pytest.param(
        "localstack", id="localstack", marks=[pytest.mark.integration, pytest.mark.localstack]
    ),
]
FAILOVER = 1.0


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[LeaseStore]:
    backend: str = request.param
    endpoint = None if backend == "memory" else request.getfixturevalue(f"{backend}_endpoint")
    created = await new_store(backend, endpoint, prefix="coordinator")
    for i in range(8):
        await created.create_lease_if_not_exists(Lease(f"shard-{i}"))
    yield created
    if isinstance(created, DynamoDBLeaseStore):
        await created.delete_table()


def coordinator(
    store: LeaseStore, worker: str, clock: FakeClock | None = None, max_steal: int = 1
) -> LeaseCoordinator:
    return LeaseCoordinator(
        store,
        worker,
        failover_time=FAILOVER,
        clock=clock or time.monotonic,
        rng=random.Random(worker),
        max_steal=max_steal,
    )


async def run_cycle(clock: FakeClock, *workers: LeaseCoordinator) -> None:
    """Everyone takes (concurrently), then everyone renews; a third of failover passes."""
    await asyncio.gather(*(w.take_once() for w in workers))
    await asyncio.gather(*(w.renew_once() for w in workers))
    clock.advance(FAILOVER / 3)


async def take_cycle(coordinator: LeaseCoordinator, n: int) -> None:
    """One take cycle, repeated only while a take failed transiently (a DynamoDB call timed
    out on a loaded machine) and fewer than ``n`` leases are held: never a retry that would
    wait out an expiry."""
    for _ in range(10):
        before = coordinator.metrics().transient_errors
        await coordinator.take_once()
        held, errors = len(coordinator.held_shard_ids()), coordinator.metrics().transient_errors
        if held >= n or errors == before:
            return


async def owners(store: LeaseStore) -> dict[str, int]:
    counts: dict[str, int] = {}
    for lease in await store.list_leases():
        owner = lease.lease_owner or "-"
        counts[owner] = counts.get(owner, 0) + 1
    return counts


async def test_started_together_they_balance_within_three_cycles(store: LeaseStore) -> None:
    clock = FakeClock()
    # With two steals per cycle any first split (even 8/0) reaches 4/4 by the third cycle.
    a, b = coordinator(store, "A", clock, max_steal=2), coordinator(store, "B", clock, max_steal=2)
    await asyncio.gather(a.start(background=False), b.start(background=False))
    for _ in range(3):
        await run_cycle(clock, a, b)
    assert len(a.held_shard_ids()) == 4
    assert len(b.held_shard_ids()) == 4
    assert await owners(store) == {"A": 4, "B": 4}
    assert a.held_shard_ids() | b.held_shard_ids() == {f"shard-{i}" for i in range(8)}


async def test_newcomer_steals_one_lease_per_cycle_by_default(store: LeaseStore) -> None:
    clock = FakeClock()
    a, b = coordinator(store, "A", clock), coordinator(store, "B", clock)
    await a.start(background=False)
    await run_cycle(clock, a)
    assert len(a.held_shard_ids()) == 8
    await b.start(background=False)
    held_by_b = []
    for _ in range(5):
        await run_cycle(clock, a, b)
        held_by_b.append(len(b.held_shard_ids()))
    assert held_by_b == [1, 2, 3, 4, 4]
    assert len(a.held_shard_ids()) == 4
    assert (a.metrics().losses, b.metrics().steals) == (4, 4)
    assert await owners(store) == {"A": 4, "B": 4}


async def test_a_third_worker_joining_gives_three_three_two(store: LeaseStore) -> None:
    clock = FakeClock()
    workers = [coordinator(store, w, clock) for w in "ABC"]
    await asyncio.gather(*(w.start(background=False) for w in workers[:2]))
    for _ in range(5):
        await run_cycle(clock, *workers[:2])
    assert await owners(store) == {"A": 4, "B": 4}
    await workers[2].start(background=False)
    for _ in range(3):
        await run_cycle(clock, *workers)
    assert sorted(len(w.held_shard_ids()) for w in workers) == [2, 3, 3]
    assert sorted((await owners(store)).values()) == [2, 3, 3]
    steals = workers[2].metrics().steals
    await run_cycle(clock, *workers)
    assert workers[2].metrics().steals == steals  # balanced: nothing more moves


async def test_release_all_hands_every_lease_over_in_one_take_cycle(store: LeaseStore) -> None:
    clock = FakeClock()
    a, b = coordinator(store, "A", clock, max_steal=2), coordinator(store, "B", clock, max_steal=2)
    await asyncio.gather(a.start(background=False), b.start(background=False))
    for _ in range(3):
        await run_cycle(clock, a, b)
    events: list[LeaseEvent] = []
    a.add_listener(events.append)
    await a.release_all()
    assert {e.kind for e in events} == {LeaseEventKind.RELEASED}
    assert len(events) == 4
    assert a.held_shard_ids() == frozenset()
    await take_cycle(b, 8)  # one cycle, no clock advance: released leases need no expiry
    assert len(b.held_shard_ids()) == 8
    assert await owners(store) == {"B": 8}
    assert a.metrics().releases == 4


async def test_a_stopped_workers_leases_move_only_after_failover(store: LeaseStore) -> None:
    clock = FakeClock()
    a, b = coordinator(store, "A", clock, max_steal=2), coordinator(store, "B", clock, max_steal=2)
    await asyncio.gather(a.start(background=False), b.start(background=False))
    for _ in range(3):
        await run_cycle(clock, a, b)
    await a.stop()  # like a crash: nothing released, leases stay owned by A in the table
    await run_cycle(clock, b)  # FAILOVER/3 later: A's leases are not expired yet
    assert len(b.held_shard_ids()) == 4
    await run_cycle(clock, b)
    await run_cycle(clock, b)
    assert len(b.held_shard_ids()) == 4  # exactly FAILOVER on B's clock: still not expired
    clock.advance(0.01)
    await take_cycle(b, 8)
    assert len(b.held_shard_ids()) == 8
    assert await owners(store) == {"B": 8}


async def test_checkpoint_by_the_worker_that_lost_the_lease_is_rejected(store: LeaseStore) -> None:
    clock = FakeClock()
    a, b = coordinator(store, "A", clock), coordinator(store, "B", clock)
    await a.start(background=False)
    await run_cycle(clock, a)
    checkpointer = a.checkpointer("shard-0")
    await checkpointer.checkpoint("100")
    await b.start(background=False)
    for _ in range(10):  # B steals, then takes A's expired leases; A does not renew
        await run_cycle(clock, b)
        if "shard-0" in b.held_shard_ids():
            break
    assert "shard-0" in b.held_shard_ids()
    with pytest.raises(LeaseLostError):
        await checkpointer.checkpoint("200")
    lease = await store.get_lease("shard-0")
    assert lease is not None
    assert lease.lease_owner == "B"
    assert lease.checkpoint.sequence_number == "100"


class RecordingCoordinator(LeaseCoordinator):
    """A real coordinator that notes each take cycle's start and end and what it chose."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cycles: list[tuple[float, float, TakeDecision]] = []

    async def take_once(self) -> TakeDecision:
        started = time.monotonic()
        decision = await super().take_once()
        self.cycles.append((started, time.monotonic(), decision))
        return decision


async def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll until ``predicate()``; the generous deadline only bounds a hung test."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.02)


async def test_background_loops_balance_and_hand_over(store: LeaseStore) -> None:
    """The real loops on the real clock: they balance, and every lease A releases is taken
    by B no later than B's first take cycle that *starts* after the releases landed.

    Counting B's cycles from the release would depend on load (the cycle in flight may
    already take some); the start and end times of each cycle do not. A lease A could not
    release (its renewals failed for longer than failover) is reported LOST, still counts A
    as a live worker, and every lease reaches B only after failover.
    """

    def make(worker: str) -> RecordingCoordinator:
        return RecordingCoordinator(
            store,
            worker,
            failover_time=5.0,
            renew_interval=1.5,
            take_interval=0.3,
            max_steal=2,
            rng=random.Random(worker),
        )

    a, b = make("A"), make("B")
    await asyncio.gather(a.start(), b.start())
    try:
        await wait_for(
            lambda: (len(a.held_shard_ids()), len(b.held_shard_ids())) == (4, 4), "a 4/4 split"
        )
        held_by_a = a.held_shard_ids()
        a_events: list[LeaseEvent] = []
        gained_by_b: dict[str, float] = {}
        a.add_listener(a_events.append)

        def note_gain(event: LeaseEvent) -> None:
            if event.kind is LeaseEventKind.GAINED:
                gained_by_b.setdefault(event.shard_id, time.monotonic())

        b.add_listener(note_gain)
        await a.release_all()  # returns once every release has landed in the table
        released_at = time.monotonic()
        released = {e.shard_id for e in a_events if e.kind is LeaseEventKind.RELEASED}
        lost = {e.shard_id for e in a_events if e.kind is LeaseEventKind.LOST}
        assert released | lost == held_by_a, a_events
        await wait_for(lambda: any(t >= released_at for t, _, _ in b.cycles), "a cycle of B")
        first = next(c for c in b.cycles if c[0] >= released_at)
        taken = {k for k in released if gained_by_b.get(k, float("inf")) <= first[1]}
        if not lost:  # a lease A still owns keeps A a live worker, so B stays at target 4
            assert taken == released, (first, released_at, gained_by_b, b.metrics())
        await wait_for(lambda: len(b.held_shard_ids()) == 8, "B to hold all 8 leases")
        assert await owners(store) == {"B": 8}
        # B may hold all 8 before its first renewal cycle (1.5 s) when the store is fast
        await wait_for(lambda: b.metrics().renew_cycles > 0, "a renewal cycle of B")
        metrics = b.metrics()
        assert metrics.renewals > 0
        assert metrics.store_calls > 0
        assert metrics.store_calls_by_operation.get("Scan", 0) >= metrics.take_cycles
    finally:
        await a.stop()
        await b.release_all()
        await b.stop()


class RenewalHangsAfterWriting(ExceptionThrowingLeaseStore):
    """A real store whose renewals land in the table and then never return (until cancelled)."""

    def __init__(self, inner: LeaseStore) -> None:
        super().__init__(inner)
        self.renewal_landed = asyncio.Event()

    async def renew_lease(self, lease: Lease) -> Lease:
        await self.inner.renew_lease(lease)
        self.renewal_landed.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_release_all_during_a_renewal_still_releases(store: LeaseStore) -> None:
    """A renewal cancelled after its write landed leaves a stale counter; release still works."""
    hanging = RenewalHangsAfterWriting(store)
    # a failover time no loaded machine's pauses reach: with 1 s, A's own view could expire a
    # lease and its take loop re-take it in a thread that lands after the release
    a = LeaseCoordinator(hanging, "A", failover_time=60.0, renew_interval=0.05)
    await a.start(background=False)
    await take_cycle(a, 8)
    assert len(a.held_shard_ids()) == 8
    await a.start()  # background loops: the first renewal hangs after its write lands
    await asyncio.wait_for(hanging.renewal_landed.wait(), 30)
    events: list[LeaseEvent] = []
    a.add_listener(events.append)
    await a.release_all()
    await a.stop()
    assert {e.kind for e in events} == {LeaseEventKind.RELEASED}
    assert await owners(store) == {"-": 8}
