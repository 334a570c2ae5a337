"""FileStreamSource on an S3 prefix in LocalStack, over the wire."""

from __future__ import annotations

import io
import json
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import streamkit as sk
from streamkit.config import AwsEndpoint
from streamkit.streaming.contracts import SourceBatch
from streamkit.streaming.sources import FileStreamSource

pytestmark = [pytest.mark.integration, pytest.mark.localstack]

SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("action", pa.string())])


def put(endpoint: AwsEndpoint, bucket: str, key: str, body: bytes) -> None:
    endpoint.client("s3").put_object(Bucket=bucket, Key=key, Body=body)


def lines(*ids: int) -> bytes:
    return b"".join(json.dumps({"id": i, "action": "s3"}).encode() + b"\n" for i in ids)


def ids(batch: SourceBatch | None) -> list[int]:
    assert batch is not None
    return list(batch.rows.column("id").to_pylist())


async def test_new_objects_in_arrival_order_with_a_cap_and_a_restart(
    localstack_endpoint: AwsEndpoint, bucket: str
) -> None:
    put(localstack_endpoint, bucket, "events/z.json", lines(1))
    time.sleep(1.1)  # S3 LastModified has one-second resolution
    put(localstack_endpoint, bucket, "events/a.json", lines(2, 3))
    put(localstack_endpoint, bucket, "events/b.json", lines(4))
    put(localstack_endpoint, bucket, "other/x.json", lines(99))
    path = f"s3://{bucket}/events"
    source = FileStreamSource(
        path, schema=SCHEMA, max_files_per_trigger=2, endpoint=localstack_endpoint
    )
    await source.open(None)
    first = await source.next_batch(0)
    assert ids(first) == [1, 2, 3]
    assert first is not None
    assert json.loads(first.end_offsets["files"]) == ["a.json", "z.json"]

    restarted = FileStreamSource(path, schema=SCHEMA, endpoint=localstack_endpoint)
    await restarted.open(first.end_offsets)
    assert ids(await restarted.next_batch(0)) == [4]
    assert await restarted.next_batch(0) is None


async def test_a_late_object_sorting_before_read_ones_is_still_read(
    localstack_endpoint: AwsEndpoint, bucket: str
) -> None:
    put(localstack_endpoint, bucket, "in/m.json", lines(1))
    source = FileStreamSource(f"s3://{bucket}/in/", schema=SCHEMA, endpoint=localstack_endpoint)
    await source.open(None)
    assert ids(await source.next_batch(0)) == [1]
    # Same second (or older) and a smaller name: a (mtime, name) high-water mark skips it.
    put(localstack_endpoint, bucket, "in/a.json", lines(2) + b"{bad\n")
    batch = await source.next_batch(0)
    assert ids(batch) == [2]
    assert batch is not None
    assert batch.dead_letters.column("position").to_pylist() == ["a.json:2"]
    target = await source.end_offsets()
    assert source.reached(batch.end_offsets, target)


async def test_parquet_objects_through_the_configured_endpoint(
    localstack_endpoint: AwsEndpoint, bucket: str
) -> None:
    sink = io.BytesIO()
    pq.write_table(pa.table({"id": pa.array([7, 8], pa.int32()), "action": ["p", "q"]}), sink)
    put(localstack_endpoint, bucket, "pq/part-0.parquet", sink.getvalue())
    sk.configure(localstack_endpoint)
    try:
        source = FileStreamSource(f"s3://{bucket}/pq", format="parquet")
        assert source.schema == pa.schema([("id", pa.int32()), ("action", pa.string())])
        await source.open(None)
        assert ids(await source.next_batch(0)) == [7, 8]
    finally:
        sk.configure(None)
