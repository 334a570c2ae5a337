"""Lease cleanup (KCL's ``LeaseCleanupManager``): the lease table does not grow with reshards.

Two rules, decided by :func:`plan_cleanup` over a snapshot of the table and a shard list:

- **finished parent**: a lease checkpointed at SHARD_END is deleted once every child it is
  known to have (recorded ``childShardIds``, or found in the shard list) has a lease that
  has *started*: checkpointed at a sequence number or SHARD_END, not at a start sentinel
  (TRIM_HORIZON, LATEST, AT_TIMESTAMP). As in KCL, a lease is deleted only after its own
  parents' leases are gone (top-down; one cleanup run may delete several generations).
  Safe on a stale snapshot: SHARD_END is final and a started checkpoint never returns to
  a sentinel, so a deletion it decides is still right.
- **garbage**: a lease whose shard is not in the stream's shard list (trimmed after
  retention, or a shard that never existed) is deleted once it was seen missing for
  ``grace`` seconds on this worker's clock (default 30 minutes, KCL's garbage interval).
  The grace period covers a shard list that lags a fresh reshard.

The leader lease (:data:`~.model.LEADER_LEASE_KEY`) is never touched. Deleting is
idempotent (several workers may clean up at once). A deleted parent counts
as finished for its children (:func:`~.sync.parents_done`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from streamkit_kinesis.types import SHARD_END

from .model import LEADER_LEASE_KEY

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Mapping

    from streamkit_kinesis.types import ShardInfo

    from .model import Lease
    from .store import LeaseStore

log = logging.getLogger(__name__)

DEFAULT_GARBAGE_GRACE = 1800.0
"""Seconds a lease's shard must be missing from the shard list before the lease is deleted."""


def has_started(lease: Lease) -> bool:
    """True when the shard's reading has begun: a real sequence number, or SHARD_END."""
    return lease.checkpoint == SHARD_END or not lease.checkpoint.is_sentinel


@dataclass(frozen=True)
class CleanupPlan:
    """Leases to delete, by rule."""

    finished: tuple[str, ...]
    """Finished parents whose children have all started."""
    garbage: tuple[str, ...]
    """Leases whose shard has been missing from the shard list for the grace period."""

    @property
    def to_delete(self) -> tuple[str, ...]:
        """Every key to delete, parents first."""
        return self.finished + self.garbage


def finished_parents(
    leases: Iterable[Lease], children_listed: Mapping[str, Collection[str]]
) -> tuple[str, ...]:
    """Finished leases that may go (first rule of the module docstring), top-down."""
    by_key = {lease.lease_key: lease for lease in leases}
    gone: list[str] = []
    changed = True
    while changed:
        changed = False
        for key in sorted(by_key):
            lease = by_key[key]
            if not lease.is_finished or any(p in by_key for p in lease.parent_shard_ids):
                continue
            kids = set(lease.child_shard_ids) | set(children_listed.get(key, ()))
            if kids and all(k in by_key and has_started(by_key[k]) for k in kids):
                gone.append(key)
                del by_key[key]
                changed = True
    return tuple(gone)


class LeaseCleaner:
    """Decides and applies cleanups for one worker; remembers when shards went missing.

    ``clock`` is monotonic (inject a fake in tests). Call :meth:`run` periodically with a
    fresh-enough table snapshot and the latest complete shard list.
    """

    def __init__(
        self,
        store: LeaseStore,
        *,
        grace: float = DEFAULT_GARBAGE_GRACE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if grace < 0:
            raise ValueError(f"grace must be >= 0, got {grace}")
        self.store = store
        self.grace = grace
        self.deleted = 0
        """Leases deleted by this cleaner."""
        self._clock = clock
        self._missing_since: dict[str, float] = {}

    def plan(self, leases: Iterable[Lease], shards: Iterable[ShardInfo]) -> CleanupPlan:
        """What to delete now (pure but for the missing-since clock readings)."""
        table = [lease for lease in leases if lease.lease_key != LEADER_LEASE_KEY]
        listed = {shard.shard_id: shard for shard in shards}
        children: dict[str, set[str]] = {}
        for shard in listed.values():
            for parent in shard.parent_shard_ids:
                children.setdefault(parent, set()).add(shard.shard_id)
        finished = finished_parents(table, children)
        now = self._clock()
        missing = {lease.lease_key for lease in table} - set(listed) - set(finished)
        self._missing_since = {k: self._missing_since.get(k, now) for k in missing}
        garbage = tuple(
            sorted(k for k, since in self._missing_since.items() if now - since >= self.grace)
        )
        return CleanupPlan(finished, garbage)

    async def run(self, leases: Iterable[Lease], shards: Iterable[ShardInfo]) -> CleanupPlan:
        """Plan, then delete (parents first). Returns what was deleted."""
        plan = self.plan(leases, shards)
        for key in plan.finished:
            log.info("deleting lease %s: finished, and every child has started", key)
            await self.store.delete_lease(key)
        for key in plan.garbage:
            log.warning("deleting lease %s: its shard is no longer in the stream", key)
            await self.store.delete_lease(key)
            self._missing_since.pop(key, None)
        self.deleted += len(plan.to_delete)
        return plan
