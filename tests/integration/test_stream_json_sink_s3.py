"""JSON sink on LocalStack S3, over the wire: round trip, partitions, idempotent re-runs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime

import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.config import AwsEndpoint
from streamkit.streaming.checkpoint_store import open_checkpoint_store
from streamkit.streaming.sinks import JsonSink
from streamkit.streaming.sinks.json import JSON_PENDING
from tests.unit.test_stream_json_sink import JsonFailingStore
from tests.unit.test_stream_sinks import events, run

pytestmark = [pytest.mark.integration, pytest.mark.localstack]


@pytest.fixture
def bucket(localstack_endpoint: AwsEndpoint) -> Iterator[str]:
    """A fresh bucket, emptied and removed after the test."""
    s3 = localstack_endpoint.client("s3")
    name = f"sk-json-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    yield name
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=name, Key=obj["Key"])
    s3.delete_bucket(Bucket=name)


@pytest.fixture
def configured(localstack_endpoint: AwsEndpoint) -> Iterator[AwsEndpoint]:
    """``sk.configure`` pointed at LocalStack (default endpoint of s3:// paths)."""
    sk.configure(localstack_endpoint)
    try:
        yield localstack_endpoint
    finally:
        sk.configure(None)


def keys(endpoint: AwsEndpoint, bucket: str, prefix: str) -> list[str]:
    s3 = endpoint.client("s3")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"][len(prefix) :] for p in pages for o in p.get("Contents", []))


def read_ids(url: str) -> list[int]:
    return sorted(sk.read.json(url).to_arrow().column("id").to_pylist())


def test_s3_json_round_trip(configured: AwsEndpoint, bucket: str) -> None:
    url = f"s3://{bucket}/out"
    times = [datetime(2024, 5, 1, 12, 0, 0, 123_456), datetime(2024, 5, 1, 12, 0, 1)]
    table = pa.table(
        {"id": [0, 1], "at": pa.array(times, pa.timestamp("us", "UTC")), "v": ["x", None]}
    )
    run(JsonSink(url).add_batch(0, table))
    run(JsonSink(url, endpoint=configured).add_batch(1, events(0)))
    assert keys(configured, bucket, "out/") == [JSON_PENDING, "batch-000000000-part-0.json"]
    back = sk.read.json(url).with_column("at", sk.to_timestamp("at")).to_arrow().sort_by("id")
    assert back.column("at").to_pylist() == [t.replace(tzinfo=UTC) for t in times]
    assert back.column("v").to_pylist() == ["x", None]


def test_s3_json_partition_by(configured: AwsEndpoint, bucket: str) -> None:
    url = f"s3://{bucket}/by-day"
    run(JsonSink(url, partition_by="day").add_batch(0, events(6)))
    assert keys(configured, bucket, "by-day/") == [
        JSON_PENDING,
        "day=2024-01-01/batch-000000000-part-0.json",
        "day=2024-01-02/batch-000000000-part-0.json",
    ]
    got = sk.read.json(f"{url}/day=2024-01-02").to_arrow()
    assert sorted(got.column("id").to_pylist()) == [1, 3, 5]
    assert read_ids(url) == list(range(6))


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
    batch1 = [k for k in keys(configured, bucket, "again/") if "batch-000000001" in k]
    assert batch1 == ["action=view/batch-000000001-part-0.json"]


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
