"""Checkpoints one shard's progress, conditional on still owning its lease."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import LeaseLostError
from .metrics import CallTimings
from .model import Lease, check_checkpoint_advance, check_pending_checkpoint, to_position

if TYPE_CHECKING:
    from streamkit_kinesis.types import ExtendedSequenceNumber

    from .held import HeldLeases
    from .store import LeaseStore


class Checkpointer:
    """Checkpointer for one shard (what a record processor receives with each batch).

    It reads the lease from the shared :class:`~.held.HeldLeases` view, so it always uses
    the counter of the latest renewal, and writes under the same per-lease lock as the
    renewer. The shard task calls :meth:`mark_delivered` for each batch it hands out, so
    ``checkpoint()`` without an argument means "everything delivered so far".
    """

    def __init__(
        self,
        store: LeaseStore,
        held: HeldLeases,
        shard_id: str,
        timings: CallTimings | None = None,
    ) -> None:
        self._store = store
        self._held = held
        self._timings = timings or CallTimings()
        self.shard_id = shard_id
        """The shard this checkpointer writes for."""
        self._last_delivered: ExtendedSequenceNumber | None = None

    @property
    def last_delivered(self) -> ExtendedSequenceNumber | None:
        """Position of the last record handed to the processor, if any."""
        return self._last_delivered

    @property
    def last_checkpoint(self) -> ExtendedSequenceNumber | None:
        """The checkpoint stored in the held lease, or None if the lease is not held."""
        lease = self._held.get(self.shard_id)
        return None if lease is None else lease.checkpoint

    @property
    def pending_checkpoint(self) -> ExtendedSequenceNumber | None:
        """The prepared checkpoint stored in the held lease, if any (None if not held)."""
        lease = self._held.get(self.shard_id)
        return None if lease is None else lease.pending_checkpoint

    @property
    def lease_counter(self) -> int | None:
        """The counter of the held lease as last written (None if not held). Every write
        of the lease (take, renewal, checkpoint) increments it conditionally, so a later
        owner's take always writes a higher counter than this worker ever saw: a fencing
        token (:mod:`streamkit.fleet.fence`)."""
        lease = self._held.get(self.shard_id)
        return None if lease is None else lease.lease_counter

    def mark_delivered(self, position: ExtendedSequenceNumber | str) -> None:
        """Record that records up to ``position`` were handed to the processor."""
        self._last_delivered = to_position(position)

    async def checkpoint(self, position: ExtendedSequenceNumber | str | None = None) -> Lease:
        """Durably store ``position`` (default: the last delivered record) for this shard.

        Guarantees: when it returns, the checkpoint is in the lease table and a restart
        resumes right after ``position``. It is written only if this worker still owns the
        lease at the counter it last saw; otherwise nothing is written, the lease is dropped
        (LOST event) and LeaseLostError is raised: stop processing the shard. A position
        before the stored checkpoint raises CheckpointOrderError and writes nothing. With no
        position and nothing delivered yet, nothing is written and the held lease is returned.
        A transient store failure raises LeaseStoreUnavailableError; the lease stays held and
        the call may be retried (if the write did land, the next renewal reports the lease
        lost, never a wrong checkpoint).
        """
        target = self._last_delivered if position is None else to_position(position)
        async with self._held.lock(self.shard_id):
            entry = self._held.entry(self.shard_id)
            if entry is None:
                raise LeaseLostError(
                    f"cannot checkpoint shard {self.shard_id}: this worker no longer holds its "
                    "lease; stop processing the shard"
                )
            if target is None:
                return entry.lease
            check_checkpoint_advance(self.shard_id, entry.lease.checkpoint, target)
            sent_at = self._held.now()
            try:
                with self._timings.timed("ProcessTask", "UpdateLease", self.shard_id):
                    updated = await self._store.update_checkpoint(entry.lease, target)
            except LeaseLostError as e:
                self._held.lost(self.shard_id, str(e))
                raise
            self._held.confirmed(updated, sent_at)
            return updated

    async def prepare_checkpoint(self, position: ExtendedSequenceNumber | str) -> Lease:
        """Durably store ``position`` as this shard's pending checkpoint (KCL's
        ``prepareCheckpoint``), the first step of a two-phase checkpoint.

        Guarantees: when it returns, ``pendingCheckpoint`` is in the lease table, so a worker
        that takes the lease before the final :meth:`checkpoint` sees it and knows that
        records up to ``position`` may have been acted on. Same conditions as
        :meth:`checkpoint`: written only while this worker owns the lease at the counter it
        last saw (else LeaseLostError, the lease is dropped, nothing written); ``position``
        must be a sequence number at or after the stored checkpoint (else
        CheckpointOrderError, nothing written). The next :meth:`checkpoint` removes it.
        """
        target = to_position(position)
        async with self._held.lock(self.shard_id):
            entry = self._held.entry(self.shard_id)
            if entry is None:
                raise LeaseLostError(
                    f"cannot prepare a checkpoint for shard {self.shard_id}: this worker no "
                    "longer holds its lease; stop processing the shard"
                )
            check_pending_checkpoint(self.shard_id, entry.lease.checkpoint, target)
            sent_at = self._held.now()
            try:
                with self._timings.timed("ProcessTask", "UpdateLease", self.shard_id):
                    updated = await self._store.prepare_checkpoint(entry.lease, target)
            except LeaseLostError as e:
                self._held.lost(self.shard_id, str(e))
                raise
            self._held.confirmed(updated, sent_at)
            return updated
