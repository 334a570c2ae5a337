"""Larger deliveries while a shard is read behind its tip: consecutive reads as one batch.

A GetRecords call returns at most 10,000 records, so a consumer working off a backlog
hands its processor a batch per call, and pays the processor's per-batch cost (a fleet
source task: pre-aggregation, the exchange put and two lease writes) once per 10,000
records. :class:`GatheringFetcher` wraps a shard's fetcher and, while the last read was
behind the tip, reads on and returns those reads as one
:class:`~streamkit_kinesis.types.RecordBatch` once they hold ``limit`` records or
``max_bytes`` of payload (so a batch exceeds either by at most one read). "Behind" is the
polling reader's own rule (``behind``: a lag reported, or a full read; kinesalite always
reports a lag of 0), else (a fetcher without it) ``millis_behind_latest > 0``.

Guarantees (those of :class:`~.fetcher.RecordFetcher`, kept): records in shard order, each
once; a batch is returned as soon as a read is not behind, comes back empty, ends the
shard, or brings the gathered records to ``limit`` or their payload to ``max_bytes``, so
gathering never waits for records
that are not there yet (nor through an idle wait) and a caught-up shard is delivered read
by read as before; cancelling :meth:`GatheringFetcher.next_batch` loses nothing (what was
gathered is kept and returned by the next call), nor does a failed read (what was gathered
before it is returned, the error raised by the next call).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamkit_kinesis.retrieval.fetcher import WrappedFetcher
from streamkit_kinesis.retrieval.record_columns import RecordColumns
from streamkit_kinesis.types import RecordBatch

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from streamkit_kinesis.retrieval.fetcher import FetcherFactory, RecordFetcher
    from streamkit_kinesis.types import ExtendedSequenceNumber, KinesisRecord, ShardInfo


MAX_BYTES = 32 << 20
"""Payload a gathered batch stops at (a GetRecords read returns at most 10 MB)."""


class GatheringFetcher(WrappedFetcher):
    """``inner``'s reads gathered into batches of ``limit`` records or ``max_bytes`` of
    payload (at most one read more) while behind."""

    def __init__(self, inner: RecordFetcher, limit: int, max_bytes: int = MAX_BYTES) -> None:
        if limit < 1 or max_bytes < 1:
            raise ValueError(f"limit and max_bytes must be at least 1, got {limit}, {max_bytes}")
        self._inner = inner
        self._limit = limit
        self._max_bytes = max_bytes
        self._gathered: list[RecordBatch] = []
        self._error: Exception | None = None
        """A read's error met with records gathered: raised by the next call, after them."""

    async def next_batch(self) -> RecordBatch:
        """The next batch: one read, or several while the shard is behind (see the module
        docstring). A read that fails after others were gathered returns those first; the
        error is raised by the next call, as it would be without gathering."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        while True:
            if self._gathered and self._complete(self._gathered[-1]):
                return self._take()
            try:
                batch = await self._inner.next_batch()  # cancelled here: the gathered stay
            except Exception as error:
                if not self._gathered:
                    raise
                self._error = error
                return self._take()
            self._gathered.append(batch)

    def _complete(self, last: RecordBatch) -> bool:
        behind: bool | None = getattr(self._inner, "behind", None)
        if behind is None:
            behind = bool(last.millis_behind_latest)
        size = sum(len(b.records) for b in self._gathered)
        full = size >= self._limit or sum(map(_payload, self._gathered)) >= self._max_bytes
        return not last.records or last.shard_ended or not behind or full

    def _take(self) -> RecordBatch:
        parts, self._gathered = self._gathered, []
        if len(parts) == 1:
            return parts[0]
        last = parts[-1]
        return RecordBatch(
            last.shard_id,
            _joined([p.records for p in parts]),
            last.millis_behind_latest,
            last.shard_ended,
            last.child_shard_ids,
            last.child_shards,
        )


def _payload(batch: RecordBatch) -> int:
    """Payload bytes of ``batch``'s records."""
    records = batch.records
    if isinstance(records, RecordColumns):
        return records.payload_bytes()
    return sum(len(r.data) for r in records)


def _joined(parts: Sequence[Sequence[KinesisRecord]]) -> Sequence[KinesisRecord]:
    """The records of ``parts`` in order: one :class:`RecordColumns` when every part is
    one (no record object built), else a tuple."""
    columns = [p for p in parts if isinstance(p, RecordColumns)]
    if len(columns) == len(parts):
        return RecordColumns.concat(columns)
    return tuple(r for p in parts for r in p)


class GatheringFetchers:
    """A :class:`~.fetcher.FetcherFactory` whose fetchers gather (see :class:`GatheringFetcher`)."""

    def __init__(self, inner: FetcherFactory, limit: int, max_bytes: int = MAX_BYTES) -> None:
        self._inner = inner
        self._limit = limit
        self._max_bytes = max_bytes

    def __call__(
        self, shard: ShardInfo, start: ExtendedSequenceNumber | datetime
    ) -> GatheringFetcher:
        return GatheringFetcher(self._inner(shard, start), self._limit, self._max_bytes)
