"""One query, two runs: a batch job over Parquet and a stream from Kinesis, same result.

Run: ``python examples/windowed_counts.py --endpoint http://localhost:4566 [--count 2000]``
(endpoint defaults to ``$STREAMKIT_AWS_ENDPOINT``). The same seeded events are written to a
Parquet file and produced to a fresh Kinesis stream; :func:`windowed_counts` defines the
query once, run as a batch job over the file and as a stream (``available_now``: it reads
what the stream holds, then stops). Both printed tables are identical.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from clickstream_producer import ensure_stream, events, produce
from streamkit_kinesis import StreamAdmin

import streamkit as sk
from streamkit.cli.clickstream import SCHEMA
from streamkit.config import AwsEndpoint


def windowed_counts(df: sk.DataFrame) -> sk.DataFrame:
    """The query, for batch and stream alike: events and revenue per action per minute."""
    return df.group_by(sk.window("event_time", "1 minute"), "action").agg(
        sk.count().alias("events"), sk.sum("value").alias("revenue")
    )


def render(table: pa.Table) -> str:
    """The result as text, sorted by window and action (stream and batch print alike)."""
    frame = table.to_pandas()
    frame["start"] = frame["window"].map(lambda w: w["start"])
    frame = frame.sort_values(["start", "action"]).reset_index(drop=True)
    frame["window"] = frame["window"].map(lambda w: f"{w['start']:%H:%M}-{w['end']:%H:%M}")
    frame["revenue"] = frame["revenue"].round(2)
    frame = frame.drop(columns=["start"])
    return str(pd.DataFrame(frame).to_string(index=False))


def run_batch(path: Path) -> pa.Table:
    """The query as a batch job over a Parquet file."""
    return windowed_counts(sk.read.parquet(str(path))).to_arrow()


def run_stream(endpoint: AwsEndpoint, stream: str) -> pa.Table:
    """The query as a stream from Kinesis: what the stream holds now, then stop."""
    name = f"counts_{uuid.uuid4().hex[:8]}"
    source = sk.read_stream.kinesis(
        stream, f"windowed-counts-{name}", schema=SCHEMA, endpoint=endpoint,
        consumer_options={"idle_time": 0.1, "take_interval": 0.5},
    )  # fmt: skip
    query = (
        windowed_counts(source).write_stream.output_mode("complete")
        .trigger(available_now=True).memory(name).start()
    )  # fmt: skip
    if not query.await_termination(120):
        query.stop()
        raise TimeoutError("the stream did not drain within 120 s")
    return sk.memory_table(name)


async def delete_stream(endpoint: AwsEndpoint, stream: str) -> None:
    async with StreamAdmin(endpoint) as admin:
        await admin.delete_stream(stream, wait=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", help="AWS endpoint URL [$STREAMKIT_AWS_ENDPOINT]")
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args(argv)
    endpoint = AwsEndpoint.from_env(args.endpoint)
    table, records = events(args.count)
    stream = f"windowed-counts-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.parquet"
        pq.write_table(table, path)
        print(f"batch over {path.name} ({table.num_rows} events):")
        print(render(run_batch(path)))
    asyncio.run(ensure_stream(endpoint, stream, shards=2))
    try:
        sent = asyncio.run(produce(endpoint, stream, records))
        print(f"stream from Kinesis {stream} ({sent} events):")
        print(render(run_stream(endpoint, stream)))
    finally:
        asyncio.run(delete_stream(endpoint, stream))


if __name__ == "__main__":
    main()
