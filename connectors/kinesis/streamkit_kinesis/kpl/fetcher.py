"""A :class:`~streamkit_kinesis.retrieval.fetcher.RecordFetcher` that de-aggregates KPL
records and resumes from a checkpoint inside an aggregated record.

Guarantees, beyond the fetcher contract (which holds for user records):

- every batch is de-aggregated (:func:`~.deaggregate.deaggregate`; columns from the
  polling and fan-out readers by :func:`~.deaggregate.deaggregate_columns`, staying
  columns), so a processor sees user
  records with their sub-sequence numbers; a batch always carries ALL the user records of an
  aggregated record (GetRecords returns whole Kinesis records), in order;
- a checkpoint ``(S, k)`` resumes right after user record ``k`` of record ``S``: the shard is
  read AT ``S`` (not after it) and user records at or before ``(S, k)`` are dropped. So a
  checkpoint written by :func:`~.deaggregate.position` (or by KCL, which uses the same rule)
  loses nothing and repeats nothing; a plain sequence number (sub-sequence 0) of a plain
  record resumes after it, as before. Reading ``S`` again costs one record. The filter
  stays on until a user record past ``(S, k)`` came, so a first batch of only earlier
  records (a server whose AT starts before ``S``) does not let ``S``'s user records at or
  before ``k`` through in a later batch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from streamkit_kinesis.kpl.deaggregate import (
    DeaggregationStats,
    deaggregate,
    deaggregate_columns,
)
from streamkit_kinesis.retrieval.fetcher import WrappedFetcher
from streamkit_kinesis.retrieval.iterators import IteratorStart
from streamkit_kinesis.retrieval.polling import PollingFetchers, ShardReader
from streamkit_kinesis.retrieval.record_columns import RecordColumns
from streamkit_kinesis.types import ExtendedSequenceNumber

if TYPE_CHECKING:
    from datetime import datetime

    from streamkit_kinesis.retrieval.fetcher import RecordFetcher
    from streamkit_kinesis.types import KinesisRecord, RecordBatch, ShardInfo


class DeaggregatingFetcher(WrappedFetcher):
    """De-aggregates the batches of ``inner``, dropping user records at or before ``floor``
    (a checkpoint whose record ``inner`` starts AT)."""

    def __init__(self, inner: RecordFetcher, floor: ExtendedSequenceNumber | None = None) -> None:
        self._inner = inner
        self._floor = None if floor is None or floor.is_sentinel else floor
        self.stats = DeaggregationStats()
        """Aggregated, user and malformed record counts so far."""

    async def next_batch(self) -> RecordBatch:
        """The next batch of user records (see the module docstring)."""
        batch = await self._inner.next_batch()
        if isinstance(batch.records, RecordColumns):
            columns = deaggregate_columns(batch.records, self.stats)
            if self._floor is not None and columns:
                columns = columns.part(_at_or_before(columns, self._floor))
                if columns:  # in order: later records are past it too
                    self._floor = None
            return replace(batch, records=columns)
        records = deaggregate(batch.records, self.stats)
        if self._floor is not None and records:
            records = self._past_floor(records, self._floor)
            if records:  # in order: later records are past it too
                self._floor = None
        return replace(batch, records=tuple(records))

    @staticmethod
    def _past_floor(
        records: list[KinesisRecord], floor: ExtendedSequenceNumber
    ) -> list[KinesisRecord]:
        """``records`` after ``floor`` (records come in order, so only a prefix goes)."""
        seq, sub = floor.as_int(), floor.sub_sequence_number
        for i, r in enumerate(records):
            if (int(r.sequence_number), r.sub_sequence_number) > (seq, sub):
                return records[i:]
        return []


def _at_or_before(columns: RecordColumns, floor: ExtendedSequenceNumber) -> int:
    """How many leading user records of ``columns`` are at or before ``floor`` (records
    come in order, so those form a prefix; one comparison per dropped record)."""
    seq, sub = floor.as_int(), floor.sub_sequence_number
    subs = columns.table.column("sub_sequence_number")
    n = 0
    while n < len(columns) and (int(columns.sequence_number(n)), subs[n].as_py()) <= (seq, sub):
        n += 1
    return n


@dataclass(frozen=True)
class KplFetchers:
    """A :class:`~streamkit_kinesis.retrieval.fetcher.FetcherFactory` reading like
    ``polling`` but de-aggregating, with checkpoints inside aggregated records honoured.

    Use: ``KinesisConsumer(config, kinesis=client, lease_store=store,
    fetcher_factory=KplFetchers(config.polling_fetchers(client, time.monotonic)))``.
    """

    polling: PollingFetchers
    """The polling settings every shard reader uses."""

    def __call__(
        self, shard: ShardInfo, start: ExtendedSequenceNumber | datetime
    ) -> DeaggregatingFetcher:
        """A de-aggregating reader of ``shard``: a sequence-number checkpoint is read AT its
        record and filtered; sentinels and timestamps start as with ``polling``."""
        if not isinstance(start, ExtendedSequenceNumber) or start.is_sentinel:
            return DeaggregatingFetcher(self.polling(shard, start))
        p = self.polling
        reader = ShardReader(
            p.client, p.stream, shard, IteratorStart.at_sequence(start.sequence_number),
            limit=p.limit, idle_time=p.idle_time, shard_refresh_interval=p.shard_refresh_interval,
            clock=p.clock,
        )  # fmt: skip
        return DeaggregatingFetcher(reader, start)
