"""A file stream on S3 (LocalStack) with its checkpoint and Parquet output on S3: a restart
resumes after the last committed batch, and the output has every row exactly once."""

from __future__ import annotations

import json
import uuid

import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.config import AwsEndpoint
from streamkit.testing.tables import assert_table_equal
from tests.oracle.events import events

pytestmark = [pytest.mark.integration, pytest.mark.localstack]

SCHEMA = pa.schema(
    [
        ("event_time", pa.timestamp("us", "UTC")),
        ("action", pa.string()),
        ("user_id", pa.int64()),
        ("value", pa.float64()),
    ]
)


def ndjson(table: pa.Table) -> bytes:
    lines = []
    for row in table.to_pylist():
        row["event_time"] = row["event_time"].isoformat()
        lines.append(json.dumps(row))
    return ("\n".join(lines) + "\n").encode()


def test_s3_files_to_s3_parquet_with_s3_checkpoint_survives_a_restart(
    localstack_endpoint: AwsEndpoint,
) -> None:
    s3 = localstack_endpoint.client("s3")
    bucket = f"sk-stream-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    data = events(n=1200, seed=41, span_hours=3)
    data = data.filter(pa.compute.is_valid(data["event_time"]))
    sk.configure(localstack_endpoint)
    try:

        def run() -> None:
            df = sk.read_stream.files(
                f"s3://{bucket}/in", format="json", schema=SCHEMA, max_files_per_trigger=1
            )
            q = (
                df.filter(sk.col("value") > 0)
                .write_stream.trigger(available_now=True)
                .checkpoint(f"s3://{bucket}/ck")
                .parquet(f"s3://{bucket}/out")
                .start()
            )
            assert q.await_termination(timeout=120)

        for i, lo in enumerate(range(0, 600, 200)):
            s3.put_object(Bucket=bucket, Key=f"in/part-{i}.json", Body=ndjson(data.slice(lo, 200)))
        run()
        for i, lo in enumerate(range(600, data.num_rows, 200), start=3):
            s3.put_object(Bucket=bucket, Key=f"in/part-{i}.json", Body=ndjson(data.slice(lo, 200)))
        run()  # resumes from the S3 checkpoint: only the new files
        got = sk.read.parquet(f"s3://{bucket}/out").to_arrow()
        commits = s3.list_objects_v2(Bucket=bucket, Prefix="ck/commits/")["KeyCount"]
    finally:
        sk.configure(None)
    expected = sk.from_arrow(data).filter(sk.col("value") > 0).to_arrow()
    assert_table_equal(got, expected, sort_by=["event_time", "action", "user_id", "value"])
    assert commits == -(-data.num_rows // 200)  # one batch per file, ids continued
