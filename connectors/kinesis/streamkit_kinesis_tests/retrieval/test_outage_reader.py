"""A shard reader rides out endpoint outages (issue 12, item 1): a TCP proxy in front of
LocalStack is cut and restored; injected 5xx / throttling; a missing shard is typed."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.errors import ShardNotFoundError, StreamNotFoundError
from streamkit_kinesis.retrieval import ShardReader
from streamkit_kinesis.retry import Backoff
from streamkit_kinesis.shards import shard_info
from streamkit_kinesis.testing.faults import ExceptionThrowingKinesisClient, InjectedError
from streamkit_kinesis.testing.streams import fresh_stream, put_blocking
from streamkit_kinesis.types import TRIM_HORIZON, KinesisRecord

from streamkit.config import AwsEndpoint
from streamkit.testing.proxy import TcpProxy

pytestmark = pytest.mark.integration

FAST = Backoff(base=0.05, cap=0.5, max_attempts=None)


def payloads(n: int, prefix: str) -> list[bytes]:
    return [f"{prefix}{i}".encode() for i in range(n)]


async def wait_for(predicate: object, what: str, deadline: float = 60.0) -> None:
    """Poll ``predicate`` (a callable) until true; fail after ``deadline`` seconds."""
    assert callable(predicate)
    end = time.monotonic() + deadline
    while not predicate():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def read_until(reader: ShardReader, n: int, out: list[KinesisRecord]) -> None:
    while len(out) < n:
        out.extend((await reader.next_batch()).records)


async def test_reader_stalls_through_a_cut_and_resumes_without_loss_or_repeat(
    localstack_endpoint: AwsEndpoint,
) -> None:
    async with fresh_stream(localstack_endpoint, 1) as (stream, _):
        direct = kinesis_client(localstack_endpoint)
        listed = await asyncio.to_thread(direct.list_shards, StreamName=stream)
        shard = shard_info(listed["Shards"][0])
        with TcpProxy.to_url(str(localstack_endpoint.url)) as proxy:
            proxied = replace(localstack_endpoint, url=proxy.url)
            client = kinesis_client(proxied, connect_timeout=1.0, read_timeout=5.0)
            reader = ShardReader(
                client, stream, shard, TRIM_HORIZON, limit=25, idle_time=0.05, backoff=FAST
            )
            await asyncio.to_thread(put_blocking, direct, stream, payloads(50, "a"))
            got: list[KinesisRecord] = []
            await read_until(reader, 50, got)
            proxy.cut()
            await asyncio.to_thread(put_blocking, direct, stream, payloads(50, "b"))
            reading = asyncio.create_task(read_until(reader, 100, got))
            await wait_for(
                lambda: reading.done() or reader.health().consecutive_errors >= 5,
                "5 failed tries",
            )
            health = reader.health()
            assert health.state == "backing off"
            assert health.last_error is not None
            assert "Connect" in health.last_error or "connect" in health.last_error
            assert not reading.done()  # stalled, not failed
            assert reader.metrics().health == health
            proxy.restore()
            await asyncio.wait_for(reading, 60)
    assert [r.data for r in got] == payloads(50, "a") + payloads(50, "b")
    seqs = [int(r.sequence_number) for r in got]
    assert seqs == sorted(set(seqs))  # in order, each once
    assert reader.health().state == "reading"
    assert reader.health().consecutive_errors == 0


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        await asyncio.sleep(0)


async def test_server_errors_and_throttling_are_retried_past_any_count(
    localstack_endpoint: AwsEndpoint,
) -> None:
    """15 InternalFailures in a row (the old bound gave up after 10), then throttling."""
    async with fresh_stream(localstack_endpoint, 1) as (stream, _):
        real = kinesis_client(localstack_endpoint)
        listed = await asyncio.to_thread(real.list_shards, StreamName=stream)
        shard = shard_info(listed["Shards"][0])
        await asyncio.to_thread(put_blocking, real, stream, payloads(30, "r"))
        client = ExceptionThrowingKinesisClient(
            real,
            [
                InjectedError("get_shard_iterator", "ServiceUnavailable", frozenset({1, 2, 3})),
                InjectedError("get_records", "InternalFailure", frozenset(range(1, 16))),
                InjectedError(
                    "get_records", "ProvisionedThroughputExceededException", frozenset({16, 17})
                ),
            ],
        )
        sleeps = Sleeps()
        reader = ShardReader(client, stream, shard, TRIM_HORIZON, sleep=sleeps, rng=lambda: 1.0)
        got: list[KinesisRecord] = []
        await read_until(reader, 30, got)
    assert [r.data for r in got] == payloads(30, "r")
    assert len(client.injected) == 3 + 15 + 2
    # 3 on GetShardIterator (reset by its success), then 17 in a row on GetRecords: capped at 5
    expected = [0.2, 0.4, 0.8] + [min(5.0, 0.2 * 2**k) for k in range(17)]
    assert sleeps.calls[: len(expected)] == pytest.approx(expected)
    assert reader.metrics().throttles == 2
    assert reader.health().consecutive_errors == 0


async def test_a_missing_shard_is_a_shard_error_and_a_missing_stream_a_stream_error(
    localstack_endpoint: AwsEndpoint,
) -> None:
    async with fresh_stream(localstack_endpoint, 1) as (stream, _):
        client = kinesis_client(localstack_endpoint)
        listed = await asyncio.to_thread(client.list_shards, StreamName=stream)
        real = shard_info(listed["Shards"][0])
        ghost = replace(real, shard_id="shardId-000000000042")
        reader = ShardReader(client, stream, ghost, TRIM_HORIZON, sleep=Sleeps())
        with pytest.raises(ShardNotFoundError) as info:
            await reader.next_batch()
        assert info.value.shard_id == "shardId-000000000042"
        gone = ShardReader(client, f"{stream}-absent", real, TRIM_HORIZON, sleep=Sleeps())
        with pytest.raises(StreamNotFoundError):
            await gone.next_batch()
