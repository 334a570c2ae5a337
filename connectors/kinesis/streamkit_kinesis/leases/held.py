"""The leases this worker holds: one shared, up-to-date view for renewer, checkpointer and taker.

Every successful write on a held lease (take, renew, checkpoint) stores the lease the store
returned, so the next conditional write always uses the latest counter. Writes on one lease
are serialized with :meth:`HeldLeases.lock`, so a renewal and a checkpoint never race each
other into a false "lease lost".

KCL's renewer rule: with a ``ttl`` (the failover time), a lease whose last confirmed write was
sent more than ``ttl`` ago is dropped (LOST) by the first query that meets it, so nobody
reads, renews or checkpoints with a lease another worker may already consider expired.
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
    """Held leases keyed by shard id, with per-lease locks and change notifications.

    ``ttl`` (None: never) is how long a lease stays usable after the send time of its last
    confirmed take, renewal or checkpoint; every query drops expired leases first.
    """

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, ttl: float | None = None
    ) -> None:
        self._clock = clock
        self._ttl = ttl
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
        """The held lease for ``shard_id``, or None if not held (or expired: dropped)."""
        entry = self.entry(shard_id)
        return None if entry is None else entry.lease

    def entry(self, shard_id: str) -> HeldLease | None:
        """The held lease with its last confirmation time, or None."""
        self.expire()
        return self._held.get(shard_id)

    def shard_ids(self) -> frozenset[str]:
        """Shards held right now."""
        self.expire()
        return frozenset(self._held)

    def leases(self) -> list[Lease]:
        """Held leases, ordered by shard id."""
        self.expire()
        return [self._held[k].lease for k in sorted(self._held)]

    def __len__(self) -> int:
        self.expire()
        return len(self._held)

    def __contains__(self, shard_id: object) -> bool:
        self.expire()
        return shard_id in self._held

    def expire(self) -> tuple[str, ...]:
        """Drop (LOST) every lease confirmed more than ``ttl`` ago; returns their shard ids."""
        if self._ttl is None or not self._held:
            return ()
        now = self._clock()
        stale = sorted(k for k, e in self._held.items() if now - e.confirmed_at > self._ttl)
        for shard_id in stale:
            entry = self._held.get(shard_id)
            if entry is None:
                continue  # a listener of an earlier loss re-entered expire() and dropped it
            silent = now - entry.confirmed_at
            self.lost(
                shard_id,
                f"lease {shard_id} expired locally: last confirmed {silent:.1f}s ago, more than "
                f"the failover time {self._ttl}s; another worker may own it now",
            )
        return tuple(stale)

    def now(self) -> float:
        """The clock reading to pass as ``at`` (take it *before* sending the write)."""
        return self._clock()

    def gained(self, lease: Lease, at: float | None = None) -> bool:
        """Record a lease just taken; emits GAINED if it was not held before. Returns
        whether the lease is held now.

        ``at`` is when the take was sent (defaults to now); using the send time keeps this
        worker's idea of expiry ahead of every other worker's. A take whose answer came
        more than ``ttl`` after it was sent is stale on arrival (other workers may count
        the lease expired already): it is not recorded (no GAINED; LOST if it was held),
        and the lease expires in the table as after a crash.
        """
        when = self._clock() if at is None else at
        if self._ttl is not None and self._clock() - when > self._ttl:
            self.lost(lease.lease_key, f"take of {lease.lease_key} answered after the ttl")
            return False
        new = lease.lease_key not in self._held
        self._held[lease.lease_key] = HeldLease(lease, when)
        if new:
            self._emit(LeaseEvent(LeaseEventKind.GAINED, lease))
        return True

    def confirmed(self, lease: Lease, at: float | None = None) -> None:
        """Record the result of a renewal or checkpoint sent at ``at`` (no event).

        Ignored if the lease is no longer held (it was lost or released meanwhile). A write
        sent while the lease was still valid keeps it, however long the answer took: it
        landed on our owner and counter, so nobody had taken the lease.
        """
        entry = self._held.get(lease.lease_key)
        when = self._clock() if at is None else at
        if entry is None:
            return
        if self._ttl is not None and when - entry.confirmed_at > self._ttl:
            self.expire()
            return
        self._held[lease.lease_key] = HeldLease(lease, when)

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
