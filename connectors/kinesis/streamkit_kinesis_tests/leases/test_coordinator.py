"""Coordinator behaviour that needs no server: errors, events, lifecycle (in-memory store)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from streamkit_kinesis.leases import (
    InMemoryLeaseStore,
    Lease,
    LeaseCoordinator,
    LeaseCoordinatorError,
    LeaseEvent,
    LeaseEventKind,
    LeaseStoreUnavailableError,
    parents_done,
)
from streamkit_kinesis.testing.leases import ExceptionThrowingLeaseStore, FakeClock
from streamkit_kinesis.types import SHARD_END

from streamkit.errors import ConfigError


async def store_with(n: int) -> ExceptionThrowingLeaseStore:
    inner = InMemoryLeaseStore()
    await inner.create_table_if_not_exists()
    for i in range(n):
        await inner.create_lease_if_not_exists(Lease(f"shard-{i}"))
    return ExceptionThrowingLeaseStore(inner)


async def wait_until(predicate: object, timeout: float = 60.0) -> None:
    assert callable(predicate)
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def failed(c: LeaseCoordinator) -> bool:
    try:
        c.held_shard_ids()
    except LeaseCoordinatorError:
        return True
    return False


def test_renew_interval_must_be_shorter_than_failover() -> None:
    with pytest.raises(ConfigError, match="renew_interval"):
        LeaseCoordinator(InMemoryLeaseStore(), "A", failover_time=1.0, renew_interval=1.0)


def test_defaults_follow_kcl() -> None:
    c = LeaseCoordinator(InMemoryLeaseStore(), "A")
    assert (c.failover_time, c.renew_interval, c.take_interval, c.max_steal) == (
        10.0,
        10.0 / 3,
        20.0,
        1,
    )


async def test_listeners_and_wait_for_change_see_gains() -> None:
    store = await store_with(2)
    c = LeaseCoordinator(store, "A", clock=FakeClock())
    events: list[LeaseEvent] = []
    c.add_listener(events.append)
    await c.start(background=False)
    waiter = asyncio.create_task(c.wait_for_change(timeout=5))
    await asyncio.sleep(0)
    await c.take_once()
    assert await waiter is True
    # Takes are attempted in random order (workers starting together contend less).
    assert sorted((e.kind, e.shard_id) for e in events) == [
        (LeaseEventKind.GAINED, "shard-0"),
        (LeaseEventKind.GAINED, "shard-1"),
    ]
    assert await c.wait_for_change(timeout=0.01) is False


async def test_transient_store_errors_are_counted_and_the_loops_go_on() -> None:
    store = await store_with(2)
    store.inject("list_leases", lambda: LeaseStoreUnavailableError("throttled"), times=2)
    c = LeaseCoordinator(store, "A", failover_time=1.0, renew_interval=0.1, take_interval=0.02)
    await c.start()
    try:
        await wait_until(lambda: len(c.held_shard_ids()) == 2)
        assert c.metrics().transient_errors == 2
        assert store.raised["list_leases"] == 2
    finally:
        await c.stop()


async def test_a_fatal_background_error_drops_leases_and_is_raised_on_next_call() -> None:
    store = await store_with(2)
    c = LeaseCoordinator(store, "A", failover_time=1.0, renew_interval=0.05, take_interval=0.05)
    events: list[LeaseEvent] = []
    c.add_listener(events.append)
    await c.start()
    try:
        await wait_until(lambda: len(c.held) == 2)
        store.inject("renew_lease", lambda: RuntimeError("disk on fire"))
        await wait_until(lambda: len(c.held) == 0)
        lost = [e for e in events if e.kind is LeaseEventKind.LOST]
        assert {e.shard_id for e in lost} == {"shard-0", "shard-1"}
        assert all("disk on fire" in e.reason for e in lost)
        with pytest.raises(LeaseCoordinatorError, match="disk on fire") as info:
            c.held_shard_ids()
        assert isinstance(info.value.__cause__, RuntimeError)
        with pytest.raises(LeaseCoordinatorError):
            c.metrics()
        with pytest.raises(LeaseCoordinatorError):
            await c.wait_for_change(timeout=0.01)
    finally:
        await c.stop()


async def test_waiters_are_woken_with_the_error_when_the_loop_dies() -> None:
    store = await store_with(1)
    c = LeaseCoordinator(store, "A", failover_time=1.0, renew_interval=0.05, take_interval=0.05)
    await c.start()
    try:
        await wait_until(lambda: len(c.held) == 1)
        waiter = asyncio.create_task(c.wait_for_change(timeout=5))
        await asyncio.sleep(0)
        store.inject("list_leases", lambda: ValueError("bad table"))
        # The LOST event wakes the waiter before the error is stored; either way it returns
        # promptly (no 5 s timeout), and from then on every call raises.
        with contextlib.suppress(LeaseCoordinatorError):
            assert await asyncio.wait_for(waiter, 2) is True
        await wait_until(lambda: failed(c))
        with pytest.raises(LeaseCoordinatorError, match="bad table"):
            c.held_shard_ids()
    finally:
        await c.stop()


async def test_async_with_releases_on_exit() -> None:
    store = await store_with(3)
    async with LeaseCoordinator(store, "A", failover_time=1.0, take_interval=0.02) as c:
        await wait_until(lambda: len(c.held_shard_ids()) == 3)
    assert {lease.lease_owner for lease in await store.list_leases()} == {None}
    assert c.metrics().releases == 3


async def test_stop_without_release_reports_leases_lost_and_leaves_them_owned() -> None:
    store = await store_with(2)
    c = LeaseCoordinator(store, "A", clock=FakeClock())
    events: list[LeaseEvent] = []
    c.add_listener(events.append)
    await c.start(background=False)
    await c.take_once()
    await c.stop()
    assert [e.kind for e in events[-2:]] == [LeaseEventKind.LOST, LeaseEventKind.LOST]
    assert {lease.lease_owner for lease in await store.list_leases()} == {"A"}


async def test_release_that_fails_transiently_reports_lost() -> None:
    store = await store_with(2)
    c = LeaseCoordinator(store, "A", clock=FakeClock())
    events: list[LeaseEvent] = []
    c.add_listener(events.append)
    await c.start(background=False)
    await c.take_once()
    store.inject("release_lease", lambda: LeaseStoreUnavailableError("timeout"))
    await c.release_all()
    kinds = sorted(e.kind.value for e in events if e.kind is not LeaseEventKind.GAINED)
    assert kinds == ["lost", "released"]
    assert c.held_shard_ids() == frozenset()


async def test_a_finished_lease_released_after_shard_end_is_not_taken_again() -> None:
    store = await store_with(2)
    clock = FakeClock()
    a = LeaseCoordinator(store, "A", clock=clock)
    b = LeaseCoordinator(store, "B", clock=clock)
    await a.start(background=False)
    await b.start(background=False)
    await a.take_once()
    await a.checkpointer("shard-0").checkpoint(SHARD_END)
    assert await a.release("shard-0") is True
    assert a.held_shard_ids() == {"shard-1"}
    await b.take_once()
    await a.take_once()
    snapshot = a.table_snapshot()
    assert snapshot["shard-0"].lease_owner is None
    assert snapshot["shard-0"].checkpoint == SHARD_END
    assert "shard-0" not in b.held_shard_ids() | a.held_shard_ids()
    assert parents_done(Lease("child", parent_shard_ids=("shard-0",)), snapshot)


async def test_max_leases_that_leave_leases_unowned_is_a_metric_and_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = await store_with(8)
    clock = FakeClock()
    a = LeaseCoordinator(store, "A", failover_time=10.0, max_leases=3, clock=clock)
    await a.start(background=False)
    with caplog.at_level("WARNING", logger="streamkit_kinesis.leases.coordinator"):
        await a.take_once()
        await a.take_once()
    assert len(a.held_shard_ids()) == 3
    assert a.metrics().left_unowned == 5  # 8 leases, one worker with 3 slots
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings  # once per change, not every cycle
    assert "max_leases=3 leaves 5 lease(s) unowned" in warnings[0]
    b = LeaseCoordinator(store, "B", failover_time=10.0, max_leases=3, clock=clock)
    await b.start(background=False)
    await b.take_once()
    assert (len(b.held_shard_ids()), b.metrics().left_unowned) == (3, 2)
    roomy = LeaseCoordinator(store, "C", failover_time=10.0, max_leases=4, clock=clock)
    await roomy.start(background=False)
    await roomy.take_once()
    assert roomy.metrics().left_unowned == 0
