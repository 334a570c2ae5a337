"""Examples are executed by the test suite: they must run and print what they promise.

Each example runs as a subprocess (with a timeout) against the real servers of the
session fixtures: ``localstack_endpoint`` (Kinesis, DynamoDB, S3) and ``kafka_bootstrap``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run_example(name: str, *args: str, timeout: float = 180) -> str:
    """Run ``examples/<name>`` and return its stdout (fails with its stderr)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_batch_windowed_counts_example_runs() -> None:
    out = run_example("batch_windowed_counts.py", timeout=120)
    assert "Aggregate by [window(col('event_time'), 1 hour), col('action')]" in out
    lines = [line for line in out.splitlines() if line.startswith("0")]
    # 6 hours x 5 actions of synthetic data: one row per (window, action)
    assert len(lines) == 30
    assert "purchase" in out


def stream_records(endpoint: AwsEndpoint, stream: str) -> list[bytes]:
    """Every record of ``stream``, read shard by shard from TRIM_HORIZON."""
    kinesis = endpoint.client("kinesis")
    out: list[bytes] = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = kinesis.get_records(ShardIterator=iterator, Limit=1000)
            out += [r["Data"] for r in page["Records"]]
            iterator = page.get("NextShardIterator") if page["Records"] else None
    return out


@pytest.mark.integration
def test_clickstream_producer_puts_every_event(localstack_endpoint: AwsEndpoint) -> None:
    stream = f"example-clicks-{uuid.uuid4().hex[:8]}"
    url = str(localstack_endpoint.url)
    out = run_example("clickstream_producer.py", "--endpoint", url, "--stream", stream,
                      "--count", "700")  # fmt: skip
    assert f"sent 700 records to {stream}" in out
    records = stream_records(localstack_endpoint, stream)
    assert len(records) == 700
    events = [json.loads(r) for r in records]
    assert all(set(e) == {"event_time", "action", "user_id", "value"} for e in events)
    assert {e["action"] for e in events} <= {"view", "click", "add_to_cart", "purchase",
                                             "share", "search"}  # fmt: skip
    localstack_endpoint.client("kinesis").delete_stream(StreamName=stream)


def table_after(header: str, out: str) -> list[str]:
    """The lines of the table printed after the line starting with ``header``."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header)) + 1
    table = []
    for line in lines[start:]:
        if not line.startswith((" ", "0", "1", "2")):
            break
        table.append(line)
    return table


@pytest.mark.integration
def test_windowed_counts_batch_and_stream_print_identical_tables(
    localstack_endpoint: AwsEndpoint,
) -> None:
    out = run_example("windowed_counts.py", "--endpoint", str(localstack_endpoint.url),
                      "--count", "1500")  # fmt: skip
    assert "batch over events.parquet (1500 events):" in out
    assert re.search(r"stream from Kinesis \S+ \(1500 events\):", out)
    batch, stream = table_after("batch over", out), table_after("stream from", out)
    assert batch[0].split() == ["window", "action", "events", "revenue"]
    rows = [line.split() for line in batch[1:]]
    assert sum(int(r[2]) for r in rows) == 1500
    assert len({r[0] for r in rows}) > 3  # several 1-minute windows
    assert stream == batch


@pytest.mark.integration
def test_kafka_pipeline_counts_every_event(kafka_bootstrap: str) -> None:
    out = run_example("kafka_pipeline.py", "--bootstrap", kafka_bootstrap, "--count", "600")
    assert re.search(r"produced 600 events to clicks-\w+ \(3 partitions\)", out)
    counts = {
        parts[0]: int(parts[1])
        for line in out.splitlines()
        if len(parts := line.split()) == 3 and parts[1].isdigit() and parts[0] != "total"
    }
    assert set(counts) == {"add_to_cart", "click", "purchase", "search", "share", "view"}
    assert sum(counts.values()) == 600
    assert "total 600 events" in out


@pytest.mark.integration
def test_s3_files_pipeline_resumes_from_its_checkpoint(localstack_endpoint: AwsEndpoint) -> None:
    out = run_example("s3_files_pipeline.py", "--endpoint", str(localstack_endpoint.url))
    first = re.search(r"run 1: read (\d+) events, \S+ holds (\d+) purchases", out)
    second = re.search(r"run 2: read (\d+) events, \S+ holds (\d+) purchases", out)
    expected = re.search(r"expected (\d+) purchases", out)
    assert first, out
    assert second, out
    assert expected, out
    assert int(first[1]) == 600  # two files of 300 events
    assert int(second[1]) == 300  # only the file uploaded after the first run
    assert 0 < int(first[2]) < int(second[2]) == int(expected[1])


@pytest.mark.integration
def test_foreach_batch_hands_every_event_to_the_function(
    localstack_endpoint: AwsEndpoint,
) -> None:
    out = run_example("foreach_batch.py", "--endpoint", str(localstack_endpoint.url),
                      "--count", "800")  # fmt: skip
    batches = [int(n) for n in re.findall(r"^batch \d+: (\d+) events$", out, re.MULTILINE)]
    assert len(batches) >= 4  # at most 250 records per batch
    assert all(n <= 250 for n in batches)
    assert sum(batches) == 800
    assert f"total 800 events in {len(batches)} batches" in out
