"""Per-shard and lease metrics of a Kinesis query on LocalStack, scraped over HTTP while it
runs. Expected figures come from the stream itself (plain boto3 reads, per shard) and from
a fresh application with one worker (every lease taken once, none stolen or lost)."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.leases import DynamoDBLeaseStore
from streamkit_kinesis.producer.producer import KinesisProducer
from streamkit_kinesis.testing.streams import fresh_stream, read_stream_blocking, unique

import streamkit as sk
from streamkit.config import AwsEndpoint
from streamkit.testing.events import SCHEMA, make_events

pytestmark = [pytest.mark.integration, pytest.mark.localstack]

FAST = {"idle_time": 0.1, "take_interval": 0.5}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    assert sk.streams.flush()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as reply:
        text = reply.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def series(samples: Samples, name: str, key: str, **labels: str) -> dict[str, float]:
    """The samples of ``name`` matching ``labels``, by the value of label ``key``."""
    out = {}
    for (n, lab), value in samples.items():
        d = dict(lab)
        if n == name and all(d.get(k) == v for k, v in labels.items()):
            out[d[key]] = value
    return out


async def produce(endpoint: AwsEndpoint, stream: str, records: list[tuple[bytes, str]]) -> None:
    async with KinesisProducer(endpoint, stream, linger_ms=20) as producer:
        for data, key in records:
            await producer.put(data, key)


async def test_shard_and_lease_metrics_match_the_stream(localstack_endpoint: AwsEndpoint) -> None:
    ep = localstack_endpoint
    port = sk.metrics.serve(0)
    _, records = make_events(600, seed=5)
    app, worker = unique("app"), unique("worker")
    async with fresh_stream(ep, 3, "prom") as (stream, _):
        await produce(ep, stream, records)
        truth = await asyncio.to_thread(read_stream_blocking, kinesis_client(ep), stream)
        per_shard = {shard: float(len(rs)) for shard, rs in truth.items()}
        df = sk.read_stream.kinesis(stream, app, SCHEMA, ep, worker_id=worker,
                                    consumer_options=FAST)  # fmt: skip
        q = df.write_stream.query_name(unique("prom_kin")).memory(unique("prom_kin")).start()
        try:
            await asyncio.to_thread(q.process_all_available, 120)
            got = await asyncio.to_thread(scrape, port)
        finally:
            await asyncio.to_thread(q.stop)
            await DynamoDBLeaseStore(ep, app).delete_table()
    name, who = q.name, {"query": q.name, "worker": worker}
    assert sum(per_shard.values()) == 600
    assert series(got, "streamkit_partition_records_total", "partition", query=name) == per_shard
    assert series(got, "streamkit_kinesis_shard_records_total", "shard", **who) == per_shard
    assert set(series(got, "streamkit_kinesis_get_records_calls_total", "shard", **who)) == set(
        per_shard
    )
    assert series(got, "streamkit_kinesis_shard_held", "shard", **who) == dict.fromkeys(
        per_shard, 1.0
    )
    assert series(got, "streamkit_partition_lag_seconds", "partition", query=name) == (
        dict.fromkeys(per_shard, 0.0)
    )
    zeros = dict.fromkeys(per_shard, 0.0)
    assert series(got, "streamkit_partition_backing_off", "partition", query=name) == zeros
    assert series(got, "streamkit_partition_consecutive_errors", "partition", query=name) == zeros
    assert series(got, "streamkit_kinesis_leases_held", "worker", query=name) == {worker: 3}
    backlog = series(got, "streamkit_kinesis_worker_backlog_seconds", "worker", query=name)
    assert backlog == {worker: 0.0}  # caught up
    assert series(got, "streamkit_kinesis_lease_takes_total", "worker", query=name) == {worker: 3}
    assert series(got, "streamkit_kinesis_lease_steals_total", "worker", query=name) == {worker: 0}
    assert series(got, "streamkit_kinesis_lease_losses_total", "worker", query=name) == {worker: 0}
    calls = series(got, "streamkit_kinesis_lease_table_calls_total", "operation", **who)
    assert calls.get("Scan", 0) >= 1  # the taker lists the table
    assert calls.get("UpdateItem", 0) >= 3  # three takes, at least
