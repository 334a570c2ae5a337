"""Consumer test 1: every record read exactly once, in order per shard (LocalStack and moto),
also through a fetcher factory given to the consumer."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.consumer import KinesisConsumer
from streamkit_kinesis.testing.streams import fresh_stream, read_stream_blocking

from streamkit_kinesis_tests.consumer.consumer_support import (
    Journal,
    RecordingProcessor,
    drop_table,
    fast_config,
    leases,
    produce,
    tips_of,
    wait_caught_up,
    wait_until,
)

if TYPE_CHECKING:
    from datetime import datetime

    from streamkit_kinesis.retrieval import FetcherFactory, ReaderMetrics, RecordFetcher
    from streamkit_kinesis.types import ExtendedSequenceNumber, RecordBatch, ShardInfo

    from streamkit.config import AwsEndpoint

pytestmark = pytest.mark.integration


async def test_2000_records_over_4_shards_each_read_once_in_shard_order(
    aws_endpoint: AwsEndpoint,
) -> None:
    async with fresh_stream(aws_endpoint, 4, "consume") as (stream, _):
        sent = await produce(aws_endpoint, stream, 2000)
        truth = await asyncio.to_thread(read_stream_blocking, kinesis_client(aws_endpoint), stream)
        config = fast_config(stream)
        journal = Journal()
        consumer = KinesisConsumer(config, aws_endpoint)
        running = asyncio.create_task(consumer.run(lambda: RecordingProcessor(journal)))
        try:
            await wait_caught_up(consumer, journal, tips_of(truth))
            await consumer.stop()
            await running
            table = await leases(aws_endpoint, config.app_name)
        finally:
            await consumer.stop()
            await drop_table(aws_endpoint, config.app_name)
    assert len(journal.records) == 2000
    assert sorted(journal.payloads()) == sorted(sent)
    expected = {shard: [int(r["SequenceNumber"]) for r in rs] for shard, rs in truth.items() if rs}
    assert journal.by_shard() == expected  # same records, same (shard) order
    assert len(expected) == 4
    m = consumer.metrics()
    assert m.records == 2000
    assert {s.shard_id for s in m.shards} == set(expected)
    # graceful stop: every lease released, checkpointed at its shard's last record
    assert {lease.lease_key: lease.lease_owner for lease in table} == dict.fromkeys(expected)
    assert {lease.lease_key: int(lease.checkpoint.sequence_number) for lease in table} == {
        shard: seqs[-1] for shard, seqs in expected.items()
    }


class Closing:
    """A RecordFetcher that delegates to another and notes when it is closed."""

    def __init__(self, inner: RecordFetcher, closed: list[str], shard_id: str) -> None:
        self._inner, self._closed, self._shard_id = inner, closed, shard_id

    async def next_batch(self) -> RecordBatch:
        return await self._inner.next_batch()

    def metrics(self) -> ReaderMetrics:
        return self._inner.metrics()

    async def close(self) -> None:
        self._closed.append(self._shard_id)
        await self._inner.close()


class Tracking:
    """A FetcherFactory around another: which shards it built fetchers for, which closed."""

    def __init__(self, inner: FetcherFactory) -> None:
        self._inner = inner
        self.built: list[str] = []
        self.closed: list[str] = []

    def __call__(self, shard: ShardInfo, start: ExtendedSequenceNumber | datetime) -> Closing:
        self.built.append(shard.shard_id)
        return Closing(self._inner(shard, start), self.closed, shard.shard_id)


async def test_the_consumer_reads_through_the_fetcher_factory_it_is_given(
    aws_endpoint: AwsEndpoint,
) -> None:
    async with fresh_stream(aws_endpoint, 2, "fetchers") as (stream, _):
        sent = await produce(aws_endpoint, stream, 200)
        config = fast_config(stream)
        fetchers = Tracking(config.polling_fetchers(kinesis_client(aws_endpoint), time.monotonic))
        journal = Journal()
        consumer = KinesisConsumer(config, aws_endpoint, fetcher_factory=fetchers)
        running = asyncio.create_task(consumer.run(lambda: RecordingProcessor(journal)))
        try:
            await wait_until(lambda: len(journal.records) >= 200, 60, "200 records")
            await consumer.stop()
            await running
        finally:
            await consumer.stop()
            await drop_table(aws_endpoint, config.app_name)
    assert sorted(journal.payloads()) == sorted(sent)
    assert sorted(fetchers.built) == sorted(set(fetchers.built)) == sorted(journal.by_shard())
    assert sorted(fetchers.closed) == sorted(fetchers.built)  # every fetcher closed at stop
