"""The lease value type and the pure state transitions every lease store applies.

A lease is one row of the lease table: which worker owns a shard, a counter that every
ownership change and renewal increments, and how far the shard is checkpointed. Stores
apply these transitions under a condition (owner and/or counter); see
:mod:`.store` for which condition guards which transition.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from streamkit_kinesis.types import (
    SHARD_END,
    TRIM_HORIZON,
    ExtendedSequenceNumber,
    HashKeyRange,
    ShardInfo,
)

from .errors import CheckpointOrderError

if TYPE_CHECKING:
    from collections.abc import Iterable


LEADER_LEASE_KEY = "streamkit:leader"
"""Key of the leader lease that earlier streamkit versions wrote (the leader is now decided
without a write, see :mod:`.leader`); never a shard id (those have no colon). Stores'
``list_leases`` leave such a legacy item out, so shard logic never sees it."""


def _ids(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(values)))


@dataclass(frozen=True)
class Lease:
    """One shard's lease, as stored in the lease table (KCL attribute names in brackets).

    Id tuples are kept sorted and de-duplicated, so two leases read from different stores
    compare equal when they hold the same data.
    """

    lease_key: str
    """Shard id the lease covers [``leaseKey``]."""
    lease_owner: str | None = None
    """Worker id of the owner, or ``None`` when nobody holds it [``leaseOwner``]."""
    lease_counter: int = 0
    """Incremented by every renew, take, release and checkpoint [``leaseCounter``]."""
    checkpoint: ExtendedSequenceNumber = TRIM_HORIZON
    """Last acknowledged position, or a sentinel [``checkpoint``,
    ``checkpointSubSequenceNumber``]."""
    owner_switches_since_checkpoint: int = 0
    """How often the lease passed from one worker to another since the last checkpoint
    [``ownerSwitchesSinceCheckpoint``]."""
    parent_shard_ids: tuple[str, ...] = field(default=())
    """Parents of the shard (one after a split, two after a merge) [``parentShardIds``]."""
    child_shard_ids: tuple[str, ...] = field(default=())
    """Children recorded once the shard was split or merged [``childShardIds``]."""
    hash_key_range: HashKeyRange | None = None
    """Hash keys covered [``startingHashKey``, ``endingHashKey``], if known."""
    pending_checkpoint: ExtendedSequenceNumber | None = None
    """A prepared (two-phase) checkpoint, KCL's ``prepareCheckpoint``: the owner declared
    that it is about to act on records up to here, then checkpoint them
    [``pendingCheckpoint``, ``pendingCheckpointSubSequenceNumber``]. None when there is
    none; a checkpoint removes it."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "parent_shard_ids", _ids(self.parent_shard_ids))
        object.__setattr__(self, "child_shard_ids", _ids(self.child_shard_ids))

    @classmethod
    def for_shard(cls, shard: ShardInfo, checkpoint: ExtendedSequenceNumber) -> Lease:
        """A new, unowned lease for ``shard`` starting at ``checkpoint``."""
        return cls(
            lease_key=shard.shard_id,
            checkpoint=checkpoint,
            parent_shard_ids=shard.parent_shard_ids,
            hash_key_range=shard.hash_key_range,
        )

    @property
    def is_unowned(self) -> bool:
        """True when no worker holds the lease."""
        return self.lease_owner is None

    @property
    def is_finished(self) -> bool:
        """True once the shard was read to its end (checkpoint SHARD_END): no owner is needed."""
        return self.checkpoint == SHARD_END

    def with_owner(self, owner: str | None) -> Lease:
        """The same lease with another owner (no counter change)."""
        return replace(self, lease_owner=owner)

    def with_children(self, child_shard_ids: Iterable[str]) -> Lease:
        """The same lease with ``child_shard_ids`` added to the recorded children."""
        return replace(self, child_shard_ids=(*self.child_shard_ids, *child_shard_ids))

    def renewed(self) -> Lease:
        """The lease after a successful renewal: counter + 1."""
        return replace(self, lease_counter=self.lease_counter + 1)

    def taken_by(self, owner: str) -> Lease:
        """The lease after ``owner`` took it: counter + 1; owner switches + 1 only when it
        was owned by another worker (as KCL: taking an unowned lease is not a switch)."""
        switched = 1 if self.lease_owner is not None and owner != self.lease_owner else 0
        return replace(
            self,
            lease_owner=owner,
            lease_counter=self.lease_counter + 1,
            owner_switches_since_checkpoint=self.owner_switches_since_checkpoint + switched,
        )

    def released(self) -> Lease:
        """The lease after its owner released it: no owner, counter + 1."""
        return replace(self, lease_owner=None, lease_counter=self.lease_counter + 1)

    def checkpointed(self, checkpoint: ExtendedSequenceNumber) -> Lease:
        """The lease after a checkpoint: new position, owner switches reset, counter + 1.

        Raises :class:`CheckpointOrderError` when the move is not allowed
        (see :func:`check_checkpoint_advance`).
        """
        check_checkpoint_advance(self.lease_key, self.checkpoint, checkpoint)
        return replace(
            self,
            checkpoint=checkpoint,
            owner_switches_since_checkpoint=0,
            lease_counter=self.lease_counter + 1,
            pending_checkpoint=None,
        )

    def prepared(self, pending: ExtendedSequenceNumber) -> Lease:
        """The lease after a prepared checkpoint: ``pending`` recorded, counter + 1, the
        checkpoint and owner switches unchanged (as KCL's ``prepareCheckpoint``).

        Raises :class:`CheckpointOrderError` when ``pending`` is not a valid pending
        checkpoint (see :func:`check_pending_checkpoint`).
        """
        check_pending_checkpoint(self.lease_key, self.checkpoint, pending)
        return replace(self, pending_checkpoint=pending, lease_counter=self.lease_counter + 1)


