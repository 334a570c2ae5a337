"""Initial positions (LATEST, AT_TIMESTAMP) and SHARD_END checkpointed for the processor."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.consumer import (
    ConsumerEvent,
    ConsumerEventKind,
    InitialPosition,
    KinesisConsumer,
)
from streamkit_kinesis.testing.streams import fresh_stream, read_stream_blocking
from streamkit_kinesis.types import SHARD_END

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
    from streamkit_kinesis.consumer import ConsumerConfig
    from streamkit_kinesis.leases import Checkpointer

    from streamkit.config import AwsEndpoint

pytestmark = pytest.mark.integration


async def run_until(
    config: ConsumerConfig, endpoint: AwsEndpoint, journal: Journal, tag: bytes
) -> KinesisConsumer:
    """Run until caught up with the last record tagged ``tag`` on each shard (read with boto3)."""
    truth = await asyncio.to_thread(read_stream_blocking, kinesis_client(endpoint), config.stream)
    tagged = {s: [r for r in rs if r["Data"].startswith(tag)] for s, rs in truth.items()}
    consumer = KinesisConsumer(config, endpoint)
    running = asyncio.create_task(consumer.run(lambda: RecordingProcessor(journal)))
    try:
        await wait_caught_up(consumer, journal, tips_of(tagged))
    finally:
        await consumer.stop()
        await running
    return consumer


async def test_latest_skips_what_was_written_before_reading_began(
    aws_endpoint: AwsEndpoint,
) -> None:
    ep = aws_endpoint
    async with fresh_stream(ep, 2, "latest") as (stream, _):
        await produce(ep, stream, 40, keys=8, tag="old-")
        config = fast_config(stream, initial_position=InitialPosition.latest())
        journal = Journal()
        consumer = KinesisConsumer(config, ep)
        started: list[str] = []

        def on_event(e: ConsumerEvent) -> None:
            if e.kind is ConsumerEventKind.SHARD_STARTED:
                started.append(e.detail)

        consumer.add_listener(on_event)
        running = asyncio.create_task(consumer.run(lambda: RecordingProcessor(journal)))
        try:
            # both shards started at LATEST and made a first read (their iterators exist)
            await wait_until(
                lambda: (
                    len(started) == 2
                    and all(s.get_records_calls for s in consumer.metrics().shards)
                ),
                90,
                "first reads",
            )
            assert started == ["LATEST", "LATEST"]
            new = await produce(ep, stream, 40, keys=8, tag="new-")
            # Caught up with the stream's tips (read with plain boto3), then two more reads
            # per shard: an old record (or a repeat) would have been delivered by now.
            truth = await asyncio.to_thread(read_stream_blocking, kinesis_client(ep), stream)
            tagged = {s: [r for r in rs if r["Data"].startswith(b"new-")]
                      for s, rs in truth.items()}  # fmt: skip
            await wait_caught_up(consumer, journal, tips_of(tagged))
        finally:
            await consumer.stop()
            await running
            await drop_table(ep, config.app_name)
    assert sorted(journal.payloads()) == sorted(new)


async def test_at_timestamp_starts_at_the_first_record_after_it(
    aws_endpoint: AwsEndpoint,
) -> None:
    ep = aws_endpoint
    async with fresh_stream(ep, 2, "at-ts") as (stream, _):
        await produce(ep, stream, 40, keys=8, tag="old-")
        await asyncio.sleep(1.5)  # arrival times are in (at least) whole milliseconds
        cut = datetime.now(UTC)
        await asyncio.sleep(1.5)
        new = await produce(ep, stream, 40, keys=8, tag="new-")
        config = fast_config(stream, initial_position=InitialPosition.at_timestamp(cut))
        journal = Journal()
        try:
            await run_until(config, ep, journal, b"new-")
        finally:
            await drop_table(ep, config.app_name)
    assert sorted(journal.payloads()) == sorted(new)


class ForgetfulProcessor(RecordingProcessor):
    """Never checkpoints at SHARD_END: the consumer must do it."""

    async def shard_ended(self, shard_id: str, checkpointer: Checkpointer) -> None:
        self.journal.calls.append(("shard_ended", shard_id))


@pytest.mark.localstack
async def test_shard_end_is_checkpointed_even_if_the_processor_does_not(
    localstack_endpoint: AwsEndpoint,
) -> None:
    ep = localstack_endpoint
    async with fresh_stream(ep, 1, "end") as (stream, admin):
        before = await produce(ep, stream, 20, keys=4)
        children = await admin.split_shard(stream, "shardId-000000000000")
        after = await produce(ep, stream, 20, keys=4, start=20)
        config = fast_config(stream)
        journal = Journal()
        consumer = KinesisConsumer(config, ep)
        running = asyncio.create_task(consumer.run(lambda: ForgetfulProcessor(journal)))
        try:
            await wait_until(lambda: len(journal.records) >= 40, 90, "40 records")
            await consumer.stop()
            await running
            table = {x.lease_key: x for x in await leases(ep, config.app_name)}
        finally:
            await consumer.stop()
            await drop_table(ep, config.app_name)
    assert table["shardId-000000000000"].checkpoint == SHARD_END
    assert journal.calls.count(("shard_ended", "shardId-000000000000")) == 1
    assert sorted(journal.payloads()) == sorted(before + after)
    assert {c.shard_id for c in children} <= set(table)
    assert consumer.metrics().shard("shardId-000000000000").checkpoints >= 1
