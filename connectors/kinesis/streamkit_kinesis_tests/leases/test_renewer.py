"""Renewer and checkpointer over the in-memory store, with injected failures and clock."""

from __future__ import annotations

import asyncio

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
)
from streamkit_kinesis.testing.leases import ExceptionThrowingLeaseStore, FakeClock
from streamkit_kinesis.types import SHARD_END, ExtendedSequenceNumber

FAILOVER = 10.0


class Setup:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.real = InMemoryLeaseStore()
        self.store = ExceptionThrowingLeaseStore(self.real)
        self.held = HeldLeases(self.clock)
        self.events: list[LeaseEvent] = []
        self.held.add_listener(self.events.append)
        self.renewer = LeaseRenewer(self.store, self.held, FAILOVER, self.clock)

    async def hold(self, *keys: str) -> None:
        await self.real.create_table_if_not_exists()
        for key in keys:
            lease = await self.real.create_lease_if_not_exists(Lease(key))
            self.held.gained(await self.real.take_lease(lease, "me"))

    def kinds(self) -> list[tuple[LeaseEventKind, str]]:
        return [(e.kind, e.shard_id) for e in self.events]


def unavailable() -> LeaseStoreUnavailableError:
    return LeaseStoreUnavailableError("throttled (injected)")


async def test_renewal_increments_counter_and_updates_the_shared_view() -> None:
    s = Setup()
    await s.hold("a", "b")
    result = await s.renewer.renew_all()
    assert result.renewed == ("a", "b")
    assert result.lost == ()
    for key in "ab":
        stored = await s.real.get_lease(key)
        assert stored is not None
        assert stored.lease_counter == 2
        assert s.held.get(key) == stored


async def test_stolen_lease_is_dropped_at_once_and_reported_lost() -> None:
    s = Setup()
    await s.hold("a", "b")
    a = await s.real.get_lease("a")
    assert a is not None
    await s.real.take_lease(a, "thief")
    result = await s.renewer.renew_all()
    assert result.lost == ("a",)
    assert result.renewed == ("b",)
    assert s.held.shard_ids() == {"b"}
    assert s.kinds()[-1] == (LeaseEventKind.LOST, "a")
    assert "thief" in s.events[-1].reason


async def test_transient_failures_keep_the_lease_until_failover_passes() -> None:
    s = Setup()
    await s.hold("a")
    s.store.inject("renew_lease", unavailable, times=10)
    s.clock.advance(FAILOVER / 2)
    result = await s.renewer.renew_all()
    assert result.transient_errors == 1
    assert s.held.shard_ids() == {"a"}
    s.clock.advance(FAILOVER / 2 + 0.1)
    result = await s.renewer.renew_all()
    assert result.lost == ("a",)
    assert s.held.shard_ids() == frozenset()
    assert "not renewed" in s.events[-1].reason


async def test_transient_failure_then_success_keeps_the_lease() -> None:
    s = Setup()
    await s.hold("a")
    s.store.inject("renew_lease", unavailable, times=1)
    assert (await s.renewer.renew_all()).transient_errors == 1
    s.clock.advance(FAILOVER * 0.9)
    assert (await s.renewer.renew_all()).renewed == ("a",)
    s.clock.advance(FAILOVER * 0.9)  # measured from the last success, not the first grant
    s.store.inject("renew_lease", unavailable, times=1)
    assert (await s.renewer.renew_all()).lost == ()


async def test_other_store_errors_are_raised_not_swallowed() -> None:
    s = Setup()
    await s.hold("a")
    s.store.inject("renew_lease", lambda: RuntimeError("bug"))
    with pytest.raises(RuntimeError, match="bug"):
        await s.renewer.renew_all()


async def test_checkpoint_uses_the_counter_of_the_latest_renewal() -> None:
    s = Setup()
    await s.hold("a")
    cp = Checkpointer(s.store, s.held, "a")
    await s.renewer.renew_all()
    await s.renewer.renew_all()
    lease = await cp.checkpoint("100")
    assert lease.checkpoint == ExtendedSequenceNumber("100")
    assert lease.lease_counter == 4
    assert (await s.renewer.renew_all()).renewed == ("a",)  # the checkpoint did not break renewal


async def test_concurrent_renewals_and_checkpoints_never_cause_a_false_loss() -> None:
    s = Setup()
    await s.hold("a")
    cp = Checkpointer(s.store, s.held, "a")
    for i in range(1, 20):
        cp.mark_delivered(str(i * 10))
        results = await asyncio.gather(s.renewer.renew_all(), cp.checkpoint())
        assert results[0].lost == ()
    assert s.held.shard_ids() == {"a"}
    stored = await s.real.get_lease("a")
    assert stored is not None
    assert stored.checkpoint == ExtendedSequenceNumber("190")