def check_checkpoint_advance(
    lease_key: str, current: ExtendedSequenceNumber, new: ExtendedSequenceNumber
) -> None:
    """Raise :class:`CheckpointOrderError` unless moving ``current`` to ``new`` is forward.

    Rules: re-writing the same position is allowed; SHARD_END is final (only SHARD_END may
    follow it); a real sequence number may follow a start sentinel (TRIM_HORIZON, LATEST,
    AT_TIMESTAMP) or a lower-or-equal sequence number (compared numerically, then by
    sub-sequence number); SHARD_END may follow anything; nothing may go back to a start
    sentinel.
    """
    if new == current:
        return
    if current == SHARD_END:
        raise CheckpointOrderError(
            f"shard {lease_key} is checkpointed at SHARD_END, which is final; "
            f"refusing to move it to {new.sequence_number}"
        )
    if new == SHARD_END:
        return
    if new.is_sentinel:
        raise CheckpointOrderError(
            f"cannot checkpoint shard {lease_key} at the start position {new.sequence_number}: "
            f"it is already at {current.sequence_number}; checkpoint a sequence number instead"
        )
    if current.is_sentinel:
        return
    if (new.as_int(), new.sub_sequence_number) < (current.as_int(), current.sub_sequence_number):
        raise CheckpointOrderError(
            f"checkpoint for shard {lease_key} would move backwards from "
            f"{current.sequence_number}/{current.sub_sequence_number} to "
            f"{new.sequence_number}/{new.sub_sequence_number}; checkpoints only move forward"
        )


def check_pending_checkpoint(
    lease_key: str, current: ExtendedSequenceNumber, pending: ExtendedSequenceNumber
) -> None:
    """Raise :class:`CheckpointOrderError` unless ``pending`` may be prepared on a lease
    checkpointed at ``current``: a real sequence number (no sentinel, SHARD_END included)
    at or after ``current`` (same rule as :func:`check_checkpoint_advance`)."""
    if pending.is_sentinel:
        raise CheckpointOrderError(
            f"cannot prepare a checkpoint at {pending.sequence_number} for shard {lease_key}: "
            "a pending checkpoint is a record's sequence number; checkpoint sentinels directly"
        )
    check_checkpoint_advance(lease_key, current, pending)


def to_position(value: ExtendedSequenceNumber | str) -> ExtendedSequenceNumber:
    """Accept a plain sequence-number string (or sentinel name) as a position."""
    if isinstance(value, ExtendedSequenceNumber):
        return value
    return ExtendedSequenceNumber(value, 0)


def checkpoint_text(lease: Lease) -> str:
    """The checkpoint as the lease table holds it (``seq`` or ``seq.sub``, or a sentinel)."""
    cp = lease.checkpoint
    return cp.sequence_number + (f".{cp.sub_sequence_number}" if cp.sub_sequence_number else "")
