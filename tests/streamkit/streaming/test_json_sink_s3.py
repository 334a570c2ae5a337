"""JSON sink on LocalStack S3, over the wire: round trip, partitions, idempotent re-runs.

Also the writer shortcuts to the connector sinks, ``write_stream.kafka(...)`` (Tansu) and
``write_stream.kinesis(...)`` (LocalStack), end to end."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime

import pyarrow as pa
import pytest
from streamkit_kafka.testing import create_topic, read_all, unique
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.testing.streams import fresh_stream, read_stream_blocking

import streamkit as sk
from streamkit.config import AwsEndpoint
from streamkit.streaming.checkpoint_store import open_checkpoint_store
from streamkit.streaming.sinks import JsonSink
from streamkit.streaming.sinks.json import JSON_PENDING
from streamkit.streaming.sources.memory import MemoryStream
from streamkit.testing.s3 import s3_keys
from tests.streamkit.streaming.sinks.test_json_sink import JsonFailingStore
from tests.streamkit.streaming.sinks.test_sinks import events, run

pytestmark = [pytest.mark.integration]


def read_ids(url: str) -> list[int]:
    return sorted(sk.read.json(url).to_arrow().column("id").to_pylist())


@pytest.mark.localstack
def test_s3_json_round_trip(configured: AwsEndpoint, bucket: str) -> None:
    url = f"s3://{bucket}/out"
    times = [datetime(2024, 5, 1, 12, 0, 0, 123_456), datetime(2024, 5, 1, 12, 0, 1)]
    table = pa.table(
        {"id": [0, 1], "at": pa.array(times, pa.timestamp("us", "UTC")), "v": ["x", None]}
    )
    run(JsonSink(url).add_batch(0, table))
    run(JsonSink(url, endpoint=configured).add_batch(1, events(0)))
    assert s3_keys(configured, bucket, "out/") == [JSON_PENDING, "batch-000000000-part-0.json"]
    back = sk.read.json(url).with_column("at", sk.to_timestamp("at")).to_arrow().sort_by("id")
    assert back.column("at").to_pylist() == [t.replace(tzinfo=UTC) for t in times]
    assert back.column("v").to_pylist() == ["x", None]


@pytest.mark.localstack
def test_s3_json_partition_by(configured: AwsEndpoint, bucket: str) -> None:
    url = f"s3://{bucket}/by-day"
    run(JsonSink(url, partition_by="day").add_batch(0, events(6)))
    assert s3_keys(configured, bucket, "by-day/") == [
        JSON_PENDING,
        "day=2024-01-01/batch-000000000-part-0.json",
        "day=2024-01-02/batch-000000000-part-0.json",
    ]
    got = sk.read.json(f"{url}/day=2024-01-02").to_arrow()
    assert sorted(got.column("id").to_pylist()) == [1, 3, 5]
    assert read_ids(url) == list(range(6))


@pytest.mark.localstack
def test_s3_json_rewrite_of_a_batch_leaves_no_duplicates(
    configured: AwsEndpoint, bucket: str
) -> None:
    url = f"s3://{bucket}/again"
    sink = JsonSink(url, partition_by="action")
    run(sink.add_batch(0, events(5)))
    run(sink.add_batch(1, events(4, offset=5)))
    run(sink.add_batch(1, events(4, offset=5)))
    rerun = pa.table({"id": [5, 6], "action": ["view", "view"], "day": [date(2024, 1, 1)] * 2})
    run(JsonSink(url, partition_by="action").add_batch(1, rerun))
    assert read_ids(url) == [0, 1, 2, 3, 4, 5, 6]
    batch1 = [k for k in s3_keys(configured, bucket, "again/") if "batch-000000001" in k]
    assert batch1 == ["action=view/batch-000000001-part-0.json"]


@pytest.mark.localstack
def test_s3_json_crash_mid_batch_is_cleaned_by_the_re_run(
    configured: AwsEndpoint, bucket: str
) -> None:
    url = f"s3://{bucket}/parts"
    run(JsonSink(url, partition_by="action").add_batch(0, events(4)))
    store = JsonFailingStore(open_checkpoint_store(url), 2)
    crashing = JsonSink(url, partition_by="action", store=store)
    with pytest.raises(OSError, match="simulated crash"):
        run(crashing.add_batch(1, events(8, offset=4)))
    assert 4 < len(read_ids(url)) < 12  # a partial batch 1 is visible until the re-run
    run(JsonSink(url, partition_by="action").add_batch(1, events(8, offset=4)))
    assert read_ids(url) == list(range(12))


# --- writer shortcuts to the connector sinks ---------------------------------------------

ROWS = pa.table({"id": [1, 2, 3], "user": ["a", "b", "a"]})


def memory_rows() -> MemoryStream:
    memory = MemoryStream(schema=ROWS.schema)
    memory.add_rows(ROWS)
    return memory


async def test_write_stream_kafka_sends_rows_as_json(kafka_bootstrap: str) -> None:
    topic = unique("json-writer")
    await create_topic(kafka_bootstrap, topic, partitions=1)
    writer = sk.read_stream.source(memory_rows()).write_stream.trigger(available_now=True)
    query = writer.kafka(kafka_bootstrap, topic, key_column="user").start()
    assert await asyncio.to_thread(query.await_termination, 60)
    records = await read_all(kafka_bootstrap, topic, expected=3)
    got = [(key, json.loads(value or b"")) for _, _, key, value in records]
    assert got == [(b"a", {"id": 1, "user": "a"}), (b"b", {"id": 2, "user": "b"}),
                   (b"a", {"id": 3, "user": "a"})]  # fmt: skip


@pytest.mark.localstack
async def test_write_stream_kinesis_sends_rows_as_json(localstack_endpoint: AwsEndpoint) -> None:
    async with fresh_stream(localstack_endpoint, 1, "json-writer") as (stream, _):
        writer = sk.read_stream.source(memory_rows()).write_stream.trigger(available_now=True)
        query = writer.kinesis(stream, "user", endpoint=localstack_endpoint).start()
        assert await asyncio.to_thread(query.await_termination, 60)
        client = kinesis_client(localstack_endpoint)
        shards = await asyncio.to_thread(read_stream_blocking, client, stream)
    records = [r for rs in shards.values() for r in rs]
    assert [(r["PartitionKey"], json.loads(r["Data"])) for r in records] == [
        ("a", {"id": 1, "user": "a"}),
        ("b", {"id": 2, "user": "b"}),
        ("a", {"id": 3, "user": "a"}),
    ]
