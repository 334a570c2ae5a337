"""A consumer listener that reads the held count while leases expire locally (the worker's
own ``_emit`` does) must not break the expiry of the next lease (KeyError seen in
test_reshard_kcl under load, when two leases expired together)."""

from __future__ import annotations

from streamkit_kinesis.leases import HeldLeases, Lease, LeaseEvent


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_two_leases_expiring_together_with_a_listener_that_counts_held() -> None:
    clock = Clock()
    held = HeldLeases(clock, ttl=10.0)
    counts: list[int] = []

    def listener(event: LeaseEvent) -> None:
        counts.append(len(held))  # re-enters expire()

    held.add_listener(listener)
    for key in ("a", "b", "c"):
        held.gained(Lease(key, lease_owner="w", lease_counter=1), at=0.0)
    counts.clear()
    clock.now = 11.0
    assert sorted(held.shard_ids()) == []
    assert counts[-1] == 0


def test_a_take_answered_after_the_ttl_is_not_held_and_emits_nothing() -> None:
    """A take sent at 0 and answered at 11 (ttl 10) is stale on arrival: no GAINED, so no
    shard task starts for a lease the worker would report lost at its next query."""
    clock = Clock()
    held = HeldLeases(clock, ttl=10.0)
    events: list[LeaseEvent] = []
    held.add_listener(events.append)
    clock.now = 11.0
    assert not held.gained(Lease("a", lease_owner="w", lease_counter=1), at=0.0)
    assert events == []
    assert "a" not in held
    assert held.gained(Lease("b", lease_owner="w", lease_counter=1), at=5.0)
    assert [(e.kind.value, e.shard_id) for e in events] == [("gained", "b")]
