"""Retrieval: how the records of one shard are read, behind one contract.

- :mod:`.fetcher` the :class:`RecordFetcher` contract (and :class:`FetcherFactory`,
  :class:`ReaderMetrics`) the consumer's shard task is typed against;
- :mod:`.polling` :class:`ShardReader`, the polling fetcher (GetShardIterator +
  GetRecords), and :class:`PollingFetchers`, the consumer's default factory;
- :mod:`.iterators` :class:`IteratorStart`, where a shard iterator starts.

- :mod:`.fanout` Enhanced Fan-Out: :class:`~.fanout.FanoutReader` (SubscribeToShard, a
  thread per subscription, :mod:`.subscription`) and :class:`~.fanout.FanoutFetchers`,
  through the stream consumer of :mod:`.registration`; chosen with
  ``ConsumerConfig(retrieval="fanout")`` (imported on use, not here).
"""

from streamkit_kinesis.retrieval.fetcher import FetcherFactory, ReaderMetrics, RecordFetcher
from streamkit_kinesis.retrieval.iterators import IteratorStart
from streamkit_kinesis.retrieval.polling import PollingFetchers, ShardReader

__all__ = [
    "FetcherFactory",
    "IteratorStart",
    "PollingFetchers",
    "ReaderMetrics",
    "RecordFetcher",
    "ShardReader",
]
