"""Files on S3 as a stream: NDJSON objects under a prefix → query → Parquet on S3.

Run: ``python examples/s3_files_pipeline.py --endpoint http://localhost:4566``
(endpoint defaults to ``$STREAMKIT_AWS_ENDPOINT``). Creates a bucket, uploads NDJSON
files under ``s3://<bucket>/incoming/``, and runs the query with ``available_now``: it
reads the files present, writes Parquet under ``s3://<bucket>/out/`` with its checkpoint
under ``s3://<bucket>/checkpoint/``, and stops. A second run after one more upload
resumes from the checkpoint: only the new file is read (exactly-once Parquet output).
"""

from __future__ import annotations

import argparse
import uuid

from clickstream_producer import events

import streamkit as sk
from streamkit.cli.clickstream import SCHEMA
from streamkit.config import AwsEndpoint


def purchases(df: sk.DataFrame) -> sk.DataFrame:
    """The query: purchases only, with revenue in cents."""
    return df.filter(sk.col("action") == "purchase").with_column(
        "cents", (sk.col("value") * 100).cast("int64")
    )


def upload(endpoint: AwsEndpoint, bucket: str, key: str, count: int, seed: int) -> int:
    """One NDJSON object of ``count`` clickstream events; returns its purchases."""
    table, records = events(count, seed)
    body = b"\n".join(data for data, _ in records) + b"\n"
    endpoint.client("s3").put_object(Bucket=bucket, Key=key, Body=body)
    actions: list[str] = table["action"].to_pylist()
    return actions.count("purchase")


def run_once(bucket: str) -> tuple[int, int]:
    """Process the new files, then stop; returns (input rows, purchases written so far)."""
    query = (
        purchases(sk.read_stream.files(f"s3://{bucket}/incoming/", schema=SCHEMA))
        .write_stream.trigger(available_now=True)
        .checkpoint(f"s3://{bucket}/checkpoint/").parquet(f"s3://{bucket}/out/")
        .start()
    )  # fmt: skip
    if not query.await_termination(120):
        query.stop()
        raise TimeoutError("the files were not processed within 120 s")
    rows = sum(p.num_input_rows for p in query.recent_progress)
    return rows, sk.read.parquet(f"s3://{bucket}/out/").to_arrow().num_rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", help="AWS endpoint URL [$STREAMKIT_AWS_ENDPOINT]")
    parser.add_argument("--bucket", default=f"streamkit-example-{uuid.uuid4().hex[:8]}")
    args = parser.parse_args(argv)
    endpoint = AwsEndpoint.from_env(args.endpoint)
    sk.configure(endpoint)  # s3:// paths go through this endpoint
    endpoint.client("s3").create_bucket(Bucket=args.bucket)
    expected = sum(upload(endpoint, args.bucket, f"incoming/part-{i}.json", 300, i) for i in (1, 2))
    rows, written = run_once(args.bucket)
    print(f"run 1: read {rows} events, s3://{args.bucket}/out/ holds {written} purchases")
    expected += upload(endpoint, args.bucket, "incoming/part-3.json", 300, 3)
    rows, written = run_once(args.bucket)
    print(f"run 2: read {rows} events, s3://{args.bucket}/out/ holds {written} purchases")
    print(f"expected {expected} purchases")


if __name__ == "__main__":
    main()
