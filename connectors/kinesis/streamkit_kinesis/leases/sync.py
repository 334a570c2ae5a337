"""Shard sync: turn the stream's shard list into leases, and the parent-before-child rule.

:func:`plan_sync` is the pure decision (which leases to create, which children to record on
which parents); :func:`sync_shards` applies it to a store. Several workers may sync at the
same time: creates are conditional, so each lease is created once, and recording children
is a set union, so it is idempotent.

Initial positions of new leases:

- a shard whose parent already has a lease continues from TRIM_HORIZON, so nothing written
  to a child after a reshard is skipped (it is read only after its parents reach SHARD_END);
- otherwise the configured initial position applies: TRIM_HORIZON or AT_TIMESTAMP as
  given; for LATEST, a closed shard gets SHARD_END (it will never receive new records, and
  its children may start at once) and an open one LATEST.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from streamkit.errors import ConfigError
from streamkit_kinesis.types import (
    LATEST,
    SHARD_END,
    TRIM_HORIZON,
    ExtendedSequenceNumber,
    ShardInfo,
)

from .errors import LeaseConflictError
from .model import Lease

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from .store import LeaseStore

INITIAL_POSITIONS = ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP")


@dataclass(frozen=True)
class SyncPlan:
    """What a shard sync must write."""

    to_create: tuple[Lease, ...]
    """New leases (children already recorded on parents that are created in the same plan)."""
    children_to_record: tuple[tuple[str, tuple[str, ...]], ...]
    """(existing parent lease key, child shard ids it does not record yet)."""

    @property
    def is_empty(self) -> bool:
        """True when the table already matches the shard list."""
        return not self.to_create and not self.children_to_record


@dataclass(frozen=True)
class SyncResult:
    """What :func:`sync_shards` wrote."""

    created: tuple[str, ...]
    """Lease keys this call created (creates lost to another worker are not listed)."""
    children_recorded: tuple[str, ...]
    """Parent lease keys whose children were updated."""


def plan_sync(
    shards: Sequence[ShardInfo],
    existing: Sequence[Lease],
    initial_position: ExtendedSequenceNumber = TRIM_HORIZON,
) -> SyncPlan:
    """Which leases to create and which children to record (pure; see module docstring)."""
    if initial_position.sequence_number not in INITIAL_POSITIONS:
        raise ConfigError(
            f"initial position must be one of {', '.join(INITIAL_POSITIONS)}, "
            f"not {initial_position.sequence_number!r}"
        )
    by_key = {lease.lease_key: lease for lease in existing}
    children: dict[str, set[str]] = {}
    for shard in shards:
        for parent in shard.parent_shard_ids:
            children.setdefault(parent, set()).add(shard.shard_id)
    new = [
        Lease.for_shard(shard, _start(shard, by_key, initial_position)).with_children(
            children.get(shard.shard_id, ())
        )
        for shard in shards
        if shard.shard_id not in by_key
    ]
    record = tuple(
        (key, tuple(sorted(kids - set(by_key[key].child_shard_ids))))
        for key, kids in sorted(children.items())
        if key in by_key and kids - set(by_key[key].child_shard_ids)
    )
    return SyncPlan(tuple(sorted(new, key=lambda lease: lease.lease_key)), record)


def _start(
    shard: ShardInfo, existing: Mapping[str, Lease], initial: ExtendedSequenceNumber
) -> ExtendedSequenceNumber:
    if any(parent in existing for parent in shard.parent_shard_ids):
        return TRIM_HORIZON
    if initial == LATEST:
        return SHARD_END if shard.is_closed else LATEST
    return initial


async def sync_shards(
    store: LeaseStore,
    shards: Sequence[ShardInfo],
    initial_position: ExtendedSequenceNumber = TRIM_HORIZON,
) -> SyncResult:
    """Create missing leases for ``shards`` and record children on existing parents.

    Safe to run from several workers at once. Returns what this call wrote.
    """
    plan = plan_sync(shards, await store.list_leases(), initial_position)
    created: list[str] = []
    for lease in plan.to_create:
        try:
            await store.create_lease_if_not_exists(lease)
        except LeaseConflictError:
            continue  # another worker created it first
        created.append(lease.lease_key)
    for parent, kids in plan.children_to_record:
        await store.add_child_shard_ids(parent, kids)
    return SyncResult(tuple(created), tuple(parent for parent, _ in plan.children_to_record))


def parents_done(lease: Lease, leases_by_key: Mapping[str, Lease]) -> bool:
    """True when the shard of ``lease`` may be read: every parent that still has a lease is
    checkpointed at SHARD_END. Parents without a lease (e.g. trimmed beyond retention and
    cleaned up) count as done."""
    return all(
        leases_by_key[parent].is_finished
        for parent in lease.parent_shard_ids
        if parent in leases_by_key
    )
