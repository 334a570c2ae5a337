"""Pieces of :class:`~.stream_source.KinesisStreamSource` that hold no I/O policy of their own.

- positions: offsets are, per shard id, the sequence number of the last record included
  (a decimal string) or ``"SHARD_END"`` (every record of a closed shard is included);
- :class:`ShardBuffers`: records the consumer delivered and the engine has not taken yet,
  with the per-shard positions (accepted, handed to the engine, committed);
- :class:`EndProbes`: the "current end of every shard" for ``available_now`` and
  ``process_all_available``, resolved while the consumer reads (see its docstring);
- :func:`sample_payloads`: a few records to infer a schema from.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from streamkit.connectors.kinesis.consumer import ConsumerConfig, InitialPosition
from streamkit.connectors.kinesis.types import Sentinel
from streamkit.errors import ConfigError, StreamkitError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from streamkit.connectors.kinesis.client import KinesisApi
    from streamkit.connectors.kinesis.consumer import ConsumerMetrics
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
    """What the source knows about one shard (mutable; owned by the event loop).

    Positions: ``accepted`` is the last sequence number taken from the consumer (or resumed
    from; a re-read at or before it is dropped), ``handed`` the offset reported to the
    engine, ``committed`` what the engine committed, ``checkpointed`` the lease checkpoint.
    """

    shard_id: str
    queue: deque[KinesisRecord] = field(default_factory=deque)
    accepted: str | None = None
    handed: str | None = None
    committed: str | None = None
    checkpointed: str | None = None
    ended: bool = False
    """The consumer reached SHARD_END: every record of the shard was accepted."""
    lag_ms: int | None = None
    """MillisBehindLatest of the last delivered batch."""

    @property
    def drained(self) -> bool:
        """True when every accepted record is committed (a SHARD_END checkpoint is safe)."""
        return at_or_past(self.committed, self.accepted)


class Taken(NamedTuple):
    """Records handed to the engine for one micro-batch, per shard in shard order;
    ``changed`` also when only a shard's position moved (to SHARD_END)."""

    records: dict[str, list[KinesisRecord]]
    changed: bool


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


def initial_position_of(value: InitialPosition | str | datetime) -> InitialPosition:
    """``"TRIM_HORIZON"``, ``"LATEST"``, a datetime (AT_TIMESTAMP) or an InitialPosition."""
    if isinstance(value, InitialPosition):
        return value
    if isinstance(value, datetime):
        return InitialPosition.at_timestamp(value)
    if value not in ("TRIM_HORIZON", "LATEST"):
        raise ConfigError(
            f"initial_position must be 'TRIM_HORIZON', 'LATEST', a datetime or an "
            f"InitialPosition, got {value!r}"
        )
    return InitialPosition.trim_horizon() if value == "TRIM_HORIZON" else InitialPosition.latest()


async def first_of(*aws: Any) -> None:
    """Wait for the first of ``aws`` to finish; re-raise its error; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()


def consumer_config(  # noqa: PLR0917
    stream: str,
    app_name: str,
    worker_id: str,
    initial_position: InitialPosition | str | datetime,
    failover_time: float,
    overrides: Mapping[str, Any] | None,
) -> ConsumerConfig:
    """The consumer settings of a stream source: a take cycle every ``failover_time`` (KCL:
    twice that), 0.25 s idle between empty reads, 1 s shutdown grace, then ``overrides``."""
    options: dict[str, Any] = {
        "failover_time": failover_time,
        "take_interval": failover_time,
        "idle_time": 0.25,
        "shutdown_grace": 1.0,
        "parent_poll_interval": 2.0,
        **(overrides or {}),
    }
    return ConsumerConfig(
        app_name=app_name,
        stream=stream,
        worker_id=worker_id,
        initial_position=initial_position_of(initial_position),
        **options,
    )
