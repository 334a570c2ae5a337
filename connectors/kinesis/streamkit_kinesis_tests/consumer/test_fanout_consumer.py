"""The consumer with ``retrieval="fanout"`` on LocalStack (issue 15, item 2): every record
once and in order per shard, a restart resumes after the lease checkpoint, and a split
during the subscriptions reads the children after the parent. The truth is a plain
GetRecords read of the stream."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.consumer import ConsumerConfig, KinesisConsumer
from streamkit_kinesis.retrieval.registration import StreamConsumer
from streamkit_kinesis.testing.streams import fresh_stream, read_stream_blocking
from streamkit_kinesis.types import SHARD_END

from streamkit.config import AwsEndpoint
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

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEYS = 20


def fanout_config(stream: str, app_name: str | None = None) -> ConsumerConfig:
    extra = {"app_name": app_name} if app_name else {}
    return fast_config(stream, retrieval="fanout", lease_cleanup_interval=3600.0, **extra)


async def truth_of(endpoint: AwsEndpoint, stream: str) -> dict[str, list[int]]:
    raw = await asyncio.to_thread(read_stream_blocking, kinesis_client(endpoint), stream)
    return {s: [int(r["SequenceNumber"]) for r in rs] for s, rs in raw.items() if rs}


async def consume(
    endpoint: AwsEndpoint, config: ConsumerConfig, journal: Journal, truth: dict[str, list[int]]
) -> KinesisConsumer:
    consumer = KinesisConsumer(config, endpoint)
    running = asyncio.create_task(consumer.run(lambda: RecordingProcessor(journal)))
    try:
        await wait_caught_up(consumer, journal, {s: seqs[-1] for s, seqs in truth.items()}, 90)
    finally:
        await consumer.stop()
        await running
    return consumer


async def test_fanout_reads_every_record_once_in_order_per_shard(
    localstack_endpoint: AwsEndpoint,
) -> None:
    async with fresh_stream(localstack_endpoint, 3, "efo") as (stream, _):
        await produce(localstack_endpoint, stream, 300, keys=KEYS)
        truth = await truth_of(localstack_endpoint, stream)
        config = fanout_config(stream)
        journal = Journal()
        try:
            await consume(localstack_endpoint, config, journal, truth)
            table = {
                lease.lease_key: lease
                for lease in await leases(localstack_endpoint, config.app_name)
            }
        finally:
            await drop_table(localstack_endpoint, config.app_name)
        assert journal.by_shard() == truth
        assert {k: int(v.checkpoint.sequence_number) for k, v in table.items()} == {
            s: seqs[-1] for s, seqs in truth.items()
        }
        client = kinesis_client(localstack_endpoint)
        # the consumer stopped, but the stream consumer stays registered: never implicitly
        registered = StreamConsumer(client, stream, config.app_name)
        await registered.arn()
        assert registered.registrations == 0


async def test_fanout_restart_resumes_after_the_checkpoint(
    localstack_endpoint: AwsEndpoint,
) -> None:
    async with fresh_stream(localstack_endpoint, 2, "efo") as (stream, _):
        await produce(localstack_endpoint, stream, 120, keys=KEYS)
        first_truth = await truth_of(localstack_endpoint, stream)
        config = fanout_config(stream)
        first, second = Journal(), Journal()
        try:
            await consume(localstack_endpoint, config, first, first_truth)
            await produce(localstack_endpoint, stream, 80, keys=KEYS, start=120)
            truth = await truth_of(localstack_endpoint, stream)
            rest = {
                s: [q for q in seqs if q not in set(first_truth.get(s, ()))]
                for s, seqs in truth.items()
            }
            await consume(localstack_endpoint, fanout_config(stream, config.app_name), second, rest)
        finally:
            await drop_table(localstack_endpoint, config.app_name)
        assert first.by_shard() == first_truth
        assert second.by_shard() == {s: seqs for s, seqs in rest.items() if seqs}


async def test_fanout_split_during_subscriptions_reads_children_after_the_parent(
    localstack_endpoint: AwsEndpoint,
) -> None:
    async with fresh_stream(localstack_endpoint, 1, "efo") as (stream, admin):
        before = await produce(localstack_endpoint, stream, 150, keys=KEYS)
        config = fanout_config(stream)
        journal = Journal()
        consumer = KinesisConsumer(config, localstack_endpoint)
        running = asyncio.create_task(consumer.run(lambda: RecordingProcessor(journal)))
        try:
            await wait_until(lambda: len(journal.records) > 0, 60, "consuming to begin")
            children = await admin.split_shard(stream, "shardId-000000000000")
            after = await produce(localstack_endpoint, stream, 150, keys=KEYS, start=150)
            await wait_until(lambda: len(journal.records) >= 300, 120, "300 records")
            truth = await truth_of(localstack_endpoint, stream)
            await wait_caught_up(consumer, journal, tips_of_ints(truth), 90)
            await consumer.stop()
            await running
            table = {
                lease.lease_key: lease
                for lease in await leases(localstack_endpoint, config.app_name)
            }
        finally:
            await consumer.stop()
            await drop_table(localstack_endpoint, config.app_name)
        assert sorted(journal.payloads()) == sorted(before + after)  # each once
        assert journal.by_shard() == truth
        order: dict[str, list[int]] = defaultdict(list)
        for r in journal.records:
            key, n = r.data.decode().split(":")
            order[key].append(int(n))
        assert order == {f"key-{k}": list(range(300 // KEYS)) for k in range(KEYS)}
        assert table["shardId-000000000000"].checkpoint == SHARD_END
        started = {shard: journal.calls.index(("initialize", shard)) for shard in table}
        ended = journal.calls.index(("shard_ended", "shardId-000000000000"))
        assert all(ended < started[c.shard_id] for c in children)


def tips_of_ints(truth: dict[str, list[int]]) -> dict[str, int]:
    return tips_of({s: [{"SequenceNumber": str(q)} for q in seqs] for s, seqs in truth.items()})
