"""What the stream source costs at its defaults (issue 12 item 10), on LocalStack:
GetRecords of idle shards at KCL's pace, and lease checkpoints coalesced to one per shard
per ``checkpoint_interval`` with the last committed offset written at a graceful stop.
The kill -9 between coalesced lease checkpoints is in ``test_stream_crash.py``."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from streamkit_kinesis.source import KinesisStreamSource
from streamkit_kinesis.testing.streams import fresh_stream, unique

import streamkit as sk
from streamkit.errors import ConfigError
from streamkit.testing.events import SCHEMA, counts, make_events
from streamkit.testing.tables import assert_table_equal
from streamkit_kinesis_tests.source.test_stream_source import (
    FAST,
    KEYS,
    drop,
    expected,
    last_sequences,
    lease_table,
    produce,
)

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack]

WINDOW = 6.0


def test_checkpoint_interval_must_not_be_negative() -> None:
    with pytest.raises(ConfigError, match="checkpoint_interval"):
        KinesisStreamSource("s", "app", sk.AwsEndpoint.local("http://127.0.0.1:9"),
                            checkpoint_interval=-1.0)  # fmt: skip


async def test_idle_shards_are_polled_at_kcl_pace_with_the_default_options(
    localstack_endpoint: AwsEndpoint,
) -> None:
    """No consumer_options: over 6 s an idle shard gets at most 5 GetRecords (one per
    1.5 s after the previous returned; the old 0.25 s idle time made ~20)."""
    ep, app = localstack_endpoint, unique("app")
    async with fresh_stream(ep, 2, "idle") as (stream, _):
        source = KinesisStreamSource(stream, app, ep, schema=SCHEMA)
        try:
            await source.open(None)
            consumer = source.consumer
            assert consumer is not None
            await asyncio.sleep(2.0)  # past start-up: every shard task reading
            before = {s.shard_id: s.get_records_calls for s in consumer.metrics().shards}
            await asyncio.sleep(WINDOW)
            after = {s.shard_id: s.get_records_calls for s in consumer.metrics().shards}
        finally:
            await source.close()
            await drop(ep, app)
    assert len(after) == 2, after
    calls = {shard: after[shard] - before.get(shard, 0) for shard in after}
    assert all(1 <= n <= WINDOW / 1.5 + 1 for n in calls.values()), calls


async def test_lease_checkpoints_are_coalesced_and_a_graceful_stop_writes_the_last(
    localstack_endpoint: AwsEndpoint,
) -> None:
    """checkpoint_interval=3600: the first commit of a shard writes its lease checkpoint,
    the next ones within the hour do not (the query's own checkpoint moves on), and
    stopping the query writes the last committed offset before the lease is released."""
    ep = localstack_endpoint
    truth, records = make_events(600, seed=31)
    app, name = unique("app"), unique("kin_coalesce")
    async with fresh_stream(ep, 2, "coalesce") as (stream, _):
        await produce(ep, stream, records[:300])
        wave1 = await last_sequences(ep, stream)
        try:
            source = KinesisStreamSource(
                stream, app, ep, schema=SCHEMA, consumer_options=FAST, checkpoint_interval=3600
            )
            q = counts(sk.read_stream.source(source)).write_stream.output_mode("update")
            query = q.trigger(processing_time=0.1).memory(name).start()
            try:
                await asyncio.to_thread(query.process_all_available, 60)
                first = await lease_table(ep, app)
                await produce(ep, stream, records[300:])
                wave2 = await last_sequences(ep, stream)
                await asyncio.to_thread(query.process_all_available, 60)
                running = await lease_table(ep, app)
                assert source.commits[-1] == wave2  # the query's checkpoint is at the end
            finally:
                await asyncio.to_thread(query.stop)
            stopped = await lease_table(ep, app)
        finally:
            await drop(ep, app)
    assert query.exception is None
    assert_table_equal(sk.memory_table(name), expected(truth), sort_by=KEYS)
    positions = {k: lease.checkpoint.sequence_number for k, lease in first.items()}
    assert set(positions) == set(wave1)
    assert all(p is not None for p in positions.values())  # the first commit wrote them
    # while running, the second wave's commits were coalesced: no lease moved
    assert {k: lease.checkpoint.sequence_number for k, lease in running.items()} == positions
    assert positions != wave2
    # the graceful stop wrote the last committed offsets and released the leases
    assert {k: lease.checkpoint.sequence_number for k, lease in stopped.items()} == wave2
    assert {lease.lease_owner for lease in stopped.values()} == {None}
