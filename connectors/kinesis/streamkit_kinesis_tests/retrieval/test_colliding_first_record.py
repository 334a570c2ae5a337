"""Polling past a shard's first record numbered like the shard's start, on the real server.

kinesis-mock 0.4.13 (LocalStack 4.9) numbers a shard's first record like the shard's
start when both fall in the same second, and then answers every read meant to start after
that record with the record again, the next iterator at the same position: with
``Limit`` 1 a reader (or a consumer with ``max_records=1``) would get nothing new for
ever. These tests make that happen for real (no wrapper client) and check that readers
and the consumer read on, lose nothing and repeat nothing, and that the tip right after
such a record is found. kinesalite never numbers records so; the reader tests run there
too, as a server that does not repeat.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import pyarrow as pa
import pytest
from streamkit_kinesis.client import KinesisApi, kinesis_client
from streamkit_kinesis.consumer import KinesisConsumer
from streamkit_kinesis.retrieval import ShardReader
from streamkit_kinesis.shards import shard_info
from streamkit_kinesis.source import KinesisStreamSource
from streamkit_kinesis.testing.streams import put_blocking, unique
from streamkit_kinesis.types import TRIM_HORIZON, ExtendedSequenceNumber, ShardInfo

import streamkit as sk
from streamkit.testing.events import SCHEMA, make_events
from streamkit.testing.tables import assert_table_equal
from streamkit_kinesis_tests.consumer.consumer_support import (
    Journal,
    RecordingProcessor,
    drop_table,
    fast_config,
    leases,
    wait_caught_up,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from streamkit_kinesis.consumer import ConsumerConfig

    from streamkit.config import AwsEndpoint

pytestmark = pytest.mark.integration

TRIES = 20
"""Streams made at most to get a first record numbered like its shard's start (a loaded
machine can make the put miss the second the stream was created in; each try takes ~1 s)."""
DEADLINE = 60.0
"""Bounds a hung read only (the reads themselves take well under a second)."""


@asynccontextmanager
async def stream_with_first(
    endpoint: AwsEndpoint, payloads: list[bytes], *, collide: bool
) -> AsyncIterator[tuple[str, KinesisApi, ShardInfo, list[str]]]:
    """A fresh one-shard stream holding ``payloads`` (put at once): its name, a client,
    the shard and the records' sequence numbers. ``collide``: the first record is numbered
    like the shard's start; the stream is created just after a second begins (the server
    runs on this machine's clock) with plain calls, so that it is ACTIVE (~0.5 s on
    LocalStack) and written in that same second, and made again (up to ``TRIES`` times)
    when a loaded machine made it miss."""
    client = kinesis_client(endpoint)
    for _ in range(TRIES if collide else 1):
        await asyncio.sleep(1.0 - time.time() % 1.0)
        stream = unique("first")
        try:
            seqs = await asyncio.to_thread(create_and_put, client, stream, payloads)
            listed = await asyncio.to_thread(client.list_shards, StreamName=stream)
            shard = shard_info(listed["Shards"][0])
            if not collide or seqs[0] == shard.starting_sequence_number:
                yield stream, client, shard, seqs
                return
        finally:
            await asyncio.to_thread(client.delete_stream, StreamName=stream)
    raise AssertionError(f"no first record numbered like its shard's start in {TRIES} streams")


def create_and_put(client: KinesisApi, stream: str, payloads: list[bytes]) -> list[str]:
    """Create a one-shard stream, put ``payloads`` as soon as it is ACTIVE (plain calls)."""
    client.create_stream(StreamName=stream, ShardCount=1)
    deadline = time.monotonic() + DEADLINE
    summary = client.describe_stream_summary
    while summary(StreamName=stream)["StreamDescriptionSummary"]["StreamStatus"] != "ACTIVE":
        assert time.monotonic() < deadline, f"stream {stream} not ACTIVE"
        time.sleep(0.02)
    return put_blocking(client, stream, payloads)


@pytest.fixture(params=["localstack", "kinesalite"])
def server(request: pytest.FixtureRequest) -> tuple[AwsEndpoint, bool]:
    """Each server in turn, and whether its first records collide (kinesis-mock's do)."""
    endpoint: AwsEndpoint = request.getfixturevalue(f"{request.param}_endpoint")
    return endpoint, request.param == "localstack"


async def read_until_tip(reader: ShardReader, max_calls: int = 40) -> list[list[bytes]]:
    """The payloads of each non-empty batch until a read comes back empty and caught up."""
    batches: list[list[bytes]] = []

    async def read() -> None:
        for _ in range(max_calls):
            batch = await reader.next_batch()
            if batch.records:
                batches.append([r.data for r in batch.records])
            elif reader.caught_up is not None:
                return
        raise AssertionError(f"no caught-up read in {max_calls} reads; got {batches}")

    await asyncio.wait_for(read(), DEADLINE)
    return batches


@pytest.mark.parametrize("start", ["checkpoint", "trim_horizon"])
async def test_limit_one_reads_past_the_first_record(
    server: tuple[AwsEndpoint, bool], start: str
) -> None:
    """``Limit`` 1 from a checkpoint at the first record, or from TRIM_HORIZON: every
    record after it once, one per batch, then the tip."""
    endpoint, collide = server
    sent = [f"r{i}".encode() for i in range(5)]
    async with stream_with_first(endpoint, sent, collide=collide) as (stream, client, shard, seqs):
        position = ExtendedSequenceNumber(seqs[0]) if start == "checkpoint" else TRIM_HORIZON
        reader = ShardReader(client, stream, shard, position, limit=1, idle_time=0)
        batches = await read_until_tip(reader)
    expected = sent[1:] if start == "checkpoint" else sent
    assert batches == [[p] for p in expected]
    assert reader.last_sequence_number == seqs[-1]


async def test_the_tip_right_after_the_first_record_is_found(
    server: tuple[AwsEndpoint, bool],
) -> None:
    """A checkpoint at the only record: ``Limit`` 1 finds the tip (``available_now`` waits
    for it), delivers nothing, then reads the next record once when it comes."""
    endpoint, collide = server
    async with stream_with_first(endpoint, [b"r0"], collide=collide) as (
        stream,
        client,
        shard,
        seqs,
    ):
        reader = ShardReader(
            client, stream, shard, ExtendedSequenceNumber(seqs[0]), limit=1, idle_time=0
        )
        assert await read_until_tip(reader) == []
        assert reader.caught_up is not None
        await asyncio.to_thread(put_blocking, client, stream, [b"r1"])
        assert await read_until_tip(reader) == [[b"r1"]]


async def test_a_consumer_resumes_with_max_records_one_from_the_first_record(
    localstack_endpoint: AwsEndpoint,
) -> None:
    """A consumer (``max_records=1``) checkpoints the shard's first record; restarted from
    that checkpoint after more records came, it processes each of them once."""
    ep = localstack_endpoint
    async with stream_with_first(ep, [b"r0"], collide=True) as (stream, client, shard, seqs):
        config = fast_config(stream, max_records=1)
        try:
            first = await run_consumer(config, ep, seqs[0], shard.shard_id)
            [lease] = await leases(ep, config.app_name)
            assert lease.checkpoint == ExtendedSequenceNumber(seqs[0])
            later = [f"r{i}".encode() for i in range(1, 5)]
            more = await asyncio.to_thread(put_blocking, client, stream, later)
            second = await run_consumer(config, ep, more[-1], shard.shard_id)
        finally:
            await drop_table(ep, config.app_name)
    assert first.payloads() == [b"r0"]
    assert second.payloads() == later
    assert [r.sequence_number for r in second.records] == more


async def run_consumer(
    config: ConsumerConfig, endpoint: AwsEndpoint, tip: str, shard_id: str
) -> Journal:
    """Run a consumer until it processed ``tip`` and read twice more, then stop it."""
    journal = Journal()
    consumer = KinesisConsumer(config, endpoint)
    running = asyncio.create_task(consumer.run(lambda: RecordingProcessor(journal)))
    try:
        await wait_caught_up(consumer, journal, {shard_id: int(tip)}, timeout=DEADLINE)
    finally:
        await consumer.stop()
        await running
    return journal


async def test_available_now_with_max_records_one_ends_past_the_first_record(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    """Two ``available_now`` runs on one query checkpoint, GetRecords ``Limit`` 1: the
    first reads the shard's first record; the second, restarted from it after four more
    came, ends with those four (each once) instead of waiting for ever."""
    ep = localstack_endpoint
    truth, records = make_events(5, seed=15)
    payloads = [data for data, _ in records]
    app, checkpoint = unique("app"), str(tmp_path / "ck")
    options = {"idle_time": 0.1, "take_interval": 0.5, "max_records": 1}

    async def run(source: KinesisStreamSource) -> pa.Table:
        name = unique("kin_first")
        q = (
            sk.read_stream.source(source).write_stream.output_mode("append")
            .checkpoint(checkpoint).trigger(available_now=True).memory(name).start()
        )  # fmt: skip
        ended = await asyncio.to_thread(q.await_termination, DEADLINE)
        if not ended:
            q.stop()
        assert ended, "the available_now run did not end"
        return sk.memory_table(name)

    async with stream_with_first(ep, payloads[:1], collide=True) as (stream, client, _, _):
        source = KinesisStreamSource(stream, app, ep, schema=SCHEMA, consumer_options=options)
        try:
            first = await run(source)
            await asyncio.to_thread(put_blocking, client, stream, payloads[1:])
            second = await run(source)
        finally:
            await drop_table(ep, app)
    assert_table_equal(first, truth.slice(0, 1), sort_by=["event_time", "user_id"])
    assert_table_equal(second, truth.slice(1), sort_by=["event_time", "user_id"])
