"""KinesisProducer(aggregate=True) against real servers, read back by streamkit's consumer.

kinesalite for volume, LocalStack for a reshard while producing. Expected values are the
records put (data, partition key, explicit hash key, per-key order); the shard a record
belongs to is computed here from the hash rule Kinesis documents (MD5 of the partition
key, or the explicit hash key) and the shard ranges ListShards reports.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.kpl import MAGIC, KplFetchers, UserRecord, deaggregate
from streamkit_kinesis.producer.batching import MAX_RECORD_BYTES
from streamkit_kinesis.producer.producer import KinesisProducer, ProducerMetrics
from streamkit_kinesis.shards import list_shards_blocking
from streamkit_kinesis.testing.streams import fresh_stream, read_stream_blocking
from streamkit_kinesis.types import TRIM_HORIZON, KinesisRecord

from streamkit_kinesis_tests.consumer.consumer_support import fast_config

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from streamkit_kinesis.client import KinesisApi
    from streamkit_kinesis.types import ShardInfo

    from streamkit.config import AwsEndpoint

pytestmark = pytest.mark.integration

Put = tuple[bytes, str, str | None]
"""(data, partition key, explicit hash key) of one user record put."""


def records(n: int, keys: int, start: int = 0, ehk_keys: int = 0) -> list[Put]:
    """``n`` records over ``keys`` keys, ~100 bytes each; the last ``ehk_keys`` keys carry
    a fixed explicit hash key each (so their order is still per shard)."""
    out: list[Put] = []
    for i in range(start, start + n):
        k = i % keys
        spread = str(k * 0x9E3779B97F4A7C15F39CC0605CEDC834 % 2**128)
        ehk = spread if k >= keys - ehk_keys else None
        out.append((f"k{k}:{i}:".encode().ljust(100, b"."), f"k{k}", ehk))
    return out


def hash_of(pk: str, ehk: str | None) -> int:
    return int(ehk) if ehk is not None else int(hashlib.md5(pk.encode()).hexdigest(), 16)


def holds(shard: ShardInfo, pk: str, ehk: str | None) -> bool:
    r = shard.hash_key_range
    return r.starting_hash_key <= hash_of(pk, ehk) <= r.ending_hash_key


async def produce(
    ep: AwsEndpoint, stream: str, put: Sequence[Put], max_aggregate_bytes: int = 50 * 1024
) -> ProducerMetrics:
    async with KinesisProducer(
        ep, stream, linger_ms=20, aggregate=True, max_aggregate_bytes=max_aggregate_bytes
    ) as producer:
        for data, pk, ehk in put:
            await producer.put(data, pk, ehk)
    return producer.metrics()


async def read_with_fetchers(ep: AwsEndpoint, stream: str) -> dict[str, list[KinesisRecord]]:
    """Every user record of each (open) shard via the consumer's de-aggregating fetchers."""
    client = kinesis_client(ep)
    infos = await asyncio.to_thread(list_shards_blocking, client, stream)
    fetchers = KplFetchers(fast_config(stream).polling_fetchers(client, time.monotonic))
    out: dict[str, list[KinesisRecord]] = {}
    for info in infos:
        fetcher = fetchers(info, TRIM_HORIZON)
        got: list[KinesisRecord] = []
        while True:
            batch = await fetcher.next_batch()
            got += batch.records
            if not batch.records and not batch.millis_behind_latest:
                break
        out[info.shard_id] = got
    return out


async def shard_infos(client: KinesisApi, stream: str) -> dict[str, ShardInfo]:
    shards = await asyncio.to_thread(list_shards_blocking, client, stream)
    return {s.shard_id: s for s in shards}


def as_put(r: KinesisRecord) -> Put:
    return (r.data, r.partition_key, r.explicit_hash_key if isinstance(r, UserRecord) else None)


def per_key(rows: Sequence[Put]) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = defaultdict(list)
    for data, pk, _ in rows:
        out[pk].append(data)
    return dict(out)


async def test_aggregated_records_read_back_exactly_in_key_order(
    kinesalite_endpoint: AwsEndpoint,
) -> None:
    ep = kinesalite_endpoint
    put = records(4000, keys=60, ehk_keys=6)
    async with fresh_stream(ep, 4, "agg") as (stream, _):
        m = await produce(ep, stream, put)
        client = kinesis_client(ep)
        raw = await asyncio.to_thread(read_stream_blocking, client, stream)
        infos = await shard_infos(client, stream)
        got = await read_with_fetchers(ep, stream)
    kinesis = [r for rs in raw.values() for r in rs]
    assert sum(r["Data"].startswith(MAGIC) for r in kinesis) >= 4
    assert len(kinesis) < len(put) // 20, "small records must share Kinesis records"
    assert (m.records_sent, m.kinesis_records, m.records_failed) == (len(put), len(kinesis), 0)
    for shard, rows in got.items():
        assert all(holds(infos[shard], *as_put(r)[1:]) for r in rows), "grouped by shard"
    users = [as_put(r) for rows in got.values() for r in rows]
    assert sorted(users) == sorted(put)
    assert per_key(users) == per_key(put)


