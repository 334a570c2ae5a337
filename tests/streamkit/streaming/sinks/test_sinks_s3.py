"""S3 checkpoint store and Parquet sink on LocalStack, over the wire."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import date
from typing import Any

import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.config import AwsEndpoint
from streamkit.streaming.checkpoint_store import (
    BucketNotFoundError,
    S3CheckpointStore,
    StoreUnreachableError,
    open_checkpoint_store,
)
from streamkit.streaming.contracts import CheckpointStore
from streamkit.streaming.sinks import ParquetSink
from streamkit.testing.s3 import s3_keys
from streamkit.testing.servers import free_port
from tests.streamkit.streaming.sinks.test_sinks import FailingStore, events, run
from tests.streamkit.streaming.test_checkpoint_store import CONTRACT

pytestmark = [pytest.mark.integration, pytest.mark.localstack]


def read_ids(url: str) -> list[int]:
    return sorted(sk.read.parquet(url).to_arrow().column("id").to_pylist())


# --- checkpoint store ------------------------------------------------------------------


@pytest.mark.parametrize("check", CONTRACT, ids=lambda f: f.__name__)
def test_s3_store_contract(
    localstack_endpoint: AwsEndpoint, bucket: str, check: Callable[[CheckpointStore], None]
) -> None:
    check(S3CheckpointStore(f"s3://{bucket}/q1/checkpoint", localstack_endpoint))


def test_s3_store_lists_across_pages_and_stays_inside_its_prefix(
    localstack_endpoint: AwsEndpoint, bucket: str
) -> None:
    store = S3CheckpointStore(f"s3://{bucket}/ckpt/", localstack_endpoint, list_page_size=2)
    for i in range(7):
        store.write_bytes(f"offsets/{i}", str(i).encode())
    store.write_bytes("offsets/sub/x", b"nested")
    other = S3CheckpointStore(f"s3://{bucket}/ckpt-other", localstack_endpoint)
    other.write_bytes("offsets/99", b"not mine")
    assert store.list("offsets") == [str(i) for i in range(7)]
    assert store.list("") == []
    assert s3_keys(localstack_endpoint, bucket, "ckpt/offsets/")[:2] == ["0", "1"]


def test_open_s3_store_uses_the_configured_endpoint(configured: AwsEndpoint, bucket: str) -> None:
    store = open_checkpoint_store(f"s3://{bucket}/via-configure")
    assert isinstance(store, S3CheckpointStore)
    assert store.endpoint == configured
    store.write_bytes("commits/0", b"{}")
    assert s3_keys(configured, bucket, "via-configure/") == ["commits/0"]


def test_missing_bucket_is_a_clear_error(localstack_endpoint: AwsEndpoint) -> None:
    url = f"s3://sk-absent-{uuid.uuid4().hex[:8]}/ckpt"
    with pytest.raises(BucketNotFoundError, match="does not exist") as info:
        open_checkpoint_store(url, localstack_endpoint)
    assert url in str(info.value)
    assert "create it first" in str(info.value)


def test_unreachable_endpoint_is_a_clear_error() -> None:
    endpoint = AwsEndpoint.local(f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(StoreUnreachableError, match="cannot reach the S3 endpoint") as info:
        open_checkpoint_store("s3://any-bucket/ckpt", endpoint)
    assert endpoint.url is not None
    assert endpoint.url in str(info.value)
    assert "s3://any-bucket/ckpt" in str(info.value)
    assert time.monotonic() - started < 30


# --- parquet sink ----------------------------------------------------------------------


def test_s3_parquet_rewrite_of_a_batch_leaves_no_duplicates(
    configured: AwsEndpoint, bucket: str
) -> None:
    url = f"s3://{bucket}/out"
    sink = ParquetSink(url)
    run(sink.add_batch(0, events(5)))
    run(sink.add_batch(1, events(4, offset=5)))
    run(sink.add_batch(1, events(4, offset=5)))
    run(ParquetSink(url, endpoint=configured).add_batch(1, events(4, offset=5)))
    assert read_ids(url) == list(range(9))
    assert s3_keys(configured, bucket, "out/") == [
        "_streamkit_pending.json",
        "batch-000000000-part-0.parquet",
        "batch-000000001-part-0.parquet",
    ]


def test_s3_parquet_crash_mid_batch_is_cleaned_by_the_re_run(
    configured: AwsEndpoint, bucket: str
) -> None:
    url = f"s3://{bucket}/parts"
    run(ParquetSink(url, partition_by="action").add_batch(0, events(4)))
    inner = open_checkpoint_store(url)
    crashing = ParquetSink(url, partition_by="action", store=FailingStore(inner, 2))
    with pytest.raises(OSError, match="simulated crash"):
        run(crashing.add_batch(1, events(8, offset=4)))
    visible = read_ids(url)
    assert visible[:4] == [0, 1, 2, 3]
    assert 4 < len(visible) < 12  # a partial batch 1 is visible until the re-run
    rerun = pa.table({"id": [4, 5], "action": ["click", "view"], "day": [date(2024, 1, 1)] * 2})
    run(ParquetSink(url, partition_by="action").add_batch(1, rerun))
    assert read_ids(url) == [0, 1, 2, 3, 4, 5]
    batch1 = [k for k in s3_keys(configured, bucket, "parts/") if "batch-000000001" in k]
    assert batch1 == [
        "action=click/batch-000000001-part-0.parquet",
        "action=view/batch-000000001-part-0.parquet",
    ]


def test_s3_parquet_partition_by(configured: AwsEndpoint, bucket: str) -> None:
    url = f"s3://{bucket}/by-day"
    sink = ParquetSink(url, partition_by="day")
    run(sink.add_batch(0, events(6)))
    run(sink.add_batch(1, events(0)))
    assert s3_keys(configured, bucket, "by-day/") == [
        "_streamkit_pending.json",
        "day=2024-01-01/batch-000000000-part-0.parquet",
        "day=2024-01-02/batch-000000000-part-0.parquet",
    ]
    got = sk.read.parquet(url).to_arrow()
    by_id: dict[int, Any] = dict(
        zip(got.column("id").to_pylist(), got.column("day").to_pylist(), strict=True)
    )
    assert by_id == {i: date(2024, 1, 1 + i % 2) for i in range(6)}
