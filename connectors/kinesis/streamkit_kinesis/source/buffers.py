""":class:`ShardBuffers`: records the consumer delivered and the engine has not taken yet,
with the per-shard positions (accepted, handed to the engine, committed, checkpointed).

Records wait as Arrow column chunks (:class:`~streamkit_kinesis.retrieval.record_columns.
RecordColumns`, one per delivery): accepting, cutting, bounding and taking them costs a
few vectorised operations per chunk, never a Python object per record."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from streamkit_kinesis.retrieval.record_columns import RecordColumns
from streamkit_kinesis.source.positions import END, at_or_past, check_position, later

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

    from streamkit_kinesis.types import KinesisRecord


class ChunkQueue:
    """A shard's queued records: column chunks in shard order, none empty. ``len`` is the
    record count; iterating yields record objects (tests, debugging only)."""

    def __init__(self) -> None:
        self.chunks: deque[RecordColumns] = deque()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    def __iter__(self) -> Iterator[KinesisRecord]:
        for chunk in self.chunks:
            yield from chunk

    def push(self, chunk: RecordColumns) -> None:
        """Queue ``chunk`` (nothing for an empty one)."""
        if len(chunk):
            self.chunks.append(chunk)
            self._size += len(chunk)

    def pop(self, n: int) -> RecordColumns:
        """The first ``n`` records (``n`` <= ``len(self)``), raised so that the last one's
        KPL aggregate (its sequence number) is not split."""
        parts: list[RecordColumns] = []
        left = n
        while left > 0:
            parts.append(self._pop_front(left))
            left -= len(parts[-1])
        last = parts[-1].sequence_number(-1) if parts else None
        while last is not None and self.chunks:
            more = self.chunks[0].same_as_first(last)
            if not more:
                break
            parts.append(self._pop_front(more))
        return RecordColumns.concat(parts)

    def _pop_front(self, n: int) -> RecordColumns:
        head = self.chunks[0]
        if len(head) <= n:
            self.chunks.popleft()
        else:
            self.chunks[0] = head.part(n)
            head = head.part(0, n)
        self._size -= len(head)
        return head

    def count_at_or_before(self, sequence_number: str) -> int:
        """How many queued records are at or before ``sequence_number``."""
        total = 0
        for chunk in self.chunks:
            found = chunk.count_at_or_before(sequence_number)
            total += found
            if found < len(chunk):
                break
        return total


@dataclass
class ShardState:
    """What the source knows about one shard (mutable; owned by the event loop).

    Positions: ``accepted`` is the last sequence number taken from the consumer (or resumed
    from; a re-read at or before it is dropped), ``handed`` the offset reported to the
    engine, ``committed`` what the engine committed, ``checkpointed`` the lease checkpoint.
    """

    shard_id: str
    queue: ChunkQueue = field(default_factory=ChunkQueue)
    accepted: str | None = None
    handed: str | None = None
    committed: str | None = None
    checkpointed: str | None = None
    ended: bool = False
    """The consumer reached SHARD_END: every record of the shard was accepted."""
    lag_ms: int | None = None
    """MillisBehindLatest of the last delivered batch."""
    truncated: bool = False
    """Records past the query's final end were dropped (``stop_at``): the shard is never
    drained, and SHARD_END is never handed out or checkpointed."""

    @property
    def drained(self) -> bool:
        """True when every accepted record is committed and none was dropped (a SHARD_END
        checkpoint is safe)."""
        return not self.truncated and at_or_past(self.committed, self.accepted)


class Taken(NamedTuple):
    """Records handed to the engine for one micro-batch, per shard in shard order;
    ``changed`` also when only a shard's position moved (to SHARD_END)."""

    records: dict[str, RecordColumns]
    changed: bool


