"""``declared_shards`` (the open and ended shards of a micro-batch): the right sets, at a
cost linear in the shards, not in held x shards (server-free: the consumer's metrics
snapshot and the source's buffers are plain values). Expected sets are written out by
hand from the states set up."""

from __future__ import annotations

from collections.abc import Iterator

from streamkit_kinesis.consumer.metrics import ConsumerMetrics, ShardMetrics
from streamkit_kinesis.leases.metrics import LeaseMetrics
from streamkit_kinesis.retrieval.record_columns import RecordColumns
from streamkit_kinesis.source.batch import declared_shards
from streamkit_kinesis.source.buffers import ShardBuffers
from streamkit_kinesis.source.positions import END
from streamkit_kinesis.types import KinesisRecord


class CountedShards(tuple[ShardMetrics, ...]):
    """A metrics snapshot's shards, counting how many entries are visited."""

    visited = 0

    def __iter__(self) -> Iterator[ShardMetrics]:
        for s in super().__iter__():
            CountedShards.visited += 1
            yield s


def snapshot(shards: tuple[ShardMetrics, ...]) -> ConsumerMetrics:
    leases = LeaseMetrics("w", len(shards), 0, 0, 0, 0, 0, 0, 0, 0, 0)
    return ConsumerMetrics("w", CountedShards(shards), leases, 0)


def test_open_and_ended_shards() -> None:
    """Held and not ended, less those read to the tip with nothing yet; ended = SHARD_END
    handed over."""
    buffers = ShardBuffers(100)
    buffers.state("ended").handed = END
    buffers.state("queued").queue.push(RecordColumns.from_records([KinesisRecord(b"{}", "k", "1")]))
    metrics = snapshot(
        (
            ShardMetrics("reading", records=5, millis_behind_latest=100),
            ShardMetrics("idle", records=0, millis_behind_latest=0),
            ShardMetrics("queued", records=0, millis_behind_latest=0),
            ShardMetrics("ended", records=3, millis_behind_latest=0),
        )
    )
    held = {"reading", "idle", "queued", "ended", "unread"}
    assert declared_shards(held, buffers, metrics) == (
        frozenset({"reading", "queued", "unread"}),
        frozenset({"ended"}),
    )


def test_the_cost_is_linear_in_the_shards() -> None:
    """With 2,000 held shards, the metrics snapshot's entries are visited at most once
    each (a scan per held shard would visit 2,000 x 2,000 / 2 on average)."""
    n = 2000
    ids = [f"shardId-{i:012d}" for i in range(n)]
    buffers = ShardBuffers(100)
    metrics = snapshot(tuple(ShardMetrics(s, records=1, millis_behind_latest=5) for s in ids))
    CountedShards.visited = 0
    open_shards, ended = declared_shards(set(ids), buffers, metrics)
    assert open_shards == frozenset(ids)
    assert not ended
    assert CountedShards.visited <= n
