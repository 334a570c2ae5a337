"""The lease-store contract (KCL's ``LeaseRefresher``), shared by every implementation.

Every write is conditional and atomic. Each method that writes returns the lease exactly as
the store now holds it (new counter included), so a caller's local view never drifts from
the table. Failed conditions raise:

- :class:`~.errors.LeaseLostError` when the caller believed it owned the lease
  (renew, release, checkpoint): stop processing the shard at once, write nothing more;
- :class:`~.errors.LeaseConflictError` when a take or create lost a race with another
  worker: nothing is wrong, someone else got there first;
- :class:`~.errors.CheckpointOrderError` when a checkpoint would move backwards;
- :class:`~.errors.LeaseStoreUnavailableError` for transient failures (throttling,
  timeouts), which callers retry on a later cycle.

The same contract test suite (``streamkit_kinesis_tests/leases/test_store_contract.py``) runs
against every implementation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from streamkit_kinesis.types import ExtendedSequenceNumber

    from .model import Lease


@runtime_checkable
class LeaseStore(Protocol):
    """Persistent, conditionally-updated lease table."""

    async def create_table_if_not_exists(self) -> bool:
        """Create the lease table (on-demand billing) and wait until it is usable.

        Returns True if this call created it, False if it already existed.
        """
        ...

    async def list_leases(self) -> list[Lease]:
        """Every shard lease in the table, without the leader lease (an eventually
        consistent scan: an item may be a moment stale; every write stays conditional)."""
        ...

    async def get_lease(self, lease_key: str) -> Lease | None:
        """The lease for ``lease_key`` (strongly consistent read), or None if absent."""
        ...

    async def create_lease_if_not_exists(self, lease: Lease) -> Lease:
        """Insert ``lease`` as given, only if no lease with its key exists.

        Raises LeaseConflictError (with the existing lease as ``current``) otherwise.
        """
        ...

    async def renew_lease(self, lease: Lease) -> Lease:
        """Increment the counter, on condition that owner and counter still equal ``lease``'s.

        Raises LeaseLostError when the condition fails (taken, released, or deleted).
        """
        ...

    async def take_lease(self, lease: Lease, owner: str) -> Lease:
        """Make ``owner`` the owner, on condition that the counter still equals ``lease``'s.

        Counter + 1; ``ownerSwitchesSinceCheckpoint`` + 1 when another worker owned it. Raises
        LeaseConflictError when the counter moved (renewed or taken by someone else) or the
        lease is gone.
        """
        ...

    async def release_lease(self, lease: Lease) -> Lease:
        """Clear the owner (counter + 1), on condition of ``lease``'s owner and counter.

        Another worker sees the lease unowned and takes it on its next take cycle without
        waiting for expiry. Raises LeaseLostError when the condition fails.
        """
        ...

    async def update_checkpoint(self, lease: Lease, checkpoint: ExtendedSequenceNumber) -> Lease:
        """Store ``checkpoint`` (counter + 1, owner switches reset to 0).

        Conditional on ``lease``'s owner, counter and stored checkpoint. The checkpoint only
        moves forward (see :func:`~.model.check_checkpoint_advance`): a backward move raises
        CheckpointOrderError before anything is written. A stale owner or counter raises
        LeaseLostError. When it returns, the checkpoint is durable.
        """
        ...

    async def prepare_checkpoint(self, lease: Lease, pending: ExtendedSequenceNumber) -> Lease:
        """Store ``pending`` as the prepared checkpoint (KCL's ``prepareCheckpoint``):
        counter + 1; checkpoint and owner switches unchanged.

        Conditional like :meth:`update_checkpoint` (owner, counter, stored checkpoint): a
        stale owner or counter raises LeaseLostError and writes nothing. ``pending`` must be
        a sequence number at or after the checkpoint, else CheckpointOrderError before
        anything is written. The next :meth:`update_checkpoint` removes it; a worker that
        takes the lease sees it as ``Lease.pending_checkpoint``.
        """
        ...

    async def add_child_shard_ids(self, lease_key: str, child_shard_ids: Iterable[str]) -> Lease:
        """Add ``child_shard_ids`` to the lease's recorded children (set union).

        Does not change owner or counter, so it never disturbs the owner's renewals. Raises
        LeaseNotFoundError when the lease does not exist.
        """
        ...

    async def delete_lease(self, lease_key: str) -> None:
        """Delete the lease if it exists (unconditional, idempotent)."""
        ...

    def call_counts(self) -> Mapping[str, int]:
        """Store calls made so far, by operation name (read-only snapshot)."""
        ...