class ShardBuffers:
    """Per-shard queues between the consumer's shard tasks and the engine.

    At most ``capacity`` records wait (a delivery that finds the buffer full waits for
    the engine), and one shard may fill at most its share of it, ``capacity`` divided
    between the shards not at SHARD_END (a delivery to a shard holding its share waits):
    a fast shard cannot crowd the others out, so each micro-batch (shared fairly by
    :meth:`take`) holds every shard with data, none far ahead of the others. Each
    shard's records stay in shard order; a record at or before a
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

    def known(self, shard_id: str) -> str | None:
        """The furthest position of ``shard_id`` held here (accepted, handed out or
        committed; None: none)."""
        state = self.shards.get(shard_id)
        if state is None:
            return None
        return later(later(state.accepted, state.handed), state.committed)

    def resume(self, offsets: Mapping[str, str]) -> None:
        """Start every shard of ``offsets`` at its offset: accepted, handed, committed and
        checkpointed (:func:`align_leases` makes the lease table say so)."""
        for shard_id, value in offsets.items():
            position = check_position(shard_id, value)
            s = self.state(shard_id)
            s.accepted = s.handed = s.committed = s.checkpointed = position
            s.ended = position == END

    async def accept(self, shard_id: str, records: Iterable[KinesisRecord], lag: int | None) -> int:
        """Queue ``records`` (in shard order; columns from the readers, else objects, made
        columns) once there is room; returns how many were new (not re-reads).

        Returns 0 without queueing when the source is closing. Cancellation-safe: nothing
        is queued unless the call returns.
        """
        s = self.state(shard_id)
        while (self.count >= self.capacity or len(s.queue) >= self.shard_budget()) and (
            not self.closing
        ):
            self._space.clear()
            await self._space.wait()
        if self.closing:
            return 0
        columns = RecordColumns.from_records(records)
        if s.accepted == END:
            columns = columns.part(0, 0)
        elif s.accepted is not None:
            columns = columns.part(columns.count_at_or_before(s.accepted))
        if len(columns):
            s.queue.push(columns)
            s.accepted = columns.sequence_number(-1)
            self.count += len(columns)
            self.data.set()
        s.lag_ms = lag
        return len(columns)

    def shard_budget(self) -> int:
        """Records one shard may hold queued before its deliveries wait (its share of
        ``capacity``; a delivery may overshoot it by one GetRecords page)."""
        open_shards = sum(1 for s in self.shards.values() if not s.ended)
        return max(1, self.capacity // max(1, open_shards))

    def end(self, shard_id: str) -> None:
        """The consumer reached SHARD_END on ``shard_id``."""
        self.state(shard_id).ended = True
        self.data.set()
        self._space.set()  # the open shards' shares grew

    def take(self, limit: int, bound: Mapping[str, str] | None = None) -> Taken:
        """Up to ``limit`` records, shared fairly between shards (each in shard order).

        The user records of one KPL aggregate (one sequence number) are taken together, so a
        shard's share may exceed its quota by the rest of an aggregate: an offset (a
        sequence number) then always means "all of that Kinesis record".

        With ``bound`` (exact replay), nothing past ``bound[shard]`` is taken (records after
        it stay queued) and a shard absent from it gives nothing; SHARD_END is handed only
        where the bound says SHARD_END.
        """
        ready = {s.shard_id: _within(s, bound) for s in self.shards.values()}
        busy = [s for s in self.shards.values() if ready[s.shard_id]]
        quota = {s.shard_id: 0 for s in busy}
        left = limit
        while left > 0 and busy:
            share = max(1, left // len(busy))
            for s in busy:
                n = min(share, ready[s.shard_id] - quota[s.shard_id], left)
                quota[s.shard_id] += n
                left -= n
            busy = [s for s in busy if ready[s.shard_id] > quota[s.shard_id]]
        taken: dict[str, RecordColumns] = {}
        changed = False
        for shard_id, n in quota.items():
            s = self.shards[shard_id]
            if n:
                taken[shard_id] = s.queue.pop(n)
                s.handed = taken[shard_id].sequence_number(-1)
                changed = True
        for s in self.shards.values():
            may_end = (bound is None or bound.get(s.shard_id) == END) and not s.truncated
            if s.ended and not s.queue and s.handed != END and may_end:
                s.handed, changed = END, True
        self.count -= sum(len(v) for v in taken.values())
        pending_end = any(
            s.ended and s.handed != END and not s.truncated for s in self.shards.values()
        )
        if (not self.count and not pending_end) or (bound is not None and not changed):
            self.data.clear()  # under a bound: wait for deliveries, not for what is queued
        self._space.set()
        return Taken(taken, changed)

    def offsets(self) -> dict[str, str]:
        """Position handed to the engine, per shard that has one."""
        return {k: s.handed for k, s in sorted(self.shards.items()) if s.handed is not None}

    def close(self) -> None:
        """Wake deliveries waiting for room; they return without queueing."""
        self.closing = True
        self._space.set()


def _within(state: ShardState, bound: Mapping[str, str] | None) -> int:
    """How many of the shard's queued records may be taken under ``bound``."""
    if bound is None:
        return len(state.queue)
    limit = bound.get(state.shard_id)
    if limit is None:
        return 0
    if limit == END:
        return len(state.queue)
    return state.queue.count_at_or_before(limit)
