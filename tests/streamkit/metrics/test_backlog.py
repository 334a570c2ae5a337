"""The worker backlog, the signal to scale on: the largest MillisBehindLatest of the shards
a worker holds. Checked by rule (plain Python over a snapshot with held and released
shards), scraped over HTTP from Prometheus, and read back from CloudWatch (LocalStack)
with GetMetricData. The snapshots are built here, so the lags are known and non-zero."""

from __future__ import annotations

import urllib.request
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families
from streamkit_kinesis.consumer.metrics import ConsumerMetrics, ShardMetrics
from streamkit_kinesis.leases import LeaseMetrics
from streamkit_kinesis.leases.metrics import CallTimings
from streamkit_kinesis.metrics_cloudwatch import KinesisCloudWatchReporter
from streamkit_kinesis.metrics_prometheus import KinesisCollector

from streamkit.config import AwsEndpoint
from streamkit.metrics.cloudwatch import CloudWatchPublisher

from .cloudwatch_read import stat, unique_namespace

SHARDS = (
    ShardMetrics("shardId-0", millis_behind_latest=300, held=True),
    ShardMetrics("shardId-1", millis_behind_latest=1200, held=True),
    ShardMetrics("shardId-2", millis_behind_latest=9000, held=False),  # released: not ours
    ShardMetrics("shardId-3", millis_behind_latest=None, held=True),  # not read yet
)
EXPECTED_MS = 1200  # max over the held shards' known lags


def snapshot(worker: str, shards: tuple[ShardMetrics, ...] = SHARDS) -> ConsumerMetrics:
    leases = LeaseMetrics(worker, sum(s.held for s in shards), 0, 0, 0, 0, 0, 0, 0, 0, 0)
    return ConsumerMetrics(worker, shards, leases, 0)


def test_backlog_is_the_largest_lag_of_the_held_shards() -> None:
    assert snapshot("w").backlog_millis == EXPECTED_MS
    assert snapshot("w", SHARDS[2:3]).backlog_millis == 0  # holds nothing
    assert snapshot("w", ()).backlog_millis == 0


def test_backlog_scraped_from_prometheus_over_http() -> None:
    registry = CollectorRegistry()
    pairs = [("q1", snapshot("w-a")), ("q1", snapshot("w-b", SHARDS[:1]))]
    registry.register(KinesisCollector(lambda: pairs))
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as reply:
            text = reply.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    got = {
        s.labels["worker"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "streamkit_kinesis_worker_backlog_seconds"
    }
    assert got == {"w-a": EXPECTED_MS / 1000, "w-b": 0.3}


class FakeConsumer:
    """Only what the reporter reads: ``metrics()``, ``config.app_name`` and the (empty)
    per-call timings."""

    def __init__(self, app: str, metrics: ConsumerMetrics) -> None:
        self.config = SimpleNamespace(app_name=app)
        self._metrics = metrics
        self.call_timings = CallTimings()

    def metrics(self) -> ConsumerMetrics:
        return self._metrics


@pytest.mark.integration
@pytest.mark.localstack
def test_backlog_read_back_from_cloudwatch(localstack_endpoint: AwsEndpoint) -> None:
    app = unique_namespace("sk-backlog")
    with CloudWatchPublisher(localstack_endpoint, interval=3600) as publisher:
        for worker, shards in (("w-a", SHARDS), ("w-b", SHARDS[:1])):
            consumer: Any = FakeConsumer(app, snapshot(worker, shards))
            KinesisCloudWatchReporter.of(consumer).report(publisher)
    cw = localstack_endpoint.client("cloudwatch")
    backlog = "BacklogMillis"
    at_a = {"Operation": "Backlog", "WorkerIdentifier": "w-a"}
    at_b = {"Operation": "Backlog", "WorkerIdentifier": "w-b"}
    assert stat(cw, app, backlog, at_a, "Maximum") == EXPECTED_MS
    assert stat(cw, app, backlog, at_b, "Maximum") == 300
    assert stat(cw, app, backlog, {"Operation": "Backlog"}, "Maximum") == EXPECTED_MS  # fleet
