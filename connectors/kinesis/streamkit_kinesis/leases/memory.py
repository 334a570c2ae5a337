"""An in-process lease store with exactly the conditional semantics of the DynamoDB one.

Useful for unit tests and for running several coordinators in one process. Each method
yields to the event loop once before it acts (as real I/O would), then checks its condition
and applies its change without yielding again, so every write is atomic.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .errors import LeaseConflictError, LeaseLostError, LeaseNotFoundError, LeaseStoreError
from .metrics import CallCounter
from .model import LEADER_LEASE_KEY, Lease, check_checkpoint_advance

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from streamkit_kinesis.types import ExtendedSequenceNumber


def describe(lease: Lease | None) -> str:
    """A short human description of a lease's ownership state, for error messages."""
    if lease is None:
        return "it no longer exists"
    owner = lease.lease_owner or "nobody"
    return f"it is owned by {owner} at counter {lease.lease_counter}"


def lost_message(action: str, expected: Lease, current: Lease | None) -> str:
    """Message for a LeaseLostError: what was expected and what the store holds now."""
    return (
        f"cannot {action} lease {expected.lease_key}: expected owner "
        f"{expected.lease_owner or 'nobody'} at counter {expected.lease_counter}, but "
        f"{describe(current)}; stop processing this shard without checkpointing"
    )


def conflict_message(expected: Lease, current: Lease | None) -> str:
    """Message for a LeaseConflictError on take."""
    return (
        f"lease {expected.lease_key} changed since it was read (counter "
        f"{expected.lease_counter}); {describe(current)}; another worker got there first"
    )


class InMemoryLeaseStore:
    """A :class:`~.store.LeaseStore` held in a dict (one per process; share it between
    coordinators to simulate several workers)."""

    def __init__(self) -> None:
        self._leases: dict[str, Lease] = {}
        self._table_exists = False
        self.calls = CallCounter()
        """Calls by operation (same names as the DynamoDB store uses)."""

    async def _io(self, operation: str) -> None:
        self.calls.record(operation)
        await asyncio.sleep(0)
        if not self._table_exists and operation != "CreateTable":
            raise LeaseStoreError(
                "the in-memory lease table does not exist; call create_table_if_not_exists() first"
            )

    def call_counts(self) -> Mapping[str, int]:
        """Calls made so far, by operation."""
        return self.calls.snapshot()

    async def create_table_if_not_exists(self) -> bool:
        """Mark the table as existing; True the first time."""
        await self._io("CreateTable")
        created = not self._table_exists
        self._table_exists = True
        return created

    async def list_leases(self) -> list[Lease]:
        """All shard leases (not a legacy leader item), ordered by key."""
        await self._io("Scan")
        return [self._leases[k] for k in sorted(self._leases) if k != LEADER_LEASE_KEY]

    async def get_lease(self, lease_key: str) -> Lease | None:
        """The lease or None."""
        await self._io("GetItem")
        return self._leases.get(lease_key)

    async def create_lease_if_not_exists(self, lease: Lease) -> Lease:
        """Insert if absent, else LeaseConflictError."""
        await self._io("PutItem")
        current = self._leases.get(lease.lease_key)
        if current is not None:
            raise LeaseConflictError(
                f"lease {lease.lease_key} already exists ({describe(current)})",
                lease.lease_key,
                current,
            )
        self._leases[lease.lease_key] = lease
        return lease

    def _owned(self, action: str, lease: Lease) -> Lease:
        current = self._leases.get(lease.lease_key)
        if (
            current is None
            or current.lease_owner != lease.lease_owner
            or current.lease_counter != lease.lease_counter
        ):
            raise LeaseLostError(lost_message(action, lease, current))
        return current

    async def renew_lease(self, lease: Lease) -> Lease:
        """Counter + 1 on owner and counter; else LeaseLostError."""
        await self._io("UpdateItem")
        new = self._owned("renew", lease).renewed()
        self._leases[lease.lease_key] = new
        return new

    async def take_lease(self, lease: Lease, owner: str) -> Lease:
        """Take on counter; else LeaseConflictError."""
        await self._io("UpdateItem")
        current = self._leases.get(lease.lease_key)
        if current is None or current.lease_counter != lease.lease_counter:
            raise LeaseConflictError(conflict_message(lease, current), lease.lease_key, current)
        new = current.taken_by(owner)
        self._leases[lease.lease_key] = new
        return new

    async def release_lease(self, lease: Lease) -> Lease:
        """Clear owner on owner and counter; else LeaseLostError."""
        await self._io("UpdateItem")
        new = self._owned("release", lease).released()
        self._leases[lease.lease_key] = new
        return new

    async def update_checkpoint(self, lease: Lease, checkpoint: ExtendedSequenceNumber) -> Lease:
        """Checkpoint on owner, counter and stored checkpoint; only forward."""
        check_checkpoint_advance(lease.lease_key, lease.checkpoint, checkpoint)
        await self._io("UpdateItem")
        current = self._owned("checkpoint", lease)
        if current.checkpoint != lease.checkpoint:
            raise LeaseLostError(lost_message("checkpoint", lease, current))
        new = current.checkpointed(checkpoint)
        self._leases[lease.lease_key] = new
        return new

    async def prepare_checkpoint(self, lease: Lease, pending: ExtendedSequenceNumber) -> Lease:
        """Record a pending checkpoint on owner, counter and stored checkpoint."""
        lease.prepared(pending)  # validates before any I/O, as the DynamoDB store does
        await self._io("UpdateItem")
        current = self._owned("prepare a checkpoint on", lease)
        if current.checkpoint != lease.checkpoint:
            raise LeaseLostError(lost_message("prepare a checkpoint on", lease, current))
        new = current.prepared(pending)
        self._leases[lease.lease_key] = new
        return new

    async def add_child_shard_ids(self, lease_key: str, child_shard_ids: Iterable[str]) -> Lease:
        """Union the children in; LeaseNotFoundError if absent."""
        children = tuple(child_shard_ids)
        await self._io("UpdateItem")
        current = self._leases.get(lease_key)
        if current is None:
            raise LeaseNotFoundError(f"cannot record children of lease {lease_key}: no such lease")
        new = current.with_children(children)
        self._leases[lease_key] = new
        return new

    async def delete_lease(self, lease_key: str) -> None:
        """Remove the lease if present."""
        await self._io("DeleteItem")
        self._leases.pop(lease_key, None)
