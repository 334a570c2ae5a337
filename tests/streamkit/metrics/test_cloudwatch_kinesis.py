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
from streamkit_kinesis.testing.faults import ExceptionThrowingKinesisClient, InjectedError
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
PER_CALL = {
    "ListLeases": frozenset({"Operation", "WorkerIdentifier"}),
    "TakeLease": frozenset({"Operation", "WorkerIdentifier"}),
    "RenewLease": frozenset({"Operation", "WorkerIdentifier"}),
    "UpdateLease": frozenset({"Operation", "ShardId"}),
    "KinesisDataFetcher.getRecords": frozenset({"Operation", "ShardId"}),
    "KinesisDataFetcher.getShardIterator": frozenset({"Operation", "ShardId"}),
}
"""The KCL's per-call metric prefixes and their dimensions."""


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
    published = dimension_sets(cw, app)
    per_call = {k: published.pop(k) for k in list(published) if k.endswith((".Time", ".Success"))}
    assert published.pop("Time", {worker_dims}) == {worker_dims}  # TakeLeases, RenewAllLeases
    assert published.pop("Success", {worker_dims}) == {worker_dims}
    assert published == {
        "RecordsProcessed": {shard_dims},
        "DataBytesProcessed": {shard_dims},
        "MillisBehindLatest": {shard_dims, frozenset({"Operation"})},
        "CurrentLeases": {worker_dims},
        "LostLeases": {worker_dims},
        "TakenLeases": {worker_dims},
        "BacklogMillis": {worker_dims, frozenset({"Operation"})},
    }
    for metric, dims in per_call.items():  # from the first report on: which ran is timing
        prefix = metric.rsplit(".", 1)[0]
        assert prefix in PER_CALL, metric
        assert dims == {PER_CALL[prefix]}, metric


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


async def test_kcl_per_call_time_and_success_read_back(localstack_endpoint: AwsEndpoint) -> None:
    """KCL's per-call ``Time`` / ``Success``: one worker on a fresh application takes each
    of the 2 leases with one successful ``TakeLease``; every renewal and scan succeeds; the
    2nd GetRecords call of the consumer is throttled once (injected on the real client), so
    exactly one ``KinesisDataFetcher.getRecords`` attempt is a failure (Success 0)."""
    ep = localstack_endpoint
    _, records = make_events(200, seed=13)
    async with fresh_stream(ep, 2, "cwt") as (stream, _):
        real = kinesis_client(ep)
        await asyncio.to_thread(put_all, real, stream, records)
        kinesis = ExceptionThrowingKinesisClient(
            real, [InjectedError("get_records", "ProvisionedThroughputExceededException",
                                 frozenset({2}))]
        )  # fmt: skip
        config = ConsumerConfig(
            app_name=unique("cwt"), stream=stream, initial_position=InitialPosition.trim_horizon(),
            take_interval=0.5, idle_time=0.2, failover_time=3.0,
        )  # fmt: skip
        publisher = CloudWatchPublisher(ep, interval=3600)
        consumer = KinesisConsumer(config, ep, kinesis=kinesis)
        reporter = KinesisCloudWatchReporter.of(consumer)
        reporter.report(publisher)  # the first report turns the timings on, before start
        try:
            with publisher:  # only the flush on exit sends
                async with consumer:
                    await asyncio.wait_for(read_all(consumer, 200), 120)
                    await asyncio.wait_for(renewed_twice(consumer), 60)
                    reporter.report(publisher)
                    worker = consumer.worker_id
                    gets = {s.shard_id: s.get_records_calls for s in consumer.metrics().shards}
        finally:
            await DynamoDBLeaseStore(ep, config.app_name).delete_table()
    cw, app = ep.client("cloudwatch"), config.app_name
    take = {"Operation": "TakeLeases", "WorkerIdentifier": worker}
    assert stat(cw, app, "TakeLease.Success", take, "SampleCount") == 2
    assert stat(cw, app, "TakeLease.Success", take, "Sum") == 2
    assert stat(cw, app, "TakeLease.Time", take, "SampleCount") == 2
    cycles = stat(cw, app, "Success", take, "SampleCount")
    assert cycles is not None
    assert cycles >= 1
    assert stat(cw, app, "Success", take, "Sum") == cycles
    assert stat(cw, app, "ListLeases.Success", take, "Sum") == cycles  # one scan a cycle
    renew = {"Operation": "RenewAllLeases", "WorkerIdentifier": worker}
    renewals = stat(cw, app, "Success", renew, "SampleCount")
    assert renewals is not None
    assert renewals >= 2
    assert stat(cw, app, "Success", renew, "Sum") == renewals
    writes = stat(cw, app, "RenewLease.Success", renew, "SampleCount")
    assert writes is not None
    assert writes >= 2 * 2 - 2  # 2 leases, the first cycle may run before the takes
    assert stat(cw, app, "RenewLease.Success", renew, "Sum") == writes
    check_fetcher_calls(cw, app, gets, injected_failures=1)


def check_fetcher_calls(cw: Any, app: str, gets: dict[str, int], injected_failures: int) -> None:
    """Per shard: one GetShardIterator, every GetRecords attempt timed, its successes the
    reader's own count; the failed attempts are exactly the injected ones."""
    attempts = failures = 0.0
    for shard, got in gets.items():
        at = {"Operation": PROCESS_TASK, "ShardId": shard}
        n = stat(cw, app, "KinesisDataFetcher.getRecords.Success", at, "SampleCount") or 0
        ok = stat(cw, app, "KinesisDataFetcher.getRecords.Success", at, "Sum") or 0
        assert ok == got, shard
        attempts, failures = attempts + n, failures + n - ok
        assert stat(cw, app, "KinesisDataFetcher.getRecords.Time", at, "SampleCount") == n
        assert stat(cw, app, "KinesisDataFetcher.getShardIterator.Success", at, "Sum") == 1
    assert failures == injected_failures
    assert attempts == sum(gets.values()) + injected_failures


async def renewed_twice(consumer: KinesisConsumer) -> None:
    """Wait until two renewal cycles ran after the leases were taken."""
    start = consumer.metrics().leases.renew_cycles
    while consumer.metrics().leases.renew_cycles < start + 2:
        await asyncio.sleep(0.1)
