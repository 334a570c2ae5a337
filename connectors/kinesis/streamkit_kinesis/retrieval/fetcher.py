"""The retrieval contract: what the consumer's shard task reads one shard through.

A :class:`RecordFetcher` delivers the records of ONE shard, from a start position, as
:class:`~streamkit_kinesis.types.RecordBatch` es. Polling (GetShardIterator + GetRecords,
:class:`~.polling.ShardReader`) is the first implementation; Enhanced Fan-Out
(SubscribeToShard) fits the same contract: it pushes events that carry records,
``MillisBehindLatest`` and, at the end of a shard, its child shards.

A :class:`FetcherFactory` builds one fetcher per shard; the consumer takes one
(``KinesisConsumer(..., fetcher_factory=...)``, default
:class:`~.polling.PollingFetchers`), so another way of reading plugs in there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from streamkit_kinesis.retry import Health

if TYPE_CHECKING:
    from datetime import datetime

    from streamkit_kinesis.retrieval.polling import CaughtUp
    from streamkit_kinesis.types import ExtendedSequenceNumber, RecordBatch, ShardInfo


@dataclass(frozen=True)
class ReaderMetrics:
    """A snapshot of one fetcher's counters (fields a fetcher has no use for stay 0)."""

    shard_id: str
    """The shard read."""
    records: int
    """Records returned."""
    bytes: int
    """Payload bytes returned."""
    get_records_calls: int
    """Successful reads: GetRecords calls (a push-based fetcher counts events received)."""
    throttles: int
    """Calls rejected with a throttling error (and retried)."""
    expired_iterator_recoveries: int
    """Expired iterators replaced (polling only)."""
    millis_behind_latest: int | None
    """Lag reported with the last batch."""
    health: Health = field(default_factory=Health)
    """"reading", or "backing off" through an outage (failures in a row, last error)."""


class RecordFetcher(Protocol):
    """The records of one shard, in shard order, each once, from its start position.

    Guarantees every implementation gives:

    - :meth:`next_batch` returns batches in shard order; a record is returned once (a
      fetcher that reconnects resumes after the last record it returned);
    - the last batch of a shard that ends has ``shard_ended`` set and names the
      ``child_shard_ids`` (known ones; the consumer's shard sync finds the rest); after
      it every call returns an empty ``shard_ended`` batch;
    - ``millis_behind_latest`` is the lag the service reported with the batch (None if
      it reported none); an empty batch with lag 0 means the fetcher is caught up;
    - cancelling :meth:`next_batch` loses nothing: records it would have returned are
      returned by a later call, so the caller may abandon a read at any time.
    """

    async def next_batch(self) -> RecordBatch:
        """The next batch (possibly empty: caught up, or only a lag update).

        May wait (an idle pause, a pushed event); raises a typed
        :class:`~streamkit_kinesis.errors.KinesisError` when the shard cannot be read on.
        """
        ...

    def metrics(self) -> ReaderMetrics:
        """A snapshot of the counters (also after :meth:`close`)."""
        ...

    async def close(self) -> None:
        """Release what the fetcher holds (a subscription, a connection). Idempotent; no
        :meth:`next_batch` follows."""
        ...


class FetcherFactory(Protocol):
    """Builds the fetcher of one shard (one per shard task)."""

    def __call__(self, shard: ShardInfo, start: ExtendedSequenceNumber | datetime) -> RecordFetcher:
        """A fetcher of ``shard`` from ``start``: a checkpoint (a sequence number resumes
        AFTER it; TRIM_HORIZON / LATEST sentinels; SHARD_END: already finished, the first
        batch is the ``shard_ended`` one) or a ``datetime`` (the first record that arrived
        at or after it)."""
        ...


class WrappedFetcher:
    """Base of a fetcher that wraps another (``_inner``): the polling reader's extras
    (``caught_up``, ``behind``, ``hurry``) passed through, ``metrics`` and ``close`` delegated."""

    _inner: RecordFetcher

    @property
    def caught_up(self) -> CaughtUp | None:
        """The inner reader's latest empty, caught-up read (None: none, or not polling)."""
        found: CaughtUp | None = getattr(self._inner, "caught_up", None)
        return found

    @property
    def behind(self) -> bool | None:
        """Whether the inner reader's last read was behind the tip (None: not polling)."""
        found: bool | None = getattr(self._inner, "behind", None)
        return found

    def hurry(self) -> None:
        """Let the inner reader's next read skip its idle wait (polling only)."""
        hurry = getattr(self._inner, "hurry", None)
        if callable(hurry):
            hurry()

    def metrics(self) -> ReaderMetrics:
        """The inner fetcher's counters."""
        return self._inner.metrics()

    async def close(self) -> None:
        """Close the inner fetcher."""
        await self._inner.close()
