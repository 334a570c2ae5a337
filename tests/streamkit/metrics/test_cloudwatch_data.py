"""The pure parts of the CloudWatch publisher (no server): KCL-style level and dimension
filtering, how merged values become a datum, and the split into requests within the API's
limits. Expected values are worked out by hand from the inputs."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from streamkit.metrics.cloudwatch import is_transient
from streamkit.metrics.cloudwatch_data import (
    MetricKey,
    MetricsLevel,
    encoded_size,
    filter_dimensions,
    split_requests,
    to_datum,
)

T = datetime(2026, 1, 1, tzinfo=UTC)
KEY = MetricKey("ns", "M", (), "Count")


def test_levels_compare_as_the_kcl_values() -> None:
    assert MetricsLevel.of("summary") is MetricsLevel.SUMMARY
    assert MetricsLevel.DETAILED < MetricsLevel.SUMMARY < MetricsLevel.NONE
    assert (MetricsLevel.DETAILED.value, MetricsLevel.SUMMARY.value) == (9000, 10000)


def test_disabled_dimensions_are_dropped_and_operation_is_always_kept() -> None:
    dims = {"ShardId": "s-1", "WorkerIdentifier": "w", "Operation": "ProcessTask", "Empty": ""}
    assert filter_dimensions(dims, frozenset({"ALL"})) == (
        ("Operation", "ProcessTask"), ("ShardId", "s-1"), ("WorkerIdentifier", "w"),
    )  # fmt: skip
    assert filter_dimensions(dims, frozenset({"ShardId"})) == (
        ("Operation", "ProcessTask"), ("ShardId", "s-1"),
    )  # fmt: skip
    assert filter_dimensions({"Long": "x" * 2000}, frozenset({"ALL"})) == (("Long", "x" * 1024),)


def test_one_sample_is_a_value_few_are_values_and_many_a_statistic_set() -> None:
    assert to_datum(KEY, Counter({3.0: 1}), T)["Value"] == 3.0
    few = to_datum(KEY, Counter({1.0: 2, 5.0: 1}), T)
    assert (few["Values"], few["Counts"]) == ([1.0, 5.0], [2.0, 1.0])
    many = to_datum(KEY, Counter({float(v): 1 for v in range(151)}), T)
    assert many["StatisticValues"] == {
        "SampleCount": 151.0, "Sum": 150 * 151 / 2, "Minimum": 0.0, "Maximum": 150.0,
    }  # fmt: skip


def datum(i: int, pad: int = 0) -> dict[str, Any]:
    dims = [{"Name": "Item", "Value": str(i) + "x" * pad}]
    return {"MetricName": "M", "Timestamp": T, "Unit": "Count", "Value": 1.0, "Dimensions": dims}


def test_requests_hold_at_most_1000_data_of_one_namespace() -> None:
    data = [("a", datum(i)) for i in range(2001)] + [("b", datum(i)) for i in range(3)]
    got = [(ns, len(batch)) for ns, batch in split_requests(data)]
    assert got == [("a", 1000), ("a", 1000), ("a", 1), ("b", 3)]


def test_requests_stay_under_the_byte_budget() -> None:
    data = [("a", datum(i, pad=1000)) for i in range(50)]
    one = encoded_size(data[0][1])
    assert one > 1000
    budget = 10 * one + 200  # room for 10 data (plus the namespace's share)
    sizes = [len(batch) for _, batch in split_requests(data, max_bytes=budget)]
    assert sizes == [10] * 5


@pytest.mark.parametrize(
    ("response", "transient"),
    [
        (None, True),  # no answer: connection refused, reset, timeout
        ({"Error": {"Code": "Throttling"}, "ResponseMetadata": {"HTTPStatusCode": 400}}, True),
        ({"Error": {"Code": "InternalFailure"}, "ResponseMetadata": {"HTTPStatusCode": 500}}, True),
        ({"Error": {"Code": "X"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, True),
        ({"Error": {"Code": "InvalidParameterValue"}, "ResponseMetadata": {"HTTPStatusCode": 400}},
         False),
    ],
)  # fmt: skip
def test_which_failures_are_retried(response: dict[str, Any] | None, transient: bool) -> None:
    error = Exception("boom")
    if response is not None:
        error.response = response  # type: ignore[attr-defined]
    assert is_transient(error) is transient


def test_a_request_botocore_refuses_to_build_is_not_retried() -> None:
    from botocore.exceptions import ParamValidationError

    assert is_transient(ParamValidationError(report="MetricData: missing MetricName")) is False


def test_a_name_cloudwatch_would_reject_is_counted_not_queued() -> None:
    from streamkit.metrics.cloudwatch import CloudWatchPublisher

    publisher = CloudWatchPublisher(interval=3600)  # never started: no client, no thread
    publisher.add("ns", "N" * 256, 1)
    publisher.add("ns", "N" * 255, 1)
    stats = publisher.stats()
    assert (stats.rejected, stats.queued, stats.sent) == (1, 0, 0)
    assert publisher.flush() is False  # one value merged, nothing sent


def test_past_the_bound_new_metrics_are_dropped_and_known_ones_still_merge() -> None:
    from streamkit.metrics.cloudwatch import CloudWatchPublisher

    publisher = CloudWatchPublisher(interval=3600, max_queue_size=2)  # never started
    for name in ("A", "B", "C", "A", "B", "D"):
        publisher.add("ns", name, 1)
    assert publisher.stats().dropped == 2  # C and D: two metrics are merged already
