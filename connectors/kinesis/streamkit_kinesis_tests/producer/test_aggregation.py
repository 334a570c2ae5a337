"""Which user records share one aggregated Kinesis record (pure rules, no server).

Expected shards are computed here from the hash rule Kinesis documents (MD5 of the UTF-8
partition key as a big-endian 128-bit integer, or the explicit hash key) and an even
split of the hash key space; aggregates are decoded with the consumer's reader.
"""

from __future__ import annotations

import hashlib
import random
from collections import deque

from streamkit_kinesis.kpl.deaggregate import MAGIC
from streamkit_kinesis.kpl.protobuf import parse_aggregated
from streamkit_kinesis.producer.aggregation import Aggregate, ShardMap, take_aggregates
from streamkit_kinesis.producer.batching import MAX_RECORD_BYTES, Entry
from streamkit_kinesis.types import HashKeyRange, ShardInfo

TOP = 2**128


def even_map(n: int) -> ShardMap:
    infos = [
        ShardInfo(f"shardId-{i:012d}", (), HashKeyRange(i * TOP // n, (i + 1) * TOP // n - 1), "0")
        for i in range(n)
    ]
    return ShardMap.of(infos)


def shard_of(key: str, ehk: str | None, n: int) -> int:
    h = int(ehk) if ehk is not None else int(hashlib.md5(key.encode()).hexdigest(), 16)
    return h * n // TOP


def entry(key: str, data: bytes, ehk: str | None = None) -> Entry:
    return Entry(data, key, ehk, len(data) + len(key.encode()), 0.0)


def users(agg: Aggregate) -> list[tuple[bytes, str, str | None]]:
    """The user records an aggregate carries, as a reader sees them."""
    if not agg.data.startswith(MAGIC):
        return [(agg.data, agg.partition_key, agg.explicit_hash_key)]
    body = agg.data[4:-16]
    assert hashlib.md5(body).digest() == agg.data[-16:]
    a = parse_aggregated(body)
    hashes: list[str | None] = [None, *a.explicit_hash_keys]
    return [
        (r.data, a.partition_keys[r.partition_key_index],
         hashes[0 if r.explicit_hash_key_index is None else r.explicit_hash_key_index + 1])
        for r in a.records
    ]  # fmt: skip


def test_records_of_one_shard_share_an_aggregate_routed_to_that_shard() -> None:
    put = [entry(f"k{i % 40}", b"%d" % i) for i in range(400)]
    buffer = deque(put)
    aggs = take_aggregates(buffer, even_map(4))
    assert not buffer
    assert len(aggs) == 4
    got = []
    for agg in aggs:
        rows = users(agg)
        shards = {shard_of(k, e, 4) for _, k, e in rows}
        assert len(shards) == 1, "an aggregate holds the records of one shard only"
        (shard,) = shards
        assert agg.shard_id == f"shardId-{shard:012d}"
        assert agg.partition_key == rows[0][1]
        assert agg.explicit_hash_key is not None
        assert shard_of("unused", agg.explicit_hash_key, 4) == shard, "routed to its shard"
        mine = [e.data for e in put if shard_of(e.partition_key, None, 4) == shard]
        assert [r[0] for r in rows] == mine
        got += rows
    assert sorted(got) == sorted((e.data, e.partition_key, None) for e in put)


def test_explicit_hash_keys_choose_the_shard_and_are_kept() -> None:
    quarter = TOP // 4
    put = [entry("same-key", b"%d" % i, str(quarter * (i % 4) + 7)) for i in range(8)]
    aggs = take_aggregates(deque(put), even_map(4), one_per_shard=False)
    assert len(aggs) == 4
    for agg in aggs:
        rows = users(agg)
        assert len(rows) == 2
        assert len({shard_of(k, e, 4) for _, k, e in rows}) == 1
        assert rows[0][2] == agg.explicit_hash_key


def test_aggregates_stay_within_the_size_limit_partition_key_included() -> None:
    rng = random.Random(7)
    put = [entry(f"key-{i}".ljust(200, "-"), bytes(rng.randint(1, 1000))) for i in range(300)]
    buffer = deque(put)
    aggs = take_aggregates(buffer, even_map(1), max_aggregate_bytes=10_000, one_per_shard=False)
    assert not buffer
    assert len(aggs) > 20
    assert all(a.size <= 10_000 for a in aggs)
    assert max(a.size for a in aggs) > 10_000 - 1000, "aggregates are filled"
    assert [r for a in aggs for r in users(a)] == [(e.data, e.partition_key, None) for e in put]


def test_one_per_shard_holds_the_rest_of_a_full_shard_in_order() -> None:
    put = [entry("a", bytes(400)) for _ in range(10)] + [entry("b", bytes(10))]
    buffer = deque(put)
    aggs = take_aggregates(buffer, even_map(1), max_aggregate_bytes=2_000)
    assert len(aggs) == 1
    taken = len(users(aggs[0]))
    assert 1 < taken < 10
    assert list(buffer) == put[taken:], "held entries stay in the buffer, in order"


def test_a_record_near_the_limit_goes_alone_as_itself() -> None:
    big = entry("big", bytes(MAX_RECORD_BYTES - 3))
    small = [entry(f"s{i}", b"x") for i in range(5)]
    aggs = take_aggregates(deque([small[0], big, *small[1:]]), even_map(1),
                           max_aggregate_bytes=MAX_RECORD_BYTES, one_per_shard=False)  # fmt: skip
    alone = [a for a in aggs if a.entries == [big]]
    assert len(alone) == 1
    assert alone[0].data is big.data
    assert alone[0].explicit_hash_key is None
    assert alone[0].size == MAX_RECORD_BYTES
    assert sorted(r for a in aggs for r in users(a)) == sorted(
        (e.data, e.partition_key, None) for e in [big, *small]
    )


def test_a_record_no_open_shard_holds_goes_as_itself() -> None:
    infos = [ShardInfo("shardId-000000000000", (), HashKeyRange(0, TOP // 2 - 1), "0")]
    put = [entry("k", b"1", str(TOP - 1)), entry("k2", b"2", "5"), entry("k3", b"3", "6")]
    aggs = take_aggregates(deque(put), ShardMap.of(infos), one_per_shard=False)
    assert [(a.shard_id, len(a.entries)) for a in aggs] == [(None, 1), ("shardId-000000000000", 2)]


def test_one_per_shard_keeps_a_key_in_one_kinesis_record_of_a_call() -> None:
    """A key whose explicit hash keys point to two shards: its second record waits (two
    Kinesis records of one key in a call could be written out of order on a retry)."""
    quarter = TOP // 4
    put = [entry("k", b"0", "1"), entry("other", b"1"), entry("k", b"2", str(quarter + 1))]
    buffer = deque(put)
    aggs = take_aggregates(buffer, even_map(4))
    assert [e.data for a in aggs for e in a.entries] == [b"0", b"1"]
    assert list(buffer) == [put[2]]
    assert [e.data for a in take_aggregates(buffer, even_map(4)) for e in a.entries] == [b"2"]


def test_a_key_that_joined_another_keys_aggregate_keeps_to_its_shard() -> None:
    """The same rule when the key's first record joined an aggregate another key opened:
    its record for another shard (or for no shard) waits for the next call."""
    quarter = TOP // 4
    for later in (str(quarter + 1), None):
        put = [entry("other", b"0", "5"), entry("k", b"1", "7"), entry("k", b"2", later)]
        if later is None:  # a map whose one shard holds only the first quarter
            infos = [ShardInfo("shardId-000000000000", (), HashKeyRange(0, quarter), "0")]
            shards, put[2] = ShardMap.of(infos), entry("k", b"2", str(TOP - 1))
        else:
            shards = even_map(4)
        buffer = deque(put)
        aggs = take_aggregates(buffer, shards)
        assert [e.data for a in aggs for e in a.entries] == [b"0", b"1"]
        assert list(buffer) == [put[2]]


def test_unmapped_records_of_one_key_wait_for_the_next_call() -> None:
    infos = [ShardInfo("shardId-000000000000", (), HashKeyRange(0, TOP // 2 - 1), "0")]
    put = [entry("k", b"0", str(TOP - 1)), entry("j", b"1", str(TOP - 2)),
           entry("k", b"2", str(TOP - 3))]  # fmt: skip
    buffer = deque(put)
    aggs = take_aggregates(buffer, ShardMap.of(infos))
    assert [e.data for a in aggs for e in a.entries] == [b"0", b"1"]
    assert list(buffer) == [put[2]]