async def test_a_record_at_the_size_limit_goes_alone_beside_aggregates(
    kinesalite_endpoint: AwsEndpoint,
) -> None:
    ep = kinesalite_endpoint
    big: Put = (b"B" * (MAX_RECORD_BYTES - 3), "big", None)
    put = [*records(50, keys=5), big, *records(50, keys=5, start=50)]
    async with fresh_stream(ep, 1, "aggbig") as (stream, _):
        m = await produce(ep, stream, put, max_aggregate_bytes=MAX_RECORD_BYTES)
        raw = await asyncio.to_thread(read_stream_blocking, kinesis_client(ep), stream)
        got = await read_with_fetchers(ep, stream)
    [kinesis] = raw.values()
    assert [r["Data"] for r in kinesis if r["PartitionKey"] == "big"] == [big[0]]
    assert max(len(r["Data"]) + len(r["PartitionKey"]) for r in kinesis) == MAX_RECORD_BYTES
    assert m.records_sent == len(put)
    [rows] = got.values()
    assert per_key([as_put(r) for r in rows]) == per_key(put)


async def test_reshard_while_producing_refreshes_the_map_and_re_sends_misrouted_records(
    localstack_endpoint: AwsEndpoint,
) -> None:
    """Split a shard between two rounds of puts by one producer: its map is stale, so
    aggregates built for the parent land on one child. The producer must notice (the
    ShardId PutRecords returns), refresh, and re-send the user records the child does not
    hold; a reader that drops aggregates holding a record outside its shard's range (the
    KCL's ``AggregatorUtil``) then sees every record exactly once, in key order."""
    await _split_while_producing(localstack_endpoint, lambda c: c)


class _ThrottledRefresh:
    """A real Kinesis client whose second ListShards (the refresh after the misroute) is
    refused with Kinesis' throttling error; every other call goes to the server."""

    def __init__(self, client: KinesisApi) -> None:
        self._client = client
        self.listed = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def list_shards(self, **kwargs: Any) -> Any:
        self.listed += 1
        if self.listed == 2:
            raise ClientError(
                {"Error": {"Code": "LimitExceededException", "Message": "Rate exceeded"}},
                "ListShards",
            )
        return self._client.list_shards(**kwargs)


async def test_a_throttled_refresh_after_a_misroute_loses_nothing(
    localstack_endpoint: AwsEndpoint,
) -> None:
    """The same split, with the map refresh after the misroute throttled: the producer
    keeps its old map, re-sends the misrouted user records, refreshes on the next misroute,
    and ends with every record on a shard holding it (before: the refresh's error stopped
    the producer and the misrouted records were neither re-sent nor reported)."""
    wrapped: list[_ThrottledRefresh] = []

    def wrap(client: KinesisApi) -> Any:
        wrapped.append(_ThrottledRefresh(client))
        return wrapped[0]

    await _split_while_producing(localstack_endpoint, wrap)
    assert wrapped[0].listed >= 3, "the throttled refresh was not exercised"


async def _split_while_producing(ep: AwsEndpoint, wrap: Callable[[KinesisApi], Any]) -> None:
    """Two rounds of puts with a shard split between them; checks what a KCL reader sees."""
    first, second = records(300, keys=40), records(300, keys=40, start=300)
    async with fresh_stream(ep, 2, "aggsplit") as (stream, admin):
        async with KinesisProducer(
            ep, stream, client=wrap(kinesis_client(ep)), linger_ms=20, aggregate=True
        ) as producer:
            for data, pk, ehk in first:
                await producer.put(data, pk, ehk)
            await producer.flush()
            [parent, _] = await admin.list_shards(stream)
            await admin.split_shard(stream, parent.shard_id)
            for data, pk, ehk in second:
                await producer.put(data, pk, ehk)
        m = producer.metrics()
        client = kinesis_client(ep)
        raw = await asyncio.to_thread(read_stream_blocking, client, stream)
        infos = await shard_infos(client, stream)
    assert m.shard_map_refreshes >= 2, "the reshard was not exercised"
    assert m.retries > 0, "no aggregate landed on the wrong child: the test proves nothing"
    order = sorted(infos, key=lambda s: (infos[s].parent_shard_ids != (), s))  # parents first
    kcl_view: list[Put] = []
    everything: list[Put] = []
    for shard in order:
        for r in raw[shard]:
            users = [as_put(u) for u in deaggregate(
                [KinesisRecord(r["Data"], r["PartitionKey"], r["SequenceNumber"])])]  # fmt: skip
            everything += users
            if all(holds(infos[shard], pk, ehk) for _, pk, ehk in users):
                kcl_view += users  # the KCL drops an aggregate with a user record outside
    put = first + second
    assert set(everything) == set(put), "at least once"
    assert sorted(kcl_view) == sorted(put), "inside their shards' ranges: each exactly once"
    assert per_key(kcl_view) == per_key(put)
