"""Renews every held lease with a conditional write on its counter (KCL's ``LeaseRenewer``)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from .errors import LeaseLostError, LeaseStoreUnavailableError
from .metrics import CallTimings

if TYPE_CHECKING:
    from collections.abc import Callable

    from .held import HeldLeases
    from .store import LeaseStore


class RenewOutcome(StrEnum):
    """Result of renewing one lease."""

    RENEWED = "renewed"
    LOST = "lost"
    TRANSIENT = "transient"
    NOT_HELD = "not_held"


@dataclass(frozen=True)
class RenewResult:
    """What one renewal cycle did."""

    renewed: tuple[str, ...]
    """Shards whose lease was renewed."""
    lost: tuple[str, ...]
    """Shards whose lease is lost (reported to listeners as LOST, already dropped)."""
    transient_errors: int
    """Renewals that failed transiently and will be retried next cycle."""


class LeaseRenewer:
    """Renews the leases in a :class:`~.held.HeldLeases` view.

    Guarantees: a renewal that the store rejects (another owner, another counter, deleted)
    drops the lease immediately and emits LOST, so the consumer stops that shard before
    writing anything else. A lease whose renewals fail transiently is kept until
    ``failover_time`` has passed since its last confirmed write (on ``clock``), then dropped
    as LOST: by then other workers may consider it expired and take it. As KCL, a lease
    already expired that way is never renewed: it is dropped first (see :mod:`.held`).
    Give the renewer its own store lane (:meth:`~.dynamodb.DynamoDBLeaseStore.renewal_lane`)
    so renewals never wait behind other work for a thread or a connection.
    """

    def __init__(
        self,
        store: LeaseStore,
        held: HeldLeases,
        failover_time: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        timings: CallTimings | None = None,
        worker_id: str = "",
    ) -> None:
        self._store = store
        self._held = held
        self._failover_time = failover_time
        self._clock = clock
        self._timings = timings or CallTimings()
        self._worker_id = worker_id

    async def renew_all(self) -> RenewResult:
        """Renew every held lease concurrently; non-transient store errors are re-raised.
        Timed as KCL's ``RenewAllLeases`` (a cycle with a transient failure counts as a
        failure), each write as ``RenewLease``."""
        expired = self._held.expire()
        keys = sorted(self._held.shard_ids())
        with self._timings.timed("RenewAllLeases", "", self._worker_id) as cycle:
            outcomes = await asyncio.gather(*(self._renew(k) for k in keys), return_exceptions=True)
            errors = [o for o in outcomes if isinstance(o, BaseException)]
            if errors:
                raise errors[0]
            by_key = dict(zip(keys, outcomes, strict=True))
            result = RenewResult(
                renewed=tuple(k for k, o in by_key.items() if o is RenewOutcome.RENEWED),
                lost=expired + tuple(k for k, o in by_key.items() if o is RenewOutcome.LOST),
                transient_errors=sum(1 for o in by_key.values() if o is RenewOutcome.TRANSIENT),
            )
            if result.transient_errors:
                cycle.failed()
        return result

    async def _renew(self, shard_id: str) -> RenewOutcome:
        async with self._held.lock(shard_id):
            entry = self._held.entry(shard_id)
            if entry is None:
                return RenewOutcome.NOT_HELD
            sent_at = self._clock()
            try:
                with self._timings.timed("RenewAllLeases", "RenewLease", self._worker_id):
                    renewed = await self._store.renew_lease(entry.lease)
            except LeaseLostError as e:
                self._held.lost(shard_id, str(e))
                return RenewOutcome.LOST
            except LeaseStoreUnavailableError as e:
                silent_for = self._clock() - entry.confirmed_at
                if silent_for > self._failover_time:
                    self._held.lost(
                        shard_id,
                        f"lease {shard_id} not renewed for {silent_for:.1f}s (failover time "
                        f"{self._failover_time}s); another worker may own it now: {e}",
                    )
                    return RenewOutcome.LOST
                return RenewOutcome.TRANSIENT
            self._held.confirmed(renewed, sent_at)
            return RenewOutcome.RENEWED
