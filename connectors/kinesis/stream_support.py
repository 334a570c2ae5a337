"""Pieces of :class:`~.stream_source.KinesisStreamSource` that hold no I/O policy of their own.

- positions: offsets are, per shard id, the sequence number of the last record included
  (a decimal string) or ``"SHARD_END"`` (every record of a closed shard is included);
- :class:`ShardBuffers`: records the consumer delivered and the engine has not taken yet,
  with the per-shard positions (accepted, handed to the engine, committed);
- :class:`EndProbes`: the "current end of every shard" for ``available_now`` and
  ``process_all_available``, resolved while the consumer reads (see its docstring);
- :func:`align_leases`: makes the lease table agree with the query's checkpoint before the
  consumer starts (the query's checkpoint is authoritative);
- :func:`sample_payloads`: a few records to infer a schema from.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from streamkit.connectors.kinesis.leases import (
    Lease,
    LeaseConflictError,
    LeaseTracker,
)
from streamkit.connectors.kinesis.types import SHARD_END, ExtendedSequenceNumber, Sentinel
from streamkit.errors import ConfigError, StreamkitError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from streamkit.connectors.kinesis.client import KinesisApi
    from streamkit.connectors.kinesis.consumer import ConsumerMetrics
    from streamkit.connectors.kinesis.leases import LeaseStore
    from streamkit.connectors.kinesis.types import KinesisRecord, ShardInfo

END = Sentinel.SHARD_END.value
"""The offset of a shard whose every record is included."""


class KinesisSourceError(StreamkitError):
    """The Kinesis stream source cannot continue (its consumer failed, or the lease table
    disagrees with the query's checkpoint in a way it cannot repair)."""


# -- positions ---------------------------------------------------------------------------


def check_position(shard_id: str, value: str) -> str:
    """``value`` if it is a valid offset (decimal sequence number or SHARD_END)."""
    if value != END and not value.isdigit():
        raise ConfigError(
            f"offset {value!r} of shard {shard_id} is neither a sequence number nor "
            f"{END}; the checkpoint does not come from a Kinesis stream source"
        )
    return value


def at_or_past(position: str | None, target: str | None) -> bool:
    """True when ``position`` includes everything up to ``target`` (None: nothing)."""
    if target is None:
        return True
    if position is None:
        return False
    if position == END:
        return True
    return target != END and int(position) >= int(target)


def later(a: str | None, b: str | None) -> str | None:
    """The further of two positions."""
    return a if at_or_past(a, b) else b


# -- buffered records --------------------------------------------------------------------


@dataclass
class ShardState:
    """What the source knows about one shard (mutable; owned by the event loop)."""

    shard_id: str
    queue: deque[KinesisRecord] = field(default_factory=deque)
    """Records delivered by the consumer, not yet handed to the engine (shard order)."""
    accepted: str | None = None
    """Last sequence number accepted from the consumer (or resumed from): later records
    at or before it are duplicates of a re-read and are dropped."""
    handed: str | None = None
    """Position handed to the engine (the offset reported for this shard)."""
    committed: str | None = None
    """Position the engine committed (:meth:`KinesisStreamSource.commit`)."""
    checkpointed: str | None = None
    """Last lease checkpoint written by the source."""
    ended: bool = False
    """The consumer reached SHARD_END: every record of the shard was accepted."""
    lag_ms: int | None = None
    """MillisBehindLatest of the last delivered batch."""

    @property
    def drained(self) -> bool:
        """True when every accepted record is committed (a SHARD_END checkpoint is safe)."""
        return at_or_past(self.committed, self.accepted)


@dataclass(frozen=True)
class Taken:
    """Records handed to the engine for one micro-batch."""

    records: dict[str, list[KinesisRecord]]
    """Per shard, the records taken, in shard order."""
    changed: bool
    """True when records were taken or a shard's position moved (e.g. to SHARD_END)."""


class ShardBuffers:
    """Per-shard queues between the consumer's shard tasks and the engine.

    At most ``capacity`` records wait (a delivery that finds the buffer full waits for
    the engine); each shard's records stay in shard order; a record at or before a
    shard's ``accepted`` position is dropped (after a lease is re-taken the consumer
    re-reads from the lease checkpoint, which lags behind what the engine has).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.shards: dict[str, ShardState] = {}
        self.count = 0
        self.data = asyncio.Event()
        """Set when records or a new SHARD_END wait to be taken."""
        self._space = asyncio.Event()
        self._space.set()
        self.closing = False

    def state(self, shard_id: str) -> ShardState:
        """The state of ``shard_id`` (created on first use)."""
        if shard_id not in self.shards:
            self.shards[shard_id] = ShardState(shard_id)
        return self.shards[shard_id]

    def resume(self, offsets: Mapping[str, str]) -> None:
        """Start every shard of ``offsets`` at its offset: accepted, handed, committed and
        checkpointed (:func:`align_leases` makes the lease table say so)."""
        for shard_id, value in offsets.items():
            position = check_position(shard_id, value)
            s = self.state(shard_id)
            s.accepted = s.handed = s.committed = s.checkpointed = position
            s.ended = position == END

    async def accept(self, shard_id: str, records: Iterable[KinesisRecord], lag: int | None) -> int:
        """Queue ``records`` once there is room; returns how many were new (not re-reads).

        Returns 0 without queueing when the source is closing. Cancellation-safe: nothing
        is queued unless the call returns.
        """
        while self.count >= self.capacity and not self.closing:
            self._space.clear()
            await self._space.wait()
        if self.closing:
            return 0
        s = self.state(shard_id)
        floor = -1 if s.accepted is None else (None if s.accepted == END else int(s.accepted))
        fresh = [r for r in records if floor is not None and int(r.sequence_number) > floor]
        if fresh:
            s.queue.extend(fresh)
            s.accepted = fresh[-1].sequence_number
            self.count += len(fresh)
            self.data.set()
        s.lag_ms = lag
        return len(fresh)

    def end(self, shard_id: str) -> None:
        """The consumer reached SHARD_END on ``shard_id``."""
        self.state(shard_id).ended = True
        self.data.set()

    def take(self, limit: int) -> Taken:
        """Up to ``limit`` records, shared fairly between shards (each in shard order)."""
        busy = [s for s in self.shards.values() if s.queue]
        quota = {s.shard_id: 0 for s in busy}
        left = limit
        while left > 0 and busy:
            share = max(1, left // len(busy))
            for s in busy:
                n = min(share, len(s.queue) - quota[s.shard_id], left)
                quota[s.shard_id] += n
                left -= n
            busy = [s for s in busy if len(s.queue) > quota[s.shard_id]]
        taken: dict[str, list[KinesisRecord]] = {}
        changed = False
        for shard_id, n in quota.items():
            s = self.shards[shard_id]
            if n:
                taken[shard_id] = [s.queue.popleft() for _ in range(n)]
                s.handed = taken[shard_id][-1].sequence_number
                changed = True
        for s in self.shards.values():
            if s.ended and not s.queue and s.handed != END:
                s.handed, changed = END, True
        self.count -= sum(len(v) for v in taken.values())
        if not self.count and not any(s.ended and s.handed != END for s in self.shards.values()):
            self.data.clear()
        self._space.set()
        return Taken(taken, changed)

    def offsets(self) -> dict[str, str]:
        """Position handed to the engine, per shard that has one."""
        return {k: s.handed for k, s in sorted(self.shards.items()) if s.handed is not None}

    def close(self) -> None:
        """Wake deliveries waiting for room; they return without queueing."""
        self.closing = True
        self._space.set()


# -- the current end of every shard -------------------------------------------------------


@dataclass
class _Probe:
    started_wall: float
    base_calls: dict[str, int]
    pending: set[str]
    resolved: dict[str, str | None] = field(default_factory=dict)
    last_seen: dict[str, tuple[int, int]] = field(default_factory=dict)
    unheld_since: dict[str, float] = field(default_factory=dict)


PENDING = "pending:"
"""Prefix of a target value that :meth:`EndProbes.end_of` resolves later."""


class EndProbes:
    """The "current end" of every shard, resolved by watching the consumer read.

    Kinesis cannot tell the last sequence number of an open shard without reading it, and
    ``MillisBehindLatest`` is a time difference (records put in the same millisecond
    report 0 while some are still unread). So a probe started at time T0 resolves shard
    ``s`` at the position the consumer has delivered when one of these is seen:

    1. quiet shard: a GetRecords call that started after T0 came back empty with
       ``MillisBehindLatest == 0`` (two metric observations: the call count moved past
       T0's by two, the record count did not move between them);
    2. busy shard: a delivered record arrived (``ApproximateArrivalTimestamp``) at least
       ``margin`` seconds after T0 by this machine's clock, so everything put before T0
       is delivered (the margin absorbs clock skew and whole-second timestamps);
    3. the shard reached SHARD_END (end = SHARD_END);
    4. the shard is not held by this worker for ``give_up_after`` seconds (another live
       worker reads it): it is left out (end = None).

    Each shard's records are read once, by the consumer; nothing is read twice to find
    the end. Thread-safe reads (:meth:`end_of` may be called from any thread).
    """

    def __init__(self, margin: float, give_up_after: float, keep: int = 16) -> None:
        self.margin = margin
        self.give_up_after = give_up_after
        self._keep = keep
        self._lock = threading.Lock()
        self._probes: dict[int, _Probe] = {}
        self._next = 0

    def start(self, base_calls: Mapping[str, int], wall: float) -> int:
        """A probe over the shards of ``base_calls`` (GetRecords calls made so far)."""
        with self._lock:
            pid, self._next = self._next, self._next + 1
            self._probes[pid] = _Probe(wall, dict(base_calls), set(base_calls))
            for old in sorted(self._probes)[: -self._keep]:
                del self._probes[old]
            return pid

    def end_of(self, pid: int, shard_id: str) -> tuple[bool, str | None]:
        """``(resolved, end)`` of one shard of probe ``pid`` (unknown probes: resolved)."""
        with self._lock:
            probe = self._probes.get(pid)
            if probe is None or shard_id not in probe.pending | set(probe.resolved):
                return True, None
            return shard_id in probe.resolved, probe.resolved.get(shard_id)

    def _settle(self, probe: _Probe, shard_id: str, end: str | None) -> None:
        with self._lock:
            probe.pending.discard(shard_id)
            probe.resolved[shard_id] = end

    def observe(
        self,
        metrics: ConsumerMetrics,
        states: Mapping[str, ShardState],
        held: frozenset[str],
        now: float,
    ) -> None:
        """Apply rules 1, 3 and 4 to every pending shard."""
        for probe in list(self._probes.values()):
            for shard_id in list(probe.pending):
                state = states.get(shard_id)
                if state is not None and state.ended:
                    self._settle(probe, shard_id, END)
                elif shard_id not in held:
                    since = probe.unheld_since.setdefault(shard_id, now)
                    if now - since > self.give_up_after:
                        self._settle(probe, shard_id, None)
                else:
                    probe.unheld_since.pop(shard_id, None)
                    self._observe_quiet(probe, shard_id, metrics, state)

    def _observe_quiet(
        self, probe: _Probe, shard_id: str, metrics: ConsumerMetrics, state: ShardState | None
    ) -> None:
        m = metrics.shard(shard_id)
        calls, records = m.get_records_calls, m.records
        if calls < probe.base_calls.get(shard_id, 0) + 1:
            return
        seen = probe.last_seen.get(shard_id)
        quiet = seen is not None and calls > seen[0] and records == seen[1]
        if quiet and m.millis_behind_latest == 0:
            self._settle(probe, shard_id, None if state is None else state.accepted)
            return
        if seen is None or calls != seen[0]:
            probe.last_seen[shard_id] = (calls, records)

    def on_delivery(self, shard_id: str, last: KinesisRecord, accepted: str | None) -> None:
        """Rule 2, for a batch just accepted whose last record is ``last``."""
        arrival = last.approximate_arrival
        if arrival is None:
            return
        at = arrival.timestamp()
        for probe in list(self._probes.values()):
            if shard_id in probe.pending and at >= probe.started_wall + self.margin:
                self._settle(probe, shard_id, accepted)

    @property
    def any_pending(self) -> bool:
        """True while some probe waits for a shard."""
        return any(p.pending for p in self._probes.values())


# -- the lease table follows the query's checkpoint ---------------------------------------


@dataclass(frozen=True)
class Alignment:
    """What :func:`align_leases` changed in the lease table."""

    forwarded: tuple[str, ...] = ()
    """Leases whose checkpoint was moved forward to the query's offset."""
    rewound: tuple[str, ...] = ()
    """Leases re-created at the query's (older) offset."""
    created: tuple[str, ...] = ()
    """Leases created at the query's offset."""
    reclaimed: tuple[str, ...] = ()
    """Leases released that an earlier process with this worker id still owned."""


def _action(current: ExtendedSequenceNumber, target: ExtendedSequenceNumber) -> str:
    if current in (target, SHARD_END):
        return "keep"  # a finished shard stays finished (see KinesisStreamSource.open)
    if target == SHARD_END or current.is_sentinel or current.as_int() < target.as_int():
        return "forward"
    return "rewind"


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
    A lease is only changed after this worker took it: at once when unowned or owned by
    ``worker_id`` (an earlier process of this job: worker ids are unique among live
    processes), else once it expired (its counter did not move for ``failover_time`` on
    this machine's clock). Leases still owned by ``worker_id`` are released, so the new
    consumer takes them without waiting for them to expire.
    """
    by_id = {s.shard_id: s for s in shards}
    leases = {lease.lease_key: lease for lease in await store.list_leases()}
    done: dict[str, list[str]] = {"forwarded": [], "rewound": [], "created": [], "reclaimed": []}
    for shard_id, value in sorted(offsets.items()):
        target = ExtendedSequenceNumber(check_position(shard_id, value))
        lease = leases.get(shard_id)
        info = by_id.get(shard_id)
        if lease is None:
            if info is None:
                continue  # the shard is gone (past retention): nothing left to read
            try:
                leases[shard_id] = await store.create_lease_if_not_exists(
                    Lease.for_shard(info, target)
                )
                done["created"].append(shard_id)
                continue
            except LeaseConflictError as e:
                lease = e.current or await store.get_lease(shard_id)
                assert lease is not None
        action = _action(lease.checkpoint, target)
        if action == "keep" or (action == "rewind" and info is None):
            continue  # finished, or gone from the listing (past retention): nothing to read
        lease = await _take(
            store, lease, worker_id, failover_time=failover_time, clock=clock, poll=poll
        )
        if action == "forward" or info is None:  # info is None only when forwarding
            lease = await store.update_checkpoint(lease, target)
            leases[shard_id] = await store.release_lease(lease)
            done["forwarded"].append(shard_id)
        else:
            await store.delete_lease(shard_id)
            fresh = replace(Lease.for_shard(info, target), child_shard_ids=lease.child_shard_ids)
            leases[shard_id] = await store.create_lease_if_not_exists(fresh)
            done["rewound"].append(shard_id)
    for lease in list(leases.values()):
        if lease.lease_owner == worker_id:
            try:
                await store.release_lease(lease)
                done["reclaimed"].append(lease.lease_key)
            except StreamkitError:
                continue  # moved meanwhile: the consumer's taker decides
    return Alignment(*(tuple(v) for v in done.values()))


async def _take(
    store: LeaseStore,
    lease: Lease,
    worker_id: str,
    *,
    failover_time: float,
    clock: Callable[[], float],
    poll: float,
) -> Lease:
    """Take ``lease`` for ``worker_id`` (waiting for another owner's lease to expire)."""
    tracker = LeaseTracker(clock)
    tracker.observe_one(lease)
    deadline = clock() + 3 * failover_time + 10 * poll
    while True:
        free = lease.lease_owner in (None, worker_id)
        if free or tracker.is_expired(lease, failover_time):
            try:
                return await store.take_lease(lease, worker_id)
            except LeaseConflictError:
                pass
        if clock() > deadline:
            raise KinesisSourceError(
                f"shard {lease.lease_key} is held by live worker {lease.lease_owner!r} in the "
                "lease table of this app_name, and the query's checkpoint disagrees with its "
                "lease. One streaming query per app_name: give this query its own app_name"
            )
        await asyncio.sleep(poll)
        current = await store.get_lease(lease.lease_key)
        if current is None:
            raise KinesisSourceError(f"lease {lease.lease_key} vanished while being aligned")
        lease = current
        tracker.observe_one(lease)


# -- schema inference --------------------------------------------------------------------


def sample_payloads(
    client: KinesisApi, stream: str, shards: Iterable[ShardInfo], limit: int = 200
) -> list[bytes]:
    """Up to ``limit`` payloads from the oldest records of the shards (blocking calls)."""
    out: list[bytes] = []
    for shard in shards:
        iterator: str | None = client.get_shard_iterator(
            StreamName=stream, ShardId=shard.shard_id, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        for _ in range(5):
            if iterator is None or len(out) >= limit:
                break
            page = client.get_records(ShardIterator=iterator, Limit=limit - len(out))
            out.extend(r["Data"] for r in page["Records"])
            if page["Records"] or not page.get("MillisBehindLatest"):
                break
            iterator = page.get("NextShardIterator")
        if len(out) >= limit:
            break
    return out
