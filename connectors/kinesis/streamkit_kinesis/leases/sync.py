"""Shard sync: which shards get a lease, when, and where each starts; the parent rule.

As in the KCL (2.x/3.x), a child lease is created when its parent reaches SHARD_END
(:func:`create_child_leases`, from the ``ChildShards`` of the last read or the shard list),
not when the periodic sync first sees the child. The periodic sync (:func:`plan_sync`,
applied by :func:`sync_shards`) creates only:

- the first lease of each lineage nobody covers yet (a *root*: no ancestor has a lease):
  TRIM_HORIZON or AT_TIMESTAMP as configured, whether the shard is open or closed; for
  LATEST only open shards (a closed shard will never receive a record);
- a descendant of a leased shard whose every parent is finished (SHARD_END), which repairs
  a worker that died between SHARD_END and creating the children.

A shard older than a leased shard (an ancestor of one) is never leased again: it was read
and its lease cleaned up (:mod:`.cleanup`), or it is not to be read (trimmed, or closed
before a LATEST start).

Guarantees: any descendant of a leased shard starts at TRIM_HORIZON (AT_TIMESTAMP when that
is the configured position: the same records, since every record of a child arrived after
its parent closed), also several reshards deep and with LATEST, so nothing written after a
reshard is skipped; a child is never created while a listed parent has no lease yet (it
would start before that parent is read). Several workers may sync at the same time:
creates are conditional (each lease is created once, with the same content whoever wins)
and recording children is a set union.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from streamkit.errors import ConfigError
from streamkit_kinesis.types import (
    AT_TIMESTAMP,
    LATEST,
    TRIM_HORIZON,
    ExtendedSequenceNumber,
    ShardInfo,
)

from .errors import LeaseConflictError
from .model import Lease

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence

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


def descendant_start(initial_position: ExtendedSequenceNumber) -> ExtendedSequenceNumber:
    """Where a descendant of a leased shard starts: AT_TIMESTAMP if configured, else
    TRIM_HORIZON (never LATEST: records put after the reshard must not be skipped)."""
    return AT_TIMESTAMP if initial_position == AT_TIMESTAMP else TRIM_HORIZON


def _check_initial(initial_position: ExtendedSequenceNumber) -> None:
    if initial_position.sequence_number not in INITIAL_POSITIONS:
        raise ConfigError(
            f"initial position must be one of {', '.join(INITIAL_POSITIONS)}, "
            f"not {initial_position.sequence_number!r}"
        )


def plan_sync(
    shards: Sequence[ShardInfo],
    existing: Sequence[Lease],
    initial_position: ExtendedSequenceNumber = TRIM_HORIZON,
) -> SyncPlan:
    """Which leases to create and which children to record (pure; see module docstring)."""
    _check_initial(initial_position)
    planner = _Planner(shards, existing, initial_position)
    for shard in shards:
        planner.covered(shard.shard_id)
    by_key = planner.by_key
    children = planner.children
    record = tuple(
        (key, tuple(sorted(kids - set(by_key[key].child_shard_ids))))
        for key, kids in sorted(children.items())
        if key in by_key and kids - set(by_key[key].child_shard_ids)
    )
    new = [lease.with_children(children.get(key, ())) for key, lease in planner.new.items()]
    return SyncPlan(tuple(sorted(new, key=lambda lease: lease.lease_key)), record)


class _Planner:
    """One walk over the shard graph, parents before children (memoised)."""

    def __init__(
        self,
        shards: Sequence[ShardInfo],
        existing: Sequence[Lease],
        initial: ExtendedSequenceNumber,
    ) -> None:
        self.by_key = {lease.lease_key: lease for lease in existing}
        self.listed = {shard.shard_id: shard for shard in shards}
        self.children: dict[str, set[str]] = {}
        for shard in shards:
            for parent in shard.parent_shard_ids:
                self.children.setdefault(parent, set()).add(shard.shard_id)
        self.initial = initial
        self.new: dict[str, Lease] = {}
        self._covered: dict[str, bool] = {}
        self.behind = self._ancestors_of_leases()
        """Shards older than a leased one: read already (and perhaps cleaned up), or never
        to be read (trimmed, LATEST); never leased again."""

    def _ancestors_of_leases(self) -> set[str]:
        seen: set[str] = set()
        stack = [p for lease in self.by_key.values() for p in lease.parent_shard_ids]
        while stack:
            shard_id = stack.pop()
            if shard_id in seen:
                continue
            seen.add(shard_id)
            shard = self.listed.get(shard_id)
            lease = self.by_key.get(shard_id)
            stack.extend(shard.parent_shard_ids if shard else ())
            stack.extend(lease.parent_shard_ids if lease else ())
        return seen - set(self.by_key)

    def covered(self, shard_id: str) -> bool:
        """True when the shard has (or now gets) a lease, or descends from one that has."""
        known = self._covered.get(shard_id)
        if known is not None:
            return known
        self._covered[shard_id] = result = self._decide(shard_id)
        return result

    def _decide(self, shard_id: str) -> bool:
        if shard_id in self.by_key or shard_id in self.behind:
            return True
        shard = self.listed.get(shard_id)
        if shard is None:
            return False  # neither listed nor leased: trimmed, or never ours
        parents = shard.parent_shard_ids
        if any(self.covered(parent) for parent in parents):
            if all(self._finished(parent) for parent in parents):
                self.new[shard_id] = Lease.for_shard(shard, descendant_start(self.initial))
            return True  # otherwise created when its parents reach SHARD_END
        if self.initial == LATEST and shard.is_closed:
            return False  # nothing will ever be put there
        self.new[shard_id] = Lease.for_shard(shard, self.initial)
        return True

    def _finished(self, parent: str) -> bool:
        lease = self.by_key.get(parent)
        if lease is not None:
            return lease.is_finished
        if parent in self.behind:
            return True
        return parent not in self.new and not self.covered(parent)


async def sync_shards(
    store: LeaseStore,
    shards: Sequence[ShardInfo],
    initial_position: ExtendedSequenceNumber = TRIM_HORIZON,
) -> SyncResult:
    """Create missing leases for ``shards`` and record children on existing parents.

    Safe to run from several workers at once. Returns what this call wrote.
    """
    plan = plan_sync(shards, await store.list_leases(), initial_position)
    created = await _create_all(store, plan.to_create)
    for parent, kids in plan.children_to_record:
        await store.add_child_shard_ids(parent, kids)
    return SyncResult(created, tuple(parent for parent, _ in plan.children_to_record))


async def _create_all(store: LeaseStore, leases: Sequence[Lease]) -> tuple[str, ...]:
    created: list[str] = []
    for lease in leases:
        try:
            await store.create_lease_if_not_exists(lease)
        except LeaseConflictError:
            continue  # another worker created it first
        created.append(lease.lease_key)
    return tuple(created)


def plan_child_leases(
    parent_id: str,
    children: Sequence[ShardInfo],
    other_parents: Mapping[str, Lease | None],
    listed: Collection[str],
    initial_position: ExtendedSequenceNumber = TRIM_HORIZON,
) -> tuple[tuple[Lease, ...], tuple[str, ...]]:
    """The leases to create when ``parent_id`` reaches SHARD_END, and the children deferred.

    ``other_parents`` maps each other parent of a merge child to its lease (None: no
    lease). A merge child is deferred while its other parent is listed without a lease
    (it would start before that parent is read; the periodic sync creates it once every
    parent is finished), as KCL does. Every created child starts at
    :func:`descendant_start`.
    """
    _check_initial(initial_position)
    create: list[Lease] = []
    deferred: list[str] = []
    for child in children:
        others = [p for p in child.parent_shard_ids if p != parent_id]
        if any(other_parents.get(p) is None and p in listed for p in others):
            deferred.append(child.shard_id)
            continue
        create.append(Lease.for_shard(child, descendant_start(initial_position)))
    return tuple(create), tuple(deferred)


async def create_child_leases(
    store: LeaseStore,
    parent_id: str,
    children: Sequence[ShardInfo],
    listed: Collection[str],
    initial_position: ExtendedSequenceNumber = TRIM_HORIZON,
) -> tuple[str, ...]:
    """At SHARD_END of ``parent_id``: create its children's leases (if absent) and record
    them on the parent's lease. Returns the keys this call created (see
    :func:`plan_child_leases` for the deferred merge case). Idempotent."""
    others = {p for child in children for p in child.parent_shard_ids if p != parent_id}
    other_leases = {p: await store.get_lease(p) for p in sorted(others)}
    to_create, _ = plan_child_leases(parent_id, children, other_leases, listed, initial_position)
    created = await _create_all(store, to_create)
    if children:
        await store.add_child_shard_ids(parent_id, [child.shard_id for child in children])
    return created


def parents_done(lease: Lease, leases_by_key: Mapping[str, Lease]) -> bool:
    """True when the shard of ``lease`` may be read: every parent that still has a lease is
    checkpointed at SHARD_END. Parents without a lease (trimmed beyond retention, or
    cleaned up once all their children started) count as done."""
    return all(
        leases_by_key[parent].is_finished
        for parent in lease.parent_shard_ids
        if parent in leases_by_key
    )


def is_blocked(lease: Lease, leases_by_key: Mapping[str, Lease]) -> bool:
    """True when ``lease`` waits for a parent that still has an unfinished lease; such a
    lease needs no worker yet and must not occupy a slot (see :mod:`.taker`)."""
    return not parents_done(lease, leases_by_key)
