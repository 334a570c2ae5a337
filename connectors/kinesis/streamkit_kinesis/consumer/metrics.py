"""The consumer's metrics: one typed snapshot per call, no string-keyed dicts to guess at."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from streamkit_kinesis.leases import LeaseMetrics
    from streamkit_kinesis.retrieval.fetcher import ReaderMetrics


@dataclass(frozen=True)
class ShardMetrics:
    """What this worker read from one shard since the consumer started (all its leases)."""

    shard_id: str
    """The shard."""
    records: int = 0
    """Records delivered to the processor."""
    bytes: int = 0
    """Payload bytes delivered."""
    get_records_calls: int = 0
    """Successful GetRecords calls."""
    throttles: int = 0
    """Throttled Kinesis calls (retried with backoff)."""
    expired_iterator_recoveries: int = 0
    """Expired iterators re-acquired."""
    millis_behind_latest: int | None = None
    """``MillisBehindLatest`` of the last read (``None`` before the first or if unreported)."""
    checkpoints: int = 0
    """Checkpoints written (by the processor or by the consumer at SHARD_END)."""
    held: bool = False
    """True while this worker runs the shard."""

    def plus(self, reader: ReaderMetrics) -> ShardMetrics:
        """These totals with one reader's counters added (its lag replaces ours if known)."""
        behind = reader.millis_behind_latest
        return replace(
            self,
            records=self.records + reader.records,
            bytes=self.bytes + reader.bytes,
            get_records_calls=self.get_records_calls + reader.get_records_calls,
            throttles=self.throttles + reader.throttles,
            expired_iterator_recoveries=self.expired_iterator_recoveries
            + reader.expired_iterator_recoveries,
            millis_behind_latest=self.millis_behind_latest if behind is None else behind,
        )


@dataclass(frozen=True)
class ConsumerMetrics:
    """A snapshot of one consumer worker."""

    worker_id: str
    """The worker."""
    shards: tuple[ShardMetrics, ...]
    """Every shard this worker read or holds, by shard id."""
    leases: LeaseMetrics
    """Lease takes, steals, losses, releases, renewals, take cycles."""
    dynamodb_calls: int
    """Lease-table calls (DynamoDB requests with the DynamoDB store)."""
    dynamodb_calls_by_operation: Mapping[str, int] = field(default_factory=dict)
    """``dynamodb_calls`` by API operation (``UpdateItem``, ``Scan``, ...)."""
    shard_syncs: int = 0
    """Completed shard syncs."""

    @property
    def records(self) -> int:
        """Records delivered over all shards."""
        return sum(s.records for s in self.shards)

    @property
    def bytes(self) -> int:
        """Payload bytes delivered over all shards."""
        return sum(s.bytes for s in self.shards)

    @property
    def throttles(self) -> int:
        """Throttled Kinesis calls over all shards."""
        return sum(s.throttles for s in self.shards)

    @property
    def backlog_millis(self) -> int:
        """The worker's backlog, the signal to scale on: the largest ``MillisBehindLatest``
        over the shards it holds now (0 when it holds none or they are caught up; a held
        shard not read yet counts as 0)."""
        return max((s.millis_behind_latest or 0 for s in self.shards if s.held), default=0)

    @property
    def held_shard_ids(self) -> tuple[str, ...]:
        """Shards this worker runs right now."""
        return tuple(s.shard_id for s in self.shards if s.held)

    @cached_property
    def by_shard(self) -> Mapping[str, ShardMetrics]:
        """:attr:`shards` by shard id (built once per snapshot, O(shards))."""
        return {s.shard_id: s for s in self.shards}

    def shard(self, shard_id: str) -> ShardMetrics:
        """The metrics of one shard (zeros if it was never read here); O(1) after the
        first call on this snapshot (:attr:`by_shard`)."""
        found = self.by_shard.get(shard_id)
        return found if found is not None else ShardMetrics(shard_id)


class ShardTotals:
    """Running per-shard totals: finished readers are folded in, live ones added on read."""

    def __init__(self) -> None:
        self._done: dict[str, ShardMetrics] = {}

    def fold(self, reader: ReaderMetrics, checkpoints: int = 0) -> None:
        """Add the final counters of a reader that stopped."""
        base = self._done.get(reader.shard_id, ShardMetrics(reader.shard_id))
        total = base.plus(reader)
        self._done[reader.shard_id] = replace(total, checkpoints=total.checkpoints + checkpoints)

    def snapshot(
        self, live: Iterable[tuple[ReaderMetrics | None, str, int]], held: Iterable[str]
    ) -> tuple[ShardMetrics, ...]:
        """Totals plus live readers ``(metrics or None, shard_id, checkpoints)``."""
        out = dict(self._done)
        for reader, shard_id, checkpoints in live:
            base = out.get(shard_id, ShardMetrics(shard_id))
            if reader is not None:
                base = base.plus(reader)
            out[shard_id] = replace(base, checkpoints=base.checkpoints + checkpoints)
        held_ids = set(held)
        for shard_id in held_ids - set(out):
            out[shard_id] = ShardMetrics(shard_id)
        return tuple(replace(out[k], held=k in held_ids) for k in sorted(out))


def read_metrics(consumer: Any, attempts: int = 5) -> ConsumerMetrics:
    """``consumer.metrics()`` from another thread (a scrape, a reporter): the consumer's loop
    may change its task table meanwhile, so a snapshot that met a concurrent change is taken
    again (up to ``attempts`` times)."""
    for _ in range(attempts - 1):
        try:
            snapshot: ConsumerMetrics = consumer.metrics()
            return snapshot
        except RuntimeError:  # dictionary changed size during iteration
            continue
    last: ConsumerMetrics = consumer.metrics()
    return last
