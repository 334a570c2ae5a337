"""Reading metrics back from CloudWatch (LocalStack) for the CloudWatch tests: plain
``GetMetricData`` / ``ListMetrics`` over a wide time range (LocalStack aggregates by
minute), the buckets combined here."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

WIDE = timedelta(hours=6)
"""Time range either side of now searched when reading back (no timing assumptions)."""


def unique_namespace(prefix: str) -> str:
    """A namespace no other test writes to."""
    return f"{prefix}/{uuid.uuid4().hex[:10]}"


def stat(cw: Any, namespace: str, name: str, dims: dict[str, str], statistic: str) -> float | None:
    """``statistic`` (Sum, SampleCount, Maximum, Minimum) of one metric with exactly these
    dimensions over now ± :data:`WIDE`; None when CloudWatch has no data for it."""
    now = datetime.now(UTC)
    metric = {
        "Namespace": namespace,
        "MetricName": name,
        "Dimensions": [{"Name": k, "Value": v} for k, v in sorted(dims.items())],
    }
    reply = cw.get_metric_data(
        MetricDataQueries=[
            {"Id": "m", "MetricStat": {"Metric": metric, "Period": 3600, "Stat": statistic}}
        ],
        StartTime=now - WIDE,
        EndTime=now + WIDE,
    )
    values: list[float] = [v for r in reply["MetricDataResults"] for v in r["Values"]]
    if not values:
        return None
    if statistic == "Maximum":
        return max(values)
    if statistic == "Minimum":
        return min(values)
    return sum(values)


def dimension_sets(cw: Any, namespace: str) -> dict[str, set[frozenset[str]]]:
    """Metric name -> the sets of dimension names it was published with."""
    out: dict[str, set[frozenset[str]]] = {}
    for page in cw.get_paginator("list_metrics").paginate(Namespace=namespace):
        for m in page["Metrics"]:
            names = frozenset(d["Name"] for d in m.get("Dimensions", []))
            out.setdefault(m["MetricName"], set()).add(names)
    return out


def dimension_values(cw: Any, namespace: str, name: str, dimension: str) -> set[str]:
    """The values of ``dimension`` that metric ``name`` was published with."""
    out = set()
    for page in cw.get_paginator("list_metrics").paginate(Namespace=namespace, MetricName=name):
        for m in page["Metrics"]:
            out |= {d["Value"] for d in m.get("Dimensions", []) if d["Name"] == dimension}
    return out


def count_metrics(cw: Any, namespace: str) -> int:
    """How many distinct metrics (name + dimensions) ``namespace`` holds."""
    pages = cw.get_paginator("list_metrics").paginate(Namespace=namespace)
    return sum(len(page["Metrics"]) for page in pages)
