"""The current end ("tip") of shards for ``available_now`` and ``process_all_available``:
which shards a target covers (:func:`tip_start`), the ends found by the consumer's own
readers, polling or Enhanced Fan-Out (:func:`watched_tips`, :mod:`.tip_watch`: the backlog
is read once), and a separate read of each shard to its tip (:func:`consumer_tips`: the
design before, kept as the benchmark's baseline).

Kinesis cannot tell the last sequence number of an open shard without reading it
(``MillisBehindLatest`` is a time difference: records put in the same millisecond report 0
while some are still unread). The separate read (the benchmark's baseline) reads each shard to
its tip once, by a dedicated polling
:class:`~streamkit_kinesis.retrieval.polling.ShardReader` that is independent of the
consumer and of how it fetches: from just after the furthest position known for the
shard, page GetRecords (10,000 records a page) until a page comes back empty and caught up
(``MillisBehindLatest`` 0 or absent), or the closed shard ended. The end is the last
sequence number seen, or the known position when nothing is newer.

Guarantee: a read that starts after ``T0`` sees every record put before ``T0`` that lies
after its start position, so the end it returns is at or past every such record.

Cost: the records between the known position and the tip are read twice (here and by the
consumer); only their sequence numbers are kept here. (An ``AT_TIMESTAMP`` window of the
newest records would avoid that, but kinesalite answers an ``AT_TIMESTAMP``
GetShardIterator by scanning the whole shard, and never answers one whose window is empty:
the client times out.)
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from streamkit_kinesis.client import call_until_done
from streamkit_kinesis.retrieval.polling import ShardReader
from streamkit_kinesis.retry import RetryState
from streamkit_kinesis.shards import list_shards_blocking
from streamkit_kinesis.source.cut_time import SKEW, server_cut
from streamkit_kinesis.source.tip_watch import now
from streamkit_kinesis.types import (
    AT_TIMESTAMP,
    LATEST,
    SHARD_END,
    TRIM_HORIZON,
    ExtendedSequenceNumber,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping, Sequence
    from datetime import datetime

    from streamkit_kinesis.client import KinesisApi
    from streamkit_kinesis.consumer import InitialPosition, KinesisConsumer
    from streamkit_kinesis.retrieval.fetcher import RecordFetcher
    from streamkit_kinesis.source.buffers import ShardBuffers
    from streamkit_kinesis.source.health import TrackedFetchers
    from streamkit_kinesis.types import ShardInfo

END = SHARD_END.sequence_number
TIP_PAGE = 10_000
"""Records asked per GetRecords call of a tip read (the Kinesis maximum)."""


@dataclass(frozen=True)
class TipStart:
    """Where the tip read of one shard starts, and its end if nothing newer is found."""

    shard_id: str
    start: ExtendedSequenceNumber | datetime | None
    """A checkpoint (a sequence number reads AFTER it), a sentinel (TRIM_HORIZON), a
    datetime (AT_TIMESTAMP), or None: nothing to read (the shard has nothing to wait for)."""
    floor: str | None = None
    """The end when the read finds nothing newer: the source's own position (the engine
    must reach it), or None (nothing to wait for)."""


def tip_start(
    shard_id: str,
    known: str | None,
    checkpoint: ExtendedSequenceNumber | None,
    initial: InitialPosition,
) -> TipStart:
    """Where the consumer reads ``shard_id`` from, as a tip-read start (pure).

    ``known`` is the source's furthest position (accepted / handed / committed); else the
    lease ``checkpoint``; else the consumer's ``initial`` position. A LATEST lease (left by
    a consumer configured LATEST) has no findable start: where its iterator begins is only
    known to that reader, so nothing is awaited on it until the source accepts a record.
    """
    if known is not None:
        if known == END:
            return TipStart(shard_id, None)
        return TipStart(shard_id, ExtendedSequenceNumber(known), known)
    position = checkpoint if checkpoint is not None else initial.checkpoint
    if position in (SHARD_END, LATEST):
        return TipStart(shard_id, None)
    if position == AT_TIMESTAMP:
        return TipStart(shard_id, initial.timestamp)
    return TipStart(shard_id, position)


async def read_tip(
    client: KinesisApi, stream: str, shard: ShardInfo, start: ExtendedSequenceNumber | datetime
) -> str | None:
    """The sequence number of the last record from ``start`` to the tip of ``shard``, or
    None when there is none. Throttling and expired iterators are handled by the reader
    (retried / re-acquired after the last record seen)."""
    reader = ShardReader(
        client, stream, shard, start, limit=TIP_PAGE, idle_time=0.0, shard_refresh_interval=None
    )
    return await last_to_tip(reader)


async def last_to_tip(fetcher: RecordFetcher) -> str | None:
    """The sequence number of the last record ``fetcher`` returns until a batch comes back
    empty and caught up, or the shard ends (None when there is none); closes it."""
    last: str | None = None
    try:
        while True:
            batch = await fetcher.next_batch()
            if batch.records:
                last = batch.records[-1].sequence_number
            if batch.shard_ended or (not batch.records and not batch.millis_behind_latest):
                return last
    finally:
        await fetcher.close()


async def read_tips(
    client: KinesisApi, stream: str, shards: Mapping[str, ShardInfo], starts: Sequence[TipStart]
) -> dict[str, str]:
    """The end of every shard of ``starts`` that has something to wait for, read
    concurrently. A shard no longer listed (deleted, or trimmed away) has nothing."""
    todo = [s for s in starts if s.start is not None and s.shard_id in shards]

    async def one(s: TipStart) -> str | None:
        assert s.start is not None
        return await read_tip(client, stream, shards[s.shard_id], s.start) or s.floor

    found = await asyncio.gather(*(one(s) for s in todo))
    ends = {s.shard_id: end for s, end in zip(todo, found, strict=True) if end is not None}
    for s in starts:  # a position the source holds is awaited even when unlisted
        if s.shard_id not in ends and s.floor is not None:
            ends[s.shard_id] = s.floor
    return dict(sorted(ends.items()))


async def consumer_tips(
    consumer: KinesisConsumer,
    url: str | None,
    initial: InitialPosition,
    known: Callable[[str], str | None],
    lineage: dict[str, tuple[str, ...]] | None = None,
) -> dict[str, str]:
    """:func:`read_tips` of the shards of :func:`tip_scope` (``lineage``, if given, gets
    the parents of every listed shard)."""
    starts, listed = await tip_scope(consumer, url, initial, known)
    _fill(lineage, listed)
    return await read_tips(consumer.client, consumer.config.stream, listed, starts)


async def watched_tips(
    consumer: KinesisConsumer,
    url: str | None,
    initial: InitialPosition,
    buffers: ShardBuffers,
    readers: TrackedFetchers,
    *,
    skew: float = SKEW,
    lineage: dict[str, tuple[str, ...]] | None = None,
) -> dict[str, str]:
    """A target whose ends the consumer's readers find (:mod:`.tip_watch`), for the
    shards of :func:`tip_scope` that have something to wait for; a listed shard gets a
    pending end, an unlisted one the source's position (if it has one). Records that
    arrived after the server's time now plus ``skew`` s end a shard
    (:func:`~.cut_time.server_cut`). ``lineage``, if given, gets the parents of every
    listed shard."""
    assert readers.watches is not None
    t0 = now()
    cut = await server_cut(consumer.client, consumer.config.stream, skew, url)
    starts, listed = await tip_scope(consumer, url, initial, buffers.known)
    _fill(lineage, listed)
    floors = {s.shard_id: s.floor for s in starts if s.start is not None and s.shard_id in listed}
    fixed = {
        s.shard_id: s.floor for s in starts if s.shard_id not in floors and s.floor is not None
    }
    # read after the awaits above: a shard may have ended (its last records accepted)
    # since its floor was taken, and its end must cover those records
    ended = {s: buffers.known(s) for s, state in buffers.shards.items() if state.ended}
    pending = readers.watches.open(t0, cut, floors, readers.latest, ended)
    return dict(sorted({**fixed, **pending}.items()))


async def tip_scope(
    consumer: KinesisConsumer,
    url: str | None,
    initial: InitialPosition,
    known: Callable[[str], str | None],
) -> tuple[list[TipStart], dict[str, ShardInfo]]:
    """The :class:`TipStart` of every shard ``consumer`` holds or may take (an unfinished
    lease in its last scan), each from ``known(shard)`` (the furthest position the caller
    holds), else the lease checkpoint, else ``initial``; plus every listed shard without a
    lease yet that descends from one of those (a reshard before the call that no shard sync
    has turned into leases yet: the consumer reads it, from TRIM_HORIZON, once its parents
    end); and the shards listed now. ListShards is retried through an outage (the caller
    stalls, never fails)."""
    leases = consumer.coordinator.table_snapshot()
    ids = sorted(
        set(consumer.held_shard_ids())
        | {key for key, lease in leases.items() if not lease.is_finished}
    )
    starts = [
        tip_start(s, known(s), leases[s].checkpoint if s in leases else None, initial) for s in ids
    ]
    stream = consumer.config.stream
    shards = await call_until_done(
        lambda: list_shards_blocking(consumer.client, stream), RetryState(),
        stream=stream, url=url,
    )  # fmt: skip
    listed = {info.shard_id: info for info in shards}
    for child in descendants(set(ids), listed, set(leases)):
        starts.append(tip_start(child, known(child), TRIM_HORIZON, initial))
    return starts, listed


def descendants(
    roots: set[str], listed: Mapping[str, ShardInfo], leased: Collection[str]
) -> list[str]:
    """The listed shards without a lease that descend from ``roots`` (pure)."""
    found: list[str] = []
    scope = set(roots)
    grew = True
    while grew:
        grew = False
        for shard_id, info in sorted(listed.items()):
            if shard_id in scope or shard_id in leased:
                continue
            if scope.intersection(info.parent_shard_ids):
                scope.add(shard_id)
                found.append(shard_id)
                grew = True
    return found


def _fill(lineage: dict[str, tuple[str, ...]] | None, listed: Mapping[str, ShardInfo]) -> None:
    if lineage is not None:
        lineage.update((k, info.parent_shard_ids) for k, info in listed.items())
