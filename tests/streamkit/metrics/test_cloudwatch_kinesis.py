"""The Kinesis consumer's metrics in CloudWatch with the KCL's names and dimensions
(``ProcessTask``: RecordsProcessed, DataBytesProcessed, MillisBehindLatest per ShardId;
``RenewAllLeases``: CurrentLeases, LostLeases and ``TakeLeases``: TakenLeases per
WorkerIdentifier), published to LocalStack and read back. Expected figures come from the
stream itself (plain boto3 reads, per shard) and from a fresh application with one worker:
every lease taken once, none lost."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.consumer import ConsumerConfig, InitialPosition, KinesisConsumer
from streamkit_kinesis.leases import DynamoDBLeaseStore
from streamkit_kinesis.metrics_cloudwatch import KinesisCloudWatchReporter
from streamkit_kinesis.testing.streams import fresh_stream, read_stream_blocking, unique

import streamkit as sk
from streamkit.config import AwsEndpoint
from streamkit.metrics.cloudwatch import CloudWatchPublisher
from streamkit.metrics.cloudwatch_queries import publish_to_cloudwatch
from streamkit.testing.events import SCHEMA, make_events

from .cloudwatch_read import dimension_sets, dimension_values, stat, unique_namespace

pytestmark = [pytest.mark.integration, pytest.mark.localstack]

FAST = {"idle_time": 0.1, "take_interval": 0.5}
PROCESS_TASK = "ProcessTask"


def put_all(client: Any, stream: str, records: list[tuple[bytes, str]]) -> None:
    """Plain PutRecords (no aggregation: one Kinesis record per event)."""
    for start in range(0, len(records), 500):
        chunk = records[start : start + 500]
        reply = client.put_records(
            StreamName=stream, Records=[{"Data": d, "PartitionKey": k} for d, k in chunk]
        )
        assert reply["FailedRecordCount"] == 0


async def test_kcl_metrics_of_a_kinesis_query_read_back(localstack_endpoint: AwsEndpoint) -> None:
    ep = localstack_endpoint
    _, records = make_events(600, seed=11)
    app, worker, name = unique("cwapp"), unique("worker"), unique("cw_kin")
    query_ns = unique_namespace("sk-kin")
    metrics = publish_to_cloudwatch(ep, namespace=query_ns, interval=3600)
    async with fresh_stream(ep, 3, "cw") as (stream, _):
        kinesis = kinesis_client(ep)
        await asyncio.to_thread(put_all, kinesis, stream, records)
        truth = await asyncio.to_thread(read_stream_blocking, kinesis, stream)
        df = sk.read_stream.kinesis(stream, app, SCHEMA, ep, worker_id=worker,
                                    consumer_options=FAST)  # fmt: skip
        q = df.write_stream.query_name(name).memory(name).start()
        try:
            await asyncio.to_thread(q.process_all_available, 120)
        finally:
            await asyncio.to_thread(q.stop)
            await asyncio.to_thread(metrics.stop)  # the flush on stop sends everything
            await DynamoDBLeaseStore(ep, app).delete_table()
    assert sum(len(rs) for rs in truth.values()) == 600
    cw = ep.client("cloudwatch")
    assert stat(cw, query_ns, "InputRows", {"Query": name}, "Sum") == 600
    # KCL's namespace defaults to the application name
    assert dimension_values(cw, app, "RecordsProcessed", "ShardId") == set(truth)
    for shard, rs in truth.items():
        at = {"Operation": PROCESS_TASK, "ShardId": shard}
        assert stat(cw, app, "RecordsProcessed", at, "Sum") == len(rs), shard
        assert stat(cw, app, "DataBytesProcessed", at, "Sum") == sum(len(r["Data"]) for r in rs)
        assert stat(cw, app, "MillisBehindLatest", at, "Minimum") == 0  # caught up at the end
    renew = {"Operation": "RenewAllLeases", "WorkerIdentifier": worker}
    assert stat(cw, app, "CurrentLeases", renew, "Maximum") == len(truth)
    assert stat(cw, app, "LostLeases", renew, "Sum") == 0
    take = {"Operation": "TakeLeases", "WorkerIdentifier": worker}
    assert stat(cw, app, "TakenLeases", take, "Sum") == len(truth)
    assert stat(cw, app, "MillisBehindLatest", {"Operation": "ApplicationTracker"}, "Minimum") == 0
    backlog = {"Operation": "Backlog", "WorkerIdentifier": worker}
    assert stat(cw, app, "BacklogMillis", backlog, "Minimum") == 0  # caught up at the end
    shard_dims = frozenset({"Operation", "ShardId"})
    worker_dims = frozenset({"Operation", "WorkerIdentifier"})
    assert dimension_sets(cw, app) == {
        "RecordsProcessed": {shard_dims},
        "DataBytesProcessed": {shard_dims},
        "MillisBehindLatest": {shard_dims, frozenset({"Operation"})},
        "CurrentLeases": {worker_dims},
        "LostLeases": {worker_dims},
        "TakenLeases": {worker_dims},
        "BacklogMillis": {worker_dims, frozenset({"Operation"})},
    }


async def read_all(consumer: KinesisConsumer, n: int) -> None:
    """Iterate the consumer's batches until ``n`` records came."""
    got = 0
    async for batch in consumer.batches():
        got += len(batch.records)
        if got >= n:
            return


async def test_a_consumer_on_its_own_publishes_through_the_reporter(
    localstack_endpoint: AwsEndpoint,
) -> None:
    ep = localstack_endpoint
    _, records = make_events(200, seed=12)
    async with fresh_stream(ep, 2, "cwc") as (stream, _):
        kinesis = kinesis_client(ep)
        await asyncio.to_thread(put_all, kinesis, stream, records)
        truth = await asyncio.to_thread(read_stream_blocking, kinesis, stream)
        config = ConsumerConfig(
            app_name=unique("cwc"), stream=stream, initial_position=InitialPosition.trim_horizon(),
            take_interval=0.5, idle_time=0.2,
        )  # fmt: skip
        publisher = CloudWatchPublisher(ep, interval=3600)
        try:
            with publisher:  # only the flush on exit sends
                async with KinesisConsumer(config, ep) as consumer:
                    reporting = asyncio.create_task(
                        KinesisCloudWatchReporter.of(consumer).run(publisher, interval=0.5)
                    )
                    await asyncio.wait_for(read_all(consumer, 200), 120)
                    reporting.cancel()  # reports once more as it ends
                    await asyncio.gather(reporting, return_exceptions=True)
                    worker = consumer.worker_id
        finally:
            await DynamoDBLeaseStore(ep, config.app_name).delete_table()
    cw = ep.client("cloudwatch")
    app = config.app_name
    for shard, rs in truth.items():
        at = {"Operation": PROCESS_TASK, "ShardId": shard}
        assert stat(cw, app, "RecordsProcessed", at, "Sum") == len(rs), shard
    renew = {"Operation": "RenewAllLeases", "WorkerIdentifier": worker}
    assert stat(cw, app, "CurrentLeases", renew, "Maximum") == len(truth)
    take = {"Operation": "TakeLeases", "WorkerIdentifier": worker}
    assert stat(cw, app, "TakenLeases", take, "Sum") == len(truth)
