"""Leader election on the lease table: one worker runs shard sync and lease cleanup.

KCL 3.x elects one leader so that the periodic shard sync and lease cleanup run once per
application, not once per worker. Here the leader holds one more lease, keyed
:data:`~.model.LEADER_LEASE_KEY`, in the same table: taken like a shard lease when it is
unowned or its counter has not moved for ``lease_time`` on this worker's own clock, renewed
by the renewal cycles (same conditional write, same lane) once per ``heartbeat``, and
dropped by KCL's renewer rule once it has gone ``lease_time`` without a confirmed write.
Defaults are KCL 3.x's leader lock: 120 s, heartbeat every 30 s (2 writes a minute). The
stores' ``list_leases`` leave the item out, so no shard logic ever sees it; followers read
it from the take cycle's scan when the store offers :class:`~.store.ScansLeader` (no extra
read), else with one ``get_lease`` per campaign.

Guarantee: at any instant at most one worker's :attr:`LeaderElection.is_leader` is true,
provided clocks run at the same rate (each judges expiry on its own monotonic clock, never
by comparing wall clocks): a new leader takes over only after the old one's lease has sat
unchanged for ``lease_time`` on the new leader's clock, and the old one stops considering
itself leader ``lease_time`` after it sent its last successful renewal.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

from .errors import LeaseConflictError, LeaseLostError, LeaseStoreUnavailableError
from .model import LEADER_LEASE_KEY, Lease

_UNREAD = Lease(LEADER_LEASE_KEY, lease_counter=-1)
"""Marker: the caller did not read the leader lease; :meth:`LeaderElection.campaign` reads."""

if TYPE_CHECKING:
    from collections.abc import Callable

    from .store import LeaseStore


class LeaderElection:
    """Campaigns for, renews and releases the leader lease of one worker."""

    def __init__(
        self,
        store: LeaseStore,
        worker_id: str,
        lease_time: float = 120.0,
        *,
        heartbeat: float | None = None,
        renew_store: LeaseStore | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._renew_store = renew_store or store
        self.worker_id = worker_id
        self._failover = lease_time
        self._heartbeat = lease_time / 4 if heartbeat is None else heartbeat
        self._clock = clock
        self._lease: Lease | None = None
        self._confirmed_at = 0.0
        self._seen: tuple[int, float] | None = None  # (counter, when it last changed)

    @property
    def is_leader(self) -> bool:
        """True while this worker holds the leader lease, confirmed within failover."""
        return self._lease is not None and self._clock() - self._confirmed_at <= self._failover

    async def campaign(self, observed: Lease | None = _UNREAD) -> bool:
        """One election step (each take cycle): take the leader lease if it is free or
        expired; True if this worker is the leader afterwards.

        ``observed`` is the leader lease as a scan just saw it (None: absent); without it
        the lease is read. A stale view only delays a takeover: the take is conditional.
        """
        if self.is_leader:
            return True
        self._lease = None
        current = await self._store.get_lease(LEADER_LEASE_KEY) if observed is _UNREAD else observed
        if current is None:
            try:
                current = await self._store.create_lease_if_not_exists(Lease(LEADER_LEASE_KEY))
            except LeaseConflictError as e:
                current = e.current
            if current is None:
                return False
        if not self._free(current):
            return False
        sent_at = self._clock()
        try:
            taken = await self._store.take_lease(current, self.worker_id)
        except LeaseConflictError:
            return False
        self._lease, self._confirmed_at = taken, sent_at
        return True

    def _free(self, current: Lease) -> bool:
        now = self._clock()
        if self._seen is None or self._seen[0] != current.lease_counter:
            self._seen = (current.lease_counter, now)
        if current.lease_owner is None or current.lease_owner == self.worker_id:
            return True  # unowned, or ours from an earlier life of this worker id
        return now - self._seen[1] > self._failover

    async def renew(self) -> None:
        """Renew the leader lease if held and ``heartbeat`` has passed (called each renewal
        cycle); a rejected renewal or an expired lease ends the leadership, a transient
        error is retried next cycle."""
        if self._lease is None:
            return
        if not self.is_leader:
            self._lease = None
            return
        sent_at = self._clock()
        if sent_at - self._confirmed_at < self._heartbeat:
            return
        try:
            renewed = await self._renew_store.renew_lease(self._lease)
        except LeaseLostError:
            self._lease = None
            return
        except LeaseStoreUnavailableError:
            return
        self._lease, self._confirmed_at = renewed, sent_at

    async def release(self) -> None:
        """Give up the leadership (graceful stop): another worker takes it on its next
        campaign, without waiting for expiry. Errors only mean it will expire instead."""
        lease, self._lease = self._lease, None
        if lease is None:
            return
        with contextlib.suppress(LeaseLostError, LeaseStoreUnavailableError):
            await self._store.release_lease(lease)

    def forget(self) -> None:
        """Stop considering this worker the leader (no write; the lease expires)."""
        self._lease = None
