"""A shard that disappears (issue 12 item 2), on LocalStack and moto.

A lease whose shard is not in the stream (trimmed after retention, or never there) used to
stop the whole consumer with "stream not found, create it", on every restart. Now, as in
KCL, it is that shard's end: the lease is checkpointed at SHARD_END, the other shards are
read as usual, and lease cleanup deletes the lease once its shard has been missing for
``garbage_lease_grace``. The server's own ResourceNotFound answer for such a shard is
classified by the same rule.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.consumer import ConsumerEvent, ConsumerEventKind, KinesisConsumer
from streamkit_kinesis.errors import StreamNotFoundError
from streamkit_kinesis.leases import DynamoDBLeaseStore, Lease
from streamkit_kinesis.retrieval.polling import ShardReader
from streamkit_kinesis.testing.streams import fresh_stream, read_stream_blocking
from streamkit_kinesis.types import SHARD_END, TRIM_HORIZON, ExtendedSequenceNumber, HashKeyRange
from streamkit_kinesis.types import ShardInfo as Shard

from streamkit_kinesis_tests.consumer.consumer_support import (
    Journal,
    RecordingProcessor,
    drop_table,
    fast_config,
    poll_table,
    produce,
    tips_of,
    wait_caught_up,
    wait_until,
)

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GHOST = "shardId-000000000099"
"""A shard id the stream never had (as after trimming: listed parents' ids are gone)."""


async def test_a_lease_of_a_vanished_shard_ends_it_and_is_cleaned_up_after_the_grace(
    aws_endpoint: AwsEndpoint,
) -> None:
    endpoint = aws_endpoint
    async with fresh_stream(endpoint, 2, "vanish") as (stream, _admin):
        sent = await produce(endpoint, stream, 200, keys=20)
        first = fast_config(stream, failover_time=10.0, lease_cleanup_interval=0.5)
        store = DynamoDBLeaseStore(endpoint, first.app_name)
        await store.create_table_if_not_exists()
        ghost = Lease(GHOST, checkpoint=ExtendedSequenceNumber("49000000000000000000000000"))
        await store.create_lease_if_not_exists(ghost)
        try:
            # run 1: default grace (30 min): the ghost ends, its lease stays
            journal = Journal()
            consumer = KinesisConsumer(first, endpoint)
            running = asyncio.create_task(consumer.run(lambda: RecordingProcessor(journal)))
            truth = await asyncio.to_thread(read_stream_blocking, kinesis_client(endpoint), stream)
            await wait_until(lambda: len(journal.records) >= len(sent), 60, "every record")
            await wait_caught_up(consumer, journal, tips_of(truth), 60)
            ended, _ = await poll_table(
                endpoint,
                first.app_name,
                lambda t: any(x.lease_key == GHOST and x.checkpoint == SHARD_END for x in t),
                30,
                "the ghost lease at SHARD_END",
            )
            assert not running.done()  # still consuming: the vanished shard stopped nothing
            await consumer.stop()
            await running

            # run 2 (a restart): starts cleanly; with a short grace the lease goes
            events: list[ConsumerEvent] = []
            second = fast_config(
                stream,
                app_name=first.app_name,
                failover_time=10.0,
                lease_cleanup_interval=0.5,
                garbage_lease_grace=2.0,
            )
            restarted = KinesisConsumer(second, endpoint)
            restarted.add_listener(events.append)
            again = asyncio.create_task(restarted.run(lambda: RecordingProcessor(Journal())))
            table, _ = await poll_table(
                endpoint,
                first.app_name,
                lambda t: bool(t) and all(x.lease_key != GHOST for x in t),
                60,
                "the ghost lease to be deleted",
            )
            assert not again.done()
            await restarted.stop()
            await again
        finally:
            await drop_table(endpoint, first.app_name)

    assert sorted(journal.payloads()) == sorted(sent)  # every real record, once
    ghost_calls = [call for call, shard in journal.calls if shard == GHOST]
    assert ghost_calls == ["initialize", "shard_ended"]  # ended without a read
    assert {x.lease_key for x in table} == set(truth)
    cleaned = [e.detail for e in events if e.kind is ConsumerEventKind.LEASES_CLEANED]
    assert any(f"garbage=['{GHOST}']" in d for d in cleaned), cleaned
    assert ended


async def test_the_servers_resource_not_found_for_a_shard_is_a_vanished_shard(
    aws_endpoint: AwsEndpoint,
) -> None:
    """The real answer to GetShardIterator for a shard that is not there, as the reader
    raises it, is classified as "vanished" while the stream exists; once the stream is
    deleted it is the stream's absence, which stops the consumer."""
    endpoint = aws_endpoint
    async with fresh_stream(endpoint, 1, "rnf") as (stream, admin):
        consumer = KinesisConsumer(fast_config(stream), endpoint)  # never started
        ghost = Shard(GHOST, (), HashKeyRange(0, 2**128 - 1), "0")
        reader = ShardReader(consumer.client, stream, ghost, TRIM_HORIZON)
        with pytest.raises(Exception) as raised:  # noqa: PT011 - whatever the reader raises
            await reader.next_batch()
        assert await consumer.shards.shard_vanished(GHOST, raised.value)
        open_shard = (await admin.list_shards(stream))[0].shard_id
        assert not await consumer.shards.shard_vanished(open_shard, raised.value)
        await admin.delete_stream(stream)
        with pytest.raises(StreamNotFoundError):
            await consumer.shards.shard_vanished(GHOST, raised.value)
