"""The current end ("tip") of shards, read once, for ``available_now`` and
``process_all_available``.

Kinesis cannot tell the last sequence number of an open shard without reading it
(``MillisBehindLatest`` is a time difference: records put in the same millisecond report 0
while some are still unread). So each shard is read to its tip once, by a dedicated
:class:`~.reader.ShardReader` that is independent of the consumer: from just after the
furthest position known for the shard, page GetRecords (10,000 records a page) until a page
comes back empty and caught up (``MillisBehindLatest`` 0 or absent), or the closed shard
ended. The end is the last sequence number seen, or the known position when nothing is newer.

Guarantee: a read that starts after ``T0`` sees every record put before ``T0`` that lies
after its start position, so the end it returns is at or past every such record.

Cost: the tip read first looks at the newest records only (an AT_TIMESTAMP iterator
``RECENT_WINDOWS`` seconds back, widening while the window is empty); the records between
the known position and the tip are read a second time (here and by the consumer) only when
no window finds a record after the start. Only sequence numbers are kept here.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from .reader import ShardReader
from .types import (
    AT_TIMESTAMP,
    LATEST,
    SHARD_END,
    ExtendedSequenceNumber,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from .client import KinesisApi
    from .consumer import InitialPosition
    from .types import ShardInfo

END = SHARD_END.sequence_number
TIP_PAGE = 10_000
"""Records asked per GetRecords call of a tip read (the Kinesis maximum)."""
RECENT_WINDOWS = (2.0, 30.0, 600.0)
"""Seconds back from the call that a tip read looks first, widening while empty."""


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
    while True:
        batch = await reader.next_batch()
        if batch.shard_ended or (not batch.records and not batch.millis_behind_latest):
            return reader.last_sequence_number


async def recent_tip(
    client: KinesisApi,
    stream: str,
    shard: ShardInfo,
    start: ExtendedSequenceNumber | datetime,
    now: datetime,
) -> str | None:
    """The tip found from the newest records alone: the last record of the first non-empty
    window ``[now - w, tip]`` (``w`` in RECENT_WINDOWS), if it lies after ``start`` (so the
    consumer will deliver it); None otherwise (the caller reads from ``start``)."""
    for seconds in RECENT_WINDOWS:
        since = now - timedelta(seconds=seconds)
        if isinstance(start, datetime) and start >= since:
            return None  # reading from start is no longer than this window
        try:
            tip = await read_tip(client, stream, shard, since)
        except ClientError as e:  # e.g. "Timestamp cannot be in the future" (clock skew)
            if e.response.get("Error", {}).get("Code") != "InvalidArgumentException":
                raise
            return None
        if tip is None:
            continue
        after_start = (
            isinstance(start, datetime)
            or start.is_sentinel
            or int(tip) > int(start.sequence_number)
        )
        return tip if after_start else None
    return None


async def read_tips(
    client: KinesisApi,
    stream: str,
    shards: Mapping[str, ShardInfo],
    starts: Sequence[TipStart],
    now: datetime | None = None,
) -> dict[str, str]:
    """The end of every shard of ``starts`` that has something to wait for, read
    concurrently (``now``: the wall time of the call). A shard no longer listed (deleted,
    or trimmed away) has nothing."""
    todo = [s for s in starts if s.start is not None and s.shard_id in shards]
    now = now or datetime.now(UTC)

    async def one(s: TipStart) -> str | None:
        assert s.start is not None
        shard = shards[s.shard_id]
        tip = await recent_tip(client, stream, shard, s.start, now)
        return tip or await read_tip(client, stream, shard, s.start) or s.floor

    found = await asyncio.gather(*(one(s) for s in todo))
    ends = {s.shard_id: end for s, end in zip(todo, found, strict=True) if end is not None}
    for s in starts:  # a position the source holds is awaited even when unlisted
        if s.shard_id not in ends and s.floor is not None:
            ends[s.shard_id] = s.floor
    return dict(sorted(ends.items()))
