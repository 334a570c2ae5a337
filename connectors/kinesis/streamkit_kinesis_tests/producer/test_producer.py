"""KinesisProducer against real servers (LocalStack first, moto second); read back with boto3."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from typing import TYPE_CHECKING

import pytest
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.errors import (
    EndpointUnreachableError,
    PutRecordsFailedError,
    RecordTooLargeError,
    StreamNotFoundError,
)
from streamkit_kinesis.producer.batching import MAX_RECORD_BYTES
from streamkit_kinesis.producer.producer import KinesisProducer
from streamkit_kinesis.retry import Backoff
from streamkit_kinesis.testing.faults import ExceptionThrowingKinesisClient, InjectedError
from streamkit_kinesis.testing.streams import fresh_stream, read_stream_blocking, unique

from streamkit.config import AwsEndpoint
from streamkit.testing.waits import HANG

if TYPE_CHECKING:
    from mypy_boto3_kinesis.type_defs import PutRecordsRequestEntryTypeDef, RecordTypeDef

pytestmark = pytest.mark.integration

FAST = Backoff(base=0.01, cap=0.05)


def payload(key: str, n: int) -> bytes:
    return f"{key}:{n}".encode()


def by_key(shards: dict[str, list[RecordTypeDef]]) -> dict[str, list[int]]:
    """Per partition key, the per-key counters in the order they were read."""
    out: dict[str, list[int]] = defaultdict(list)
    for records in shards.values():
        for r in records:
            key, n = r["Data"].decode().split(":")
            assert key == r["PartitionKey"]
            out[key].append(int(n))
    return out


async def test_2000_records_over_4_shards_all_arrive_in_key_order(
    aws_endpoint: AwsEndpoint,
) -> None:
    async with fresh_stream(aws_endpoint, 4) as (stream, _):
        keys = [f"key-{k}" for k in range(100)]
        async with KinesisProducer(aws_endpoint, stream, linger_ms=20) as producer:
            for i in range(2000):
                key = keys[i % 100]
                await producer.put(payload(key, i // 100), key)
        m = producer.metrics()
        shards = await asyncio.to_thread(read_stream_blocking, kinesis_client(aws_endpoint), stream)
    assert m.records_put == m.records_sent == 2000
    assert m.records_failed == 0
    assert m.calls >= 4  # <= 500 per call
    assert sum(len(r) for r in shards.values()) == 2000
    assert sum(1 for r in shards.values() if r) == 4  # spread over the 4 shards
    assert by_key(shards) == {k: list(range(20)) for k in keys}


async def test_oversize_record_is_rejected_and_not_sent(aws_endpoint: AwsEndpoint) -> None:
    async with fresh_stream(aws_endpoint, 1) as (stream, _):
        async with KinesisProducer(aws_endpoint, stream) as producer:
            with pytest.raises(RecordTooLargeError) as info:
                await producer.put(b"x" * (MAX_RECORD_BYTES - 2), "key")  # + 3 key bytes
            assert info.value.size == MAX_RECORD_BYTES + 1
            largest = b"y" * (MAX_RECORD_BYTES - 3)
            await producer.put(largest, "key")  # exactly 1 MiB with its key: accepted
        shards = await asyncio.to_thread(read_stream_blocking, kinesis_client(aws_endpoint), stream)
    [records] = shards.values()
    assert [r["Data"] for r in records] == [largest]
    assert producer.metrics().records_sent == 1


async def test_only_failed_entries_are_resent_and_key_order_holds(
    aws_endpoint: AwsEndpoint,
) -> None:
    """PutRecords reports chosen entries as throttled (they are not written); the producer
    must resend exactly those, after backoff, and keep each key's order."""
    failures = {("k3", 0): 2, ("k7", 0): 1, ("k7", 1): 1, ("k11", 4): 1}
    remaining = dict(failures)

    def fail(_call: int, _index: int, entry: PutRecordsRequestEntryTypeDef) -> str | None:
        key, n = bytes(entry["Data"]).decode().split(":")  # type: ignore[arg-type]
        if remaining.get((key, int(n)), 0) > 0:
            remaining[(key, int(n))] -= 1
            return "ProvisionedThroughputExceededException"
        return None

    async with fresh_stream(aws_endpoint, 2) as (stream, _):
        client = ExceptionThrowingKinesisClient(kinesis_client(aws_endpoint), fail_entries=fail)
        keys = [f"k{i}" for i in range(16)]
        async with KinesisProducer(None, stream, client=client, backoff=FAST) as producer:
            for n in range(8):
                for key in keys:
                    await producer.put(payload(key, n), key)
        shards = await asyncio.to_thread(read_stream_blocking, kinesis_client(aws_endpoint), stream)
    sent = Counter(bytes(e["Data"]) for call in client.put_records_requests for e in call)  # type: ignore[arg-type]
    expected = Counter({payload(k, n): 1 for k in keys for n in range(8)})
    for (key, n), times in failures.items():
        expected[payload(key, n)] += times
    assert sent == expected  # failed ones resent once per failure, nobody else resent
    assert not any(remaining.values())
    assert by_key(shards) == {k: list(range(8)) for k in keys}  # once each, in key order
    for call in client.put_records_requests:  # at most one record per key per call
        assert len({e["PartitionKey"] for e in call}) == len(call)
    m = producer.metrics()
    assert m.retries == m.throttles == sum(failures.values())
    assert m.records_sent == 128


