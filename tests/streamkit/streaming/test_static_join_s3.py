"""A stream joined with a Parquet table on LocalStack S3 that is reloaded on a schedule
(``sk.read.parquet("s3://...", reload_every=...)``, injected clock), over the wire."""

from __future__ import annotations

import io
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import streamkit as sk
from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack]

EVENTS = pa.schema([("k", pa.string()), ("v", pa.int64())])


def put(endpoint: AwsEndpoint, bucket: str, part: int, key: str, name: str) -> None:
    """Write ``dim/part-<part>.parquet`` holding one row (k, name) over S3's API."""
    body = io.BytesIO()
    pq.write_table(pa.table({"k": [key], "name": [name]}), body)
    s3 = endpoint.client("s3")
    s3.put_object(Bucket=bucket, Key=f"dim/part-{part}.parquet", Body=body.getvalue())


def test_an_s3_table_is_reloaded_every_interval(configured: AwsEndpoint, bucket: str) -> None:
    """Objects rewritten and added on S3 reach the join in the first micro-batch that
    starts 10 minutes (by the query's clock) after the previous load, not before."""
    now = [0.0]
    put(configured, bucket, 0, "a", "v1")
    dim = sk.read.parquet(f"s3://{bucket}/dim", reload_every="10 minutes", clock=lambda: now[0])
    events = sk.read_stream.memory(EVENTS)
    seen: dict[int, list[tuple[Any, ...]]] = {}

    def collect(frame: sk.DataFrame, batch_id: int) -> None:
        rows = frame.to_arrow().to_pylist()
        seen[batch_id] = sorted((r["k"], r["name"]) for r in rows)

    q = events.join(dim, "k", "left").write_stream.foreach_batch(collect).start()

    def batch(at: float) -> list[tuple[Any, ...]]:
        now[0] = at
        events.stream.add_rows([{"k": "a", "v": 1}, {"k": "b", "v": 2}])
        q.process_all_available()
        return seen[max(seen)]

    try:
        assert batch(0) == [("a", "v1"), ("b", None)]
        put(configured, bucket, 0, "a", "v2")
        put(configured, bucket, 1, "b", "new")
        assert batch(599) == [("a", "v1"), ("b", None)]
        assert batch(600) == [("a", "v2"), ("b", "new")]
        assert batch(1000) == [("a", "v2"), ("b", "new")]
    finally:
        q.stop()
