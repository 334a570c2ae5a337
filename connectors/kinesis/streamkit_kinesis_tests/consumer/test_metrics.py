"""Per-shard totals survive a shard moving away and back; snapshot arithmetic."""

from __future__ import annotations

from streamkit_kinesis.consumer.metrics import ShardTotals
from streamkit_kinesis.retrieval import ReaderMetrics


def reader(shard: str, records: int, behind: int | None = 5) -> ReaderMetrics:
    return ReaderMetrics(shard, records, records * 10, 2, 1, 0, behind)


def test_finished_and_live_readers_add_up() -> None:
    totals = ShardTotals()
    totals.fold(reader("a", 100), checkpoints=3)
    shards = totals.snapshot([(reader("a", 50, behind=None), "a", 1), (None, "b", 0)], {"a", "b"})
    a, b = shards
    assert (a.shard_id, a.records, a.bytes, a.get_records_calls, a.throttles) == (
        "a", 150, 1500, 4, 2,
    )  # fmt: skip
    assert a.millis_behind_latest == 5  # the live reader reported no lag: keep the last known
    assert a.checkpoints == 4
    assert a.held
    assert (b.shard_id, b.records, b.held) == ("b", 0, True)


def test_shards_no_longer_held_keep_their_totals() -> None:
    totals = ShardTotals()
    totals.fold(reader("a", 7))
    [a] = totals.snapshot([], held=set())
    assert (a.records, a.held) == (7, False)
