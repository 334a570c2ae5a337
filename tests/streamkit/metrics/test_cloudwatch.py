"""CloudWatch metrics of streaming queries (issue 16 item 3), published to LocalStack's
CloudWatch and read back with ``GetMetricData`` and ``ListMetrics``. Expected figures come
from the rows the test fed, Spark's watermark arithmetic done by hand, and a listener of the
test's own that counts the batches; request counts are taken at the boto3 client by a
botocore event hook (the real request, just observed)."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.config import AwsEndpoint
from streamkit.metrics.cloudwatch import CloudWatchPublisher
from streamkit.metrics.cloudwatch_data import MAX_DATA_PER_CALL, MetricsLevel
from streamkit.metrics.cloudwatch_queries import publish_to_cloudwatch
from streamkit.streaming.listeners import QueryProgressEvent, StreamingQueryListener
from streamkit.streaming.sources.memory import MemoryStream
from streamkit.testing.proxy import TcpProxy

from .cloudwatch_read import count_metrics, dimension_sets, stat, unique_namespace

pytestmark = [pytest.mark.integration, pytest.mark.localstack]

BASE = 1_700_000_000
SCHEMA = pa.schema([pa.field("ts", pa.timestamp("ms", tz="UTC")), pa.field("k", pa.string())])
PHASES = {"fetch", "decode", "execute", "state", "sink", "commit", "total"}


def rows(*seconds: int) -> pa.Table:
    times = [datetime.fromtimestamp(BASE + s, tz=UTC) for s in seconds]
    return pa.table({"ts": times, "k": ["a"] * len(seconds)}, schema=SCHEMA)


class Batches(StreamingQueryListener):
    """Counts the progress events of one query (the test's own tally)."""

    def __init__(self, name: str) -> None:
        self.name, self.count = name, 0

    def on_query_progress(self, event: QueryProgressEvent) -> None:
        if event.name == self.name:
            self.count += 1


def run_fed_query(name: str) -> list[str]:
    """Run the fed query to its end; the reasons of its dead letters."""
    source = MemoryStream(SCHEMA, partitions=2)
    df = sk.read_stream.source(source).with_watermark("ts", "10 seconds")
    counts = df.group_by(sk.window("ts", "10 seconds")).agg(sk.count().alias("n"))
    q = counts.write_stream.output_mode("update").query_name(name).memory(name).start()
    try:
        source.add_rows(rows(0, 5, 12))  # max event B+12: W = B+2, delay 10 s
        source.add_records([b"{not json", b"[1, 2"], partition=1)  # two dead letters
        q.process_all_available()
        source.add_rows(rows(31))  # max event B+31: W = B+21, delay 10 s
        q.process_all_available()
        source.add_rows(rows(1))  # window [0, 10) ended at B+10 <= W: late
        q.process_all_available()
        assert q.dead_letters is not None
        reasons: list[str] = q.dead_letters.column("reason").to_pylist()
        return reasons
    finally:
        q.stop()


def cloudwatch(endpoint: AwsEndpoint) -> Any:
    return endpoint.client("cloudwatch")


def counting(publisher: CloudWatchPublisher) -> tuple[list[int], list[int]]:
    """Body sizes of the PutMetricData requests the publisher's client sends, and the HTTP
    status of each call answered (a call retried after a timeout is sent twice)."""
    sizes: list[int] = []
    answered: list[int] = []

    def sent(request: Any, **_: Any) -> None:
        sizes.append(len(request.body or b""))

    def answer(http_response: Any, **_: Any) -> None:
        answered.append(http_response.status_code)

    events = publisher.client.meta.events
    events.register("before-send.cloudwatch.PutMetricData", sent)
    events.register("after-call.cloudwatch.PutMetricData", answer)
    return sizes, answered


def test_query_metrics_read_back_match_what_was_fed(localstack_endpoint: AwsEndpoint) -> None:
    detailed, summary = unique_namespace("sk-detailed"), unique_namespace("sk-summary")
    # interval 1 h: only the flush on stop sends (a lost final flush leaves CloudWatch empty)
    full = publish_to_cloudwatch(localstack_endpoint, namespace=detailed, interval=3600)
    brief = publish_to_cloudwatch(
        localstack_endpoint, namespace=summary, interval=3600,
        level="SUMMARY", enabled_dimensions=["Query"],
    )  # fmt: skip
    name = "cw_fed"
    tally = Batches(name)
    sk.streams.add_listener(tally)
    try:
        reasons = run_fed_query(name)
    finally:
        full.stop()
        brief.stop()
        sk.streams.remove_listener(tally)
    assert full.publisher.stats().sent > 0
    assert full.publisher.stats().dropped == 0
    cw = cloudwatch(localstack_endpoint)
    qd = {"Query": name}
    assert stat(cw, detailed, "InputRows", qd, "Sum") == 5
    assert stat(cw, detailed, "LateRows", qd, "Sum") == 1
    # LocalStack matches GetMetricData dimensions as a subset (CloudWatch: exactly), so the
    # {Query} total is read where no {Query, Reason} series exists: the SUMMARY namespace
    assert stat(cw, summary, "DeadLetters", qd, "Sum") == 2
    assert len(reasons) == 2
    for reason in set(reasons):
        expected = reasons.count(reason)
        assert stat(cw, detailed, "DeadLetters", {**qd, "Reason": reason}, "Sum") == expected
    assert stat(cw, detailed, "WatermarkDelay", qd, "Maximum") == 10_000
    assert stat(cw, detailed, "WatermarkDelay", qd, "Minimum") == 10_000
    assert tally.count >= 3
    for phase in PHASES:
        got = stat(cw, detailed, "BatchDuration", {**qd, "Phase": phase}, "SampleCount")
        assert got == tally.count, phase
    assert stat(cw, detailed, "PartitionRecords", {**qd, "Partition": "0"}, "Sum") == 5
    assert stat(cw, detailed, "PartitionRecords", {**qd, "Partition": "1"}, "Sum") == 2
    sets = dimension_sets(cw, detailed)
    assert sets["InputRows"] == {frozenset({"Query"})}
    assert sets["BatchDuration"] == {frozenset({"Query", "Phase"})}
    assert sets["DeadLetters"] == {frozenset({"Query"}), frozenset({"Query", "Reason"})}
    # SUMMARY with only the Query dimension: DETAILED metrics are absent, Phase is dropped
    # from the total's datum (KCL's FilteringMetricsScope), so it merges under {Query}
    brief_sets = dimension_sets(cw, summary)
    assert "OutputRows" not in brief_sets
    assert "PartitionRecords" not in brief_sets
    assert brief_sets["BatchDuration"] == {frozenset({"Query"})}
    assert stat(cw, summary, "BatchDuration", qd, "SampleCount") == tally.count
    assert stat(cw, summary, "InputRows", qd, "Sum") == 5


@pytest.mark.parametrize("n", [1, 1000, 1001])
def test_n_data_take_ceil_n_over_1000_calls(localstack_endpoint: AwsEndpoint, n: int) -> None:
    namespace = unique_namespace("sk-batch")
    publisher = CloudWatchPublisher(localstack_endpoint, interval=3600)
    _, answered = counting(publisher)
    with publisher:
        for i in range(n):
            publisher.add(namespace, "Probe", i, dimensions={"Item": str(i)})
        assert publisher.flush(300)  # LocalStack takes seconds per 1000 data when loaded
    assert answered == [200] * math.ceil(n / MAX_DATA_PER_CALL)
    assert publisher.stats().sent == n
    assert count_metrics(cloudwatch(localstack_endpoint), namespace) == n


def test_large_data_are_split_under_one_megabyte(localstack_endpoint: AwsEndpoint) -> None:
    namespace = unique_namespace("sk-size")
    publisher = CloudWatchPublisher(localstack_endpoint, interval=3600)
    sizes, answered = counting(publisher)
    big = {f"D{d}": "x" * 1000 for d in range(10)}  # ~10 kB of dimension values per datum
    n = 300  # ~3 MB in all: more than one request though far fewer than 1000 data
    with publisher:
        for i in range(n):
            publisher.add(namespace, "Big", 1, dimensions={**big, "Item": str(i)})
        assert publisher.flush(300)
    assert len(answered) >= 3
    assert max(sizes) <= 1_048_576
    assert count_metrics(cloudwatch(localstack_endpoint), namespace) == n


def test_values_and_statistic_sets_keep_count_sum_and_extremes(
    localstack_endpoint: AwsEndpoint,
) -> None:
    namespace = unique_namespace("sk-values")
    few = [float(v % 7) for v in range(100)]  # 7 distinct values: Values/Counts
    many = [float(v) for v in range(400)]  # 400 distinct: a StatisticValues set
    publisher = CloudWatchPublisher(localstack_endpoint, interval=3600)
    _, answered = counting(publisher)
    with publisher:
        for v in few:
            publisher.add(namespace, "Few", v, "Milliseconds")
        for v in many:
            publisher.add(namespace, "Many", v, "Milliseconds")
        assert publisher.flush()
    assert answered == [200]  # 500 samples, two data, one call
    cw = cloudwatch(localstack_endpoint)
    for metric, values in (("Few", few), ("Many", many)):
        assert stat(cw, namespace, metric, {}, "SampleCount") == len(values)
        assert stat(cw, namespace, metric, {}, "Sum") == sum(values)
        assert stat(cw, namespace, metric, {}, "Maximum") == max(values)
        assert stat(cw, namespace, metric, {}, "Minimum") == min(values)


def test_level_none_publishes_nothing(localstack_endpoint: AwsEndpoint) -> None:
    publisher = CloudWatchPublisher(localstack_endpoint, level=MetricsLevel.NONE)
    sizes, _ = counting(publisher)
    with publisher:
        publisher.add(unique_namespace("sk-none"), "X", 1, level=MetricsLevel.SUMMARY)
        assert publisher.flush()
    assert sizes == []


def test_an_outage_neither_stalls_the_query_nor_loses_data(
    localstack_endpoint: AwsEndpoint,
) -> None:
    namespace, name = unique_namespace("sk-outage"), "cw_outage"
    assert localstack_endpoint.url is not None
    with TcpProxy.to_url(localstack_endpoint.url) as proxy:
        via_proxy = AwsEndpoint.local(proxy.url, localstack_endpoint.region)
        publisher = CloudWatchPublisher(via_proxy, interval=0.2, max_backoff=1.0)
        metrics = publish_to_cloudwatch(namespace=namespace, publisher=publisher)
        source = MemoryStream(SCHEMA)
        q = sk.read_stream.source(source).write_stream.query_name(name).memory(name).start()
        fed = 0
        try:
            source.add_rows(rows(1, 2))
            fed += 2
            q.process_all_available()
            assert metrics.flush()
            proxy.cut()  # CloudWatch unreachable: connections refused
            cut_at, i = time.monotonic(), 0
            while time.monotonic() - cut_at < 3 or i < 5:  # a few seconds of outage
                i += 1
                source.add_rows(rows(*range(i)))
                fed += i
                q.process_all_available(60)  # the query keeps committing batches
            assert not metrics.flush(10)  # sends fail and the data wait
            assert publisher.stats().failures >= 1
            assert q.is_active
            assert q.exception is None
            proxy.restore()
            assert metrics.flush(60)
        finally:
            q.stop()
            metrics.stop()
    assert publisher.stats().dropped == 0
    assert sk.memory_table(name).num_rows == fed
    cw = cloudwatch(localstack_endpoint)
    assert stat(cw, namespace, "InputRows", {"Query": name}, "Sum") == fed


def test_past_the_bound_the_oldest_data_are_dropped(localstack_endpoint: AwsEndpoint) -> None:
    namespace = unique_namespace("sk-bound")
    assert localstack_endpoint.url is not None
    with TcpProxy.to_url(localstack_endpoint.url) as proxy:
        via_proxy = AwsEndpoint.local(proxy.url, localstack_endpoint.region)
        publisher = CloudWatchPublisher(via_proxy, interval=3600, max_queue_size=5)
        with publisher:
            proxy.cut()
            for wave in range(3):  # 3 waves of 3 metrics: 9 queued, bound 5
                for i in range(3):
                    publisher.add(namespace, f"W{wave}M{i}", wave * 3 + i)
                assert not publisher.flush(30)
            proxy.restore()
            assert publisher.flush(60)
        stats = publisher.stats()
    assert (stats.dropped, stats.sent) == (4, 5)
    kept = set(dimension_sets(cloudwatch(localstack_endpoint), namespace))
    assert kept == {"W1M1", "W1M2", "W2M0", "W2M1", "W2M2"}  # W0*, W1M0 were the oldest
