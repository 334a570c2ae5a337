"""The leases this worker holds: one shared, up-to-date view for renewer, checkpointer and taker.

Every successful write on a held lease (take, renew, checkpoint) stores the lease the store
returned, so the next conditional write always uses the latest counter. Writes on one lease
are serialized with :meth:`HeldLeases.lock`, so a renewal and a checkpoint never race each
other into a false "lease lost".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import Lease


class LeaseEventKind(StrEnum):
    """What happened to a held lease."""

    GAINED = "gained"
    """This worker now holds the lease: start a shard task for it."""
    LOST = "lost"
    """Taken by another worker, deleted, or not renewed in time: stop the shard at once,
    without checkpointing."""
    RELEASED = "released"
    """Released on purpose (graceful shutdown); the shard was stopped before."""


@dataclass(frozen=True)
class LeaseEvent:
    """A change in the set of held leases."""

    kind: LeaseEventKind
    """Gained, lost or released."""
    lease: Lease
    """The lease as last known to this worker."""
    reason: str = ""
    """Why (for LOST: what the store said)."""

    @property
    def shard_id(self) -> str:
        """The shard the lease covers."""
        return self.lease.lease_key


LeaseListener = Callable[[LeaseEvent], None]
"""Called synchronously, in the event loop, for every :class:`LeaseEvent`."""


@dataclass(frozen=True)
class HeldLease:
    """A held lease and when this worker last proved ownership (own monotonic clock)."""

    lease: Lease
    """Latest lease returned by the store."""
    confirmed_at: float
    """Clock reading of the last successful take, renewal or checkpoint."""


class HeldLeases:
    """Held leases keyed by shard id, with per-lease locks and change notifications."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._held: dict[str, HeldLease] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._listeners: list[LeaseListener] = []

    def add_listener(self, listener: LeaseListener) -> None:
        """Call ``listener`` for every gain, loss and release from now on."""
        self._listeners.append(listener)

    def remove_listener(self, listener: LeaseListener) -> None:
        """Stop calling ``listener``."""
        self._listeners.remove(listener)

    def lock(self, shard_id: str) -> asyncio.Lock:
        """The lock serializing writes on ``shard_id``'s lease."""
        return self._locks.setdefault(shard_id, asyncio.Lock())

    def get(self, shard_id: str) -> Lease | None:
        """The held lease for ``shard_id``, or None if not held."""
        entry = self._held.get(shard_id)
        return None if entry is None else entry.lease

    def entry(self, shard_id: str) -> HeldLease | None:
        """The held lease with its last confirmation time, or None."""
        return self._held.get(shard_id)

    def shard_ids(self) -> frozenset[str]:
        """Shards held right now."""
        return frozenset(self._held)

    def leases(self) -> list[Lease]:
        """Held leases, ordered by shard id."""
        return [self._held[k].lease for k in sorted(self._held)]

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, shard_id: object) -> bool:
        return shard_id in self._held

    def now(self) -> float:
        """The clock reading to pass as ``at`` (take it *before* sending the write)."""
        return self._clock()

    def gained(self, lease: Lease, at: float | None = None) -> None:
        """Record a lease just taken; emits GAINED if it was not held before.

        ``at`` is when the take was sent (defaults to now); using the send time keeps this
        worker's idea of expiry ahead of every other worker's.
        """
        new = lease.lease_key not in self._held
        self._held[lease.lease_key] = HeldLease(lease, self._clock() if at is None else at)
        if new:
            self._emit(LeaseEvent(LeaseEventKind.GAINED, lease))

    def confirmed(self, lease: Lease, at: float | None = None) -> None:
        """Record the result of a renewal or checkpoint sent at ``at`` (no event).

        Ignored if the lease is no longer held (it was lost or released meanwhile).
        """
        if lease.lease_key in self._held:
            self._held[lease.lease_key] = HeldLease(lease, self._clock() if at is None else at)

    def lost(self, shard_id: str, reason: str) -> None:
        """Forget a lease this worker no longer owns; emits LOST (once)."""
        entry = self._held.pop(shard_id, None)
        if entry is not None:
            self._emit(LeaseEvent(LeaseEventKind.LOST, entry.lease, reason))

    def released(self, shard_id: str) -> None:
        """Forget a lease released on purpose; emits RELEASED (once)."""
        entry = self._held.pop(shard_id, None)
        if entry is not None:
            self._emit(LeaseEvent(LeaseEventKind.RELEASED, entry.lease, "released"))

    def _emit(self, event: LeaseEvent) -> None:
        for listener in list(self._listeners):
            listener(event)
