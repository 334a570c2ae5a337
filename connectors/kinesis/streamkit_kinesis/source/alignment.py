"""The lease table follows the query's checkpoint: :func:`align_leases`.

The query's checkpoint is authoritative (exactly-once). Before the consumer of a
:class:`~.stream_source.KinesisStreamSource` starts, every shard named in the checkpoint's
offsets gets a lease whose checkpoint IS that offset, so the consumer (which resumes after
the lease checkpoint) resumes right after the offset. This is the adapter for a hook the
consumer lacks: a per-shard start position given by its caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING

from streamkit.errors import StreamkitError
from streamkit_kinesis.leases import Lease, LeaseConflictError, LeaseTracker
from streamkit_kinesis.source.errors import KinesisSourceError
from streamkit_kinesis.source.positions import check_position
from streamkit_kinesis.types import SHARD_END, ExtendedSequenceNumber

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping

    from streamkit_kinesis.leases import LeaseStore
    from streamkit_kinesis.types import ShardInfo


@dataclass(frozen=True)
class Alignment:
    """What :func:`align_leases` changed in the lease table (shard ids)."""

    forwarded: tuple[str, ...] = ()
    """Checkpoint moved forward to the query's offset."""
    rewound: tuple[str, ...] = ()
    """Lease re-created at the query's (older) offset."""
    created: tuple[str, ...] = ()
    """Lease created at the query's offset."""
    reclaimed: tuple[str, ...] = ()
    """Released: an earlier process with this worker id still owned it."""


async def align_leases(
    store: LeaseStore,
    shards: Iterable[ShardInfo],
    offsets: Mapping[str, str],
    worker_id: str,
    *,
    failover_time: float,
    clock: Callable[[], float] = time.monotonic,
    poll: float = 0.5,
) -> Alignment:
    """Make every lease of ``offsets`` start right after its offset, then release it.

    A lease behind the offset (the process died between the engine's commit and the lease
    checkpoint) is checkpointed forward; one ahead of it (the checkpoint is older than the
    lease table) is deleted and re-created at the offset; a missing one is created there.
    A lease at SHARD_END is final and kept. A lease is only changed after this worker took
    it: at once when unowned or owned by ``worker_id`` (an earlier process of this job:
    worker ids are unique among live processes), else once it expired (its counter did not
    move for ``failover_time`` on this machine's clock). Leases still owned by
    ``worker_id`` are released, so the new consumer takes them without waiting for expiry.
    """
    by_id = {s.shard_id: s for s in shards}
    leases = {lease.lease_key: lease for lease in await store.list_leases()}
    take = partial(_take, store, worker_id, failover_time, clock, poll)
    done: dict[str, list[str]] = {"forwarded": [], "rewound": [], "created": [], "reclaimed": []}
    untouched = set(leases) - set(offsets)
    for shard_id, value in sorted(offsets.items()):
        target = ExtendedSequenceNumber(check_position(shard_id, value))
        info = by_id.get(shard_id)
        action = await _align(store, shard_id, leases.get(shard_id), info, target, take)
        if action is None:
            untouched.add(shard_id)
        else:
            done[action].append(shard_id)
    for lease in leases.values():
        if lease.lease_owner == worker_id and lease.lease_key in untouched:
            with contextlib.suppress(StreamkitError):  # moved meanwhile: the taker decides
                await store.release_lease(lease)
                done["reclaimed"].append(lease.lease_key)
    return Alignment(*(tuple(v) for v in done.values()))


async def _align(  # noqa: PLR0917
    store: LeaseStore,
    shard_id: str,
    lease: Lease | None,
    info: ShardInfo | None,
    target: ExtendedSequenceNumber,
    take: Callable[[Lease], Awaitable[Lease]],
) -> str | None:
    """Align one lease; returns the :class:`Alignment` field it belongs to, if changed."""
    if lease is None:
        if info is None:
            return None  # the shard is gone (past retention): nothing left to read
        try:
            await store.create_lease_if_not_exists(Lease.for_shard(info, target))
            return "created"
        except LeaseConflictError as e:
            lease = e.current or await store.get_lease(shard_id)
            assert lease is not None
    current = lease.checkpoint
    if current in (target, SHARD_END):
        return None
    if target == SHARD_END or current.is_sentinel or current.as_int() < target.as_int():
        await store.release_lease(await store.update_checkpoint(await take(lease), target))
        return "forwarded"
    if info is None:
        return None  # ahead, but the shard is gone: nothing left to read
    lease = await take(lease)
    await store.delete_lease(shard_id)
    fresh = replace(Lease.for_shard(info, target), child_shard_ids=lease.child_shard_ids)
    await store.create_lease_if_not_exists(fresh)
    return "rewound"


async def _take(  # noqa: PLR0917
    store: LeaseStore,
    worker_id: str,
    failover_time: float,
    clock: Callable[[], float],
    poll: float,
    lease: Lease,
) -> Lease:
    """Take ``lease`` for ``worker_id`` (waiting for another owner's lease to expire)."""
    tracker = LeaseTracker(clock)
    tracker.observe_one(lease)
    deadline = clock() + 3 * failover_time + 10 * poll
    while True:
        if lease.lease_owner in (None, worker_id) or tracker.is_expired(lease, failover_time):
            with contextlib.suppress(LeaseConflictError):
                return await store.take_lease(lease, worker_id)
        if clock() > deadline:
            raise KinesisSourceError(
                f"shard {lease.lease_key} is held by live worker {lease.lease_owner!r} and the "
                "query's checkpoint disagrees with its lease. One streaming query per "
                "app_name: give this query its own app_name"
            )
        await asyncio.sleep(poll)
        current = await store.get_lease(lease.lease_key)
        if current is None:
            raise KinesisSourceError(f"lease {lease.lease_key} vanished while being aligned")
        lease = current
        tracker.observe_one(lease)