async def test_gives_up_after_max_attempts_with_a_typed_error(aws_endpoint: AwsEndpoint) -> None:
    def always_fail_k1(_c: int, _i: int, entry: PutRecordsRequestEntryTypeDef) -> str | None:
        return "ProvisionedThroughputExceededException" if entry["PartitionKey"] == "k1" else None

    async with fresh_stream(aws_endpoint, 1) as (stream, _):
        client = ExceptionThrowingKinesisClient(
            kinesis_client(aws_endpoint), fail_entries=always_fail_k1
        )
        producer = KinesisProducer(None, stream, client=client, backoff=FAST, max_attempts=3)
        await producer.put(b"a", "k1")
        await producer.put(b"b", "k2")
        with pytest.raises(PutRecordsFailedError) as info:
            await producer.flush()
        await producer.close()
    [failure] = info.value.failures
    assert failure.partition_key == "k1"
    assert failure.attempts == 3
    assert failure.error_code == "ProvisionedThroughputExceededException"
    assert producer.metrics().records_sent == 1
    assert producer.metrics().records_failed == 1


async def test_linger_sends_without_flush(aws_endpoint: AwsEndpoint) -> None:
    async with (
        fresh_stream(aws_endpoint, 1) as (stream, _),
        KinesisProducer(aws_endpoint, stream, linger_ms=50) as producer,
    ):
        for i in range(3):
            await producer.put(b"%d" % i, "k")
        deadline = time.monotonic() + 10
        while producer.metrics().records_sent < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert producer.metrics().records_sent == 3


async def test_missing_stream_raises_typed_error_naming_it(aws_endpoint: AwsEndpoint) -> None:
    name = unique("missing")
    producer = KinesisProducer(aws_endpoint, name)
    await producer.put(b"x", "k")
    with pytest.raises(StreamNotFoundError, match=name):
        await producer.flush()
    with pytest.raises(StreamNotFoundError):
        await producer.close()


async def test_unreachable_endpoint_fails_fast_with_bounded_retries() -> None:
    endpoint = AwsEndpoint.local("http://127.0.0.1:9")  # discard port: nothing listens
    producer = KinesisProducer(endpoint, "s")
    await producer.put(b"x", "k")
    start = time.monotonic()
    with pytest.raises(EndpointUnreachableError) as info:
        await producer.flush()
    assert time.monotonic() - start < HANG  # bounded retries, not a hang
    assert info.value.url == "http://127.0.0.1:9"
    assert info.value.attempts == 3
    assert producer.metrics().calls == 1


async def test_unreachable_endpoint_fails_fast_when_aggregating() -> None:
    """The aggregating producer's first ListShards fails the same way (nothing sent)."""
    endpoint = AwsEndpoint.local("http://127.0.0.1:9")
    producer = KinesisProducer(endpoint, "s", aggregate=True)
    await producer.put(b"x", "k")
    with pytest.raises(EndpointUnreachableError) as info:
        await producer.flush()
    assert info.value.url == "http://127.0.0.1:9"
    assert producer.metrics().calls == 0
    assert producer.metrics().buffered == 1


async def test_whole_call_throttling_is_retried_in_key_order(aws_endpoint: AwsEndpoint) -> None:
    async with fresh_stream(aws_endpoint, 1) as (stream, _):
        client = ExceptionThrowingKinesisClient(
            kinesis_client(aws_endpoint),
            [
                InjectedError(
                    "put_records", "ProvisionedThroughputExceededException", frozenset({1, 3})
                )
            ],
        )
        keys = ["a", "b", "c"]
        async with KinesisProducer(None, stream, client=client, backoff=FAST) as producer:
            for n in range(5):
                for key in keys:
                    await producer.put(payload(key, n), key)
        shards = await asyncio.to_thread(read_stream_blocking, kinesis_client(aws_endpoint), stream)
    assert by_key(shards) == {k: list(range(5)) for k in keys}
    assert client.calls["put_records"] == 5 + 2  # 5 calls of one record per key, 2 rejected
    m = producer.metrics()
    assert m.throttles == 2
    assert m.retries == 6  # both rejected calls carried 3 records
    assert m.records_sent == 15


async def test_without_key_order_few_keys_fill_whole_calls(aws_endpoint: AwsEndpoint) -> None:
    async with fresh_stream(aws_endpoint, 1) as (stream, _):
        producer = KinesisProducer(aws_endpoint, stream, preserve_key_order=False, linger_ms=5000)
        for n in range(300):
            await producer.put(payload("k", n), "k")
        await producer.close()
        shards = await asyncio.to_thread(read_stream_blocking, kinesis_client(aws_endpoint), stream)
    assert producer.metrics().calls == 1
    assert by_key(shards) == {"k": list(range(300))}  # no failure: buffer order is kept
