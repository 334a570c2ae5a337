"""Which shard readers the stream source runs, and how each one is doing.

:class:`TrackedFetchers` is the consumer's fetcher factory for the source: it builds
polling readers (which retry an outage for ever) and remembers the latest one per shard,
so the source can report "backing off" in progress records and the CLI while no batch
comes. With ``watches``, each reader tells them what it reads (:mod:`.tip_watch`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamkit_kinesis.retry import Health
from streamkit_kinesis.source.tip_watch import WatchedFetcher

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

    from streamkit_kinesis.retrieval.fetcher import FetcherFactory, RecordFetcher
    from streamkit_kinesis.source.tip_watch import TipWatches
    from streamkit_kinesis.types import ExtendedSequenceNumber, ShardInfo


class TrackedFetchers:
    """A :class:`~streamkit_kinesis.retrieval.fetcher.FetcherFactory` wrapping ``inner``
    that keeps the latest fetcher of each shard for :meth:`health` (``inner`` None: a
    placeholder before the source opens; calling it is an error); with ``watches``, each
    fetcher is a :class:`~.tip_watch.WatchedFetcher` feeding them."""

    def __init__(self, inner: FetcherFactory | None, watches: TipWatches | None = None) -> None:
        self._inner = inner
        self.watches = watches
        """Where the readers report the ends they reach (None: not tracked)."""
        self._latest: dict[str, RecordFetcher] = {}

    @property
    def latest(self) -> Mapping[str, RecordFetcher]:
        """The latest fetcher built for each shard."""
        return self._latest

    def __call__(self, shard: ShardInfo, start: ExtendedSequenceNumber | datetime) -> RecordFetcher:
        """The inner factory's fetcher of ``shard``, remembered as that shard's latest."""
        if self._inner is None:
            raise RuntimeError("TrackedFetchers without an inner factory cannot build fetchers")
        fetcher = self._inner(shard, start)
        if self.watches is not None:
            fetcher = WatchedFetcher(fetcher, shard.shard_id, self.watches)
        self._latest[shard.shard_id] = fetcher
        return fetcher

    def health(self, shard_id: str) -> Health:
        """The latest fetcher's health (``reading`` if none was built yet)."""
        fetcher = self._latest.get(shard_id)
        return fetcher.metrics().health if fetcher is not None else Health()

    def all_health(self) -> dict[str, Health]:
        """Health of the latest fetcher of every shard read so far."""
        return {shard_id: f.metrics().health for shard_id, f in self._latest.items()}