async def test_checkpoint_by_a_worker_that_lost_the_lease_raises_and_writes_nothing() -> None:
    s = Setup()
    await s.hold("a")
    cp = Checkpointer(s.store, s.held, "a")
    await cp.checkpoint("100")
    stolen = await s.real.get_lease("a")
    assert stolen is not None
    await s.real.take_lease(stolen, "thief")
    with pytest.raises(LeaseLostError, match="thief"):
        await cp.checkpoint("150")
    stored = await s.real.get_lease("a")
    assert stored is not None
    assert stored.checkpoint == ExtendedSequenceNumber("100")
    assert s.kinds()[-1] == (LeaseEventKind.LOST, "a")
    with pytest.raises(LeaseLostError, match="no longer holds"):
        await cp.checkpoint("160")


async def test_checkpoint_only_moves_forward_and_shard_end_is_final() -> None:
    s = Setup()
    await s.hold("a")
    cp = Checkpointer(s.store, s.held, "a")
    await cp.checkpoint(ExtendedSequenceNumber("500", 1))
    with pytest.raises(CheckpointOrderError, match="backwards"):
        await cp.checkpoint("499")
    await cp.checkpoint(SHARD_END)
    with pytest.raises(CheckpointOrderError, match="final"):
        await cp.checkpoint("600")
    stored = await s.real.get_lease("a")
    assert stored is not None
    assert stored.checkpoint == SHARD_END
    assert s.held.shard_ids() == {"a"}  # an order error is not a lost lease


async def test_checkpoint_without_position_uses_last_delivered() -> None:
    s = Setup()
    await s.hold("a")
    cp = Checkpointer(s.store, s.held, "a")
    untouched = await cp.checkpoint()  # nothing delivered: nothing written
    assert untouched.lease_counter == 1
    assert s.real.call_counts()["UpdateItem"] == 1
    cp.mark_delivered("42")
    assert (await cp.checkpoint()).checkpoint == ExtendedSequenceNumber("42")
    assert cp.last_checkpoint == ExtendedSequenceNumber("42")


async def test_a_lease_expired_locally_is_dropped_before_anyone_uses_it() -> None:
    """KCL's renewer rule: past ``ttl`` since its last confirmed write, a lease is gone from
    every query, is never renewed, and cannot be checkpointed (the table still names us)."""
    clock = FakeClock()
    real = InMemoryLeaseStore()
    await real.create_table_if_not_exists()
    held = HeldLeases(clock, ttl=FAILOVER)
    events: list[LeaseEvent] = []
    held.add_listener(events.append)
    for key in "ab":
        held.gained(await real.take_lease(await real.create_lease_if_not_exists(Lease(key)), "me"))
    renewer = LeaseRenewer(real, held, FAILOVER, clock)
    cp = Checkpointer(real, held, "a")
    clock.advance(FAILOVER)  # exactly failover: still usable
    assert held.shard_ids() == {"a", "b"}
    assert (await renewer.renew_all()).renewed == ("a", "b")  # confirmed at this reading
    clock.advance(FAILOVER / 2)
    await cp.checkpoint("7")  # sent now: "a" is confirmed again, "b" is not
    clock.advance(FAILOVER / 2 + 0.01)
    assert held.get("b") is None
    assert "b" not in held
    assert [(e.kind, e.shard_id) for e in events] == [
        (LeaseEventKind.GAINED, "a"),
        (LeaseEventKind.GAINED, "b"),
        (LeaseEventKind.LOST, "b"),
    ]
    assert "expired locally" in events[-1].reason
    writes = real.call_counts()["UpdateItem"]
    clock.advance(FAILOVER / 2)
    result = await renewer.renew_all()  # "a" expires now too: nothing is sent for it
    assert (result.renewed, result.lost) == ((), ("a",))
    assert real.call_counts()["UpdateItem"] == writes
    with pytest.raises(LeaseLostError, match="no longer holds"):
        await cp.checkpoint("8")
    stored = await real.get_lease("a")
    assert stored is not None
    assert (stored.lease_owner, stored.checkpoint) == ("me", ExtendedSequenceNumber("7"))


async def test_a_renewal_sent_in_time_keeps_the_lease_however_late_it_returns() -> None:
    clock = FakeClock()
    real = InMemoryLeaseStore()
    await real.create_table_if_not_exists()
    held = HeldLeases(clock, ttl=FAILOVER)
    held.gained(await real.take_lease(await real.create_lease_if_not_exists(Lease("a")), "me"))
    clock.advance(FAILOVER * 0.9)
    sent_at = held.now()
    renewed = await real.renew_lease(held.get("a") or Lease("a"))
    clock.advance(FAILOVER * 0.5)  # the answer took long: past ttl of the previous write
    held.confirmed(renewed, sent_at)
    assert held.get("a") == renewed
    clock.advance(FAILOVER * 0.55)  # measured from the renewal's send time
    assert held.get("a") is None
