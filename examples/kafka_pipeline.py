"""Kafka end to end: produce a clickstream to a topic, count it with a streaming query.

Run: ``python examples/kafka_pipeline.py --bootstrap localhost:9092 [--count 1000]``
(bootstrap defaults to ``$STREAMKIT_KAFKA_BOOTSTRAP``). Creates a 3-partition topic,
produces ``--count`` events, and runs a streaming query (consumer group, offsets
committed after each batch) until every event is counted; then prints the counts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid

import pyarrow as pa
from clickstream_producer import events
from streamkit_kafka.testing import create_topic, produce

import streamkit as sk
from streamkit.cli.clickstream import SCHEMA
from streamkit.errors import StreamkitError


def action_counts(df: sk.DataFrame) -> sk.DataFrame:
    """The query: events and revenue per action."""
    return df.group_by("action").agg(sk.count().alias("events"), sk.sum("value").alias("revenue"))


def count_topic(bootstrap: str, topic: str, expected: int, timeout: float = 60.0) -> pa.Table:
    """Run the query from the topic until ``expected`` events are counted; its result."""
    name = f"kafka_counts_{uuid.uuid4().hex[:8]}"
    df = sk.read_stream.kafka(bootstrap, topic, f"example-{name}", SCHEMA)
    query = (
        action_counts(df).write_stream.output_mode("complete")
        .trigger(processing_time="200 ms").memory(name).start()
    )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while counted(name) < expected:
            if time.monotonic() > deadline or not query.is_active:
                raise TimeoutError(f"counted {counted(name)} of {expected} events")
            time.sleep(0.2)
    finally:
        query.stop()
    return sk.memory_table(name)


def counted(name: str) -> int:
    """Events counted so far by the query writing memory table ``name``."""
    try:
        table = sk.memory_table(name)
    except StreamkitError:  # the query has not created its sink yet
        return 0
    return int(sum(table["events"].to_pylist())) if "events" in table.column_names else 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default=os.environ.get("STREAMKIT_KAFKA_BOOTSTRAP"))
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args(argv)
    if not args.bootstrap:
        parser.error("pass --bootstrap host:port or set STREAMKIT_KAFKA_BOOTSTRAP")
    topic = f"clicks-{uuid.uuid4().hex[:8]}"
    _, records = events(args.count)
    asyncio.run(create_topic(args.bootstrap, topic, partitions=3))
    values = [data for data, _ in records]
    asyncio.run(produce(args.bootstrap, topic, values, partitions=3))
    print(f"produced {len(values)} events to {topic} (3 partitions)")
    result = count_topic(args.bootstrap, topic, len(values)).sort_by("action")
    frame = result.to_pandas()
    frame["revenue"] = frame["revenue"].round(2)
    print(frame.to_string(index=False))
    print(f"total {int(frame['events'].sum())} events")


if __name__ == "__main__":
    main()
