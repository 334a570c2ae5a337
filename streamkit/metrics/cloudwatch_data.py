"""CloudWatch metric data without I/O: levels, dimension filtering, accumulation and the
split of data into ``PutMetricData`` requests that respect the API's limits.

Accumulation follows the KCL's ``MetricAccumulatingQueue``: values with the same namespace,
name, dimensions and unit are merged until the next flush, so a value recorded every batch
costs one datum per flush interval. A merged datum keeps every value (``Values``/``Counts``)
while it has at most 150 distinct values, so CloudWatch can still compute percentiles; past
that it becomes a ``StatisticValues`` set (count, sum, min, max).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping
    from datetime import datetime

MAX_DATA_PER_CALL = 1000
"""``PutMetricData`` accepts at most 1000 metric data per request."""
MAX_REQUEST_BYTES = 1_000_000
"""Request bodies are kept under this (the API's limit is 1 MB per HTTP POST)."""
MAX_VALUES_PER_DATUM = 150
"""A datum's ``Values`` array holds at most 150 distinct values."""
MAX_DIMENSIONS = 30
"""A datum has at most 30 dimensions (more are dropped, by name order)."""
MAX_NAME_LENGTH = 255
"""Longest metric name CloudWatch accepts."""
MAX_DIMENSION_VALUE = 1024
"""Longest dimension value CloudWatch accepts (longer ones are cut)."""
ALL_DIMENSIONS = "ALL"
"""In ``enabled_dimensions``: keep every dimension (the KCL's ``METRICS_DIMENSIONS_ALL``)."""
ALWAYS_ENABLED_DIMENSIONS = frozenset({"Operation"})
"""Dimensions kept whatever ``enabled_dimensions`` says (the KCL's
``METRICS_ALWAYS_ENABLED_DIMENSIONS``)."""


class MetricsLevel(IntEnum):
    """How much to publish, with the KCL's names and values (``MetricsLevel.java``).

    A metric is published when its level is at least the configured one: DETAILED publishes
    everything, SUMMARY only the most significant metrics, NONE nothing.
    """

    DETAILED = 9000
    SUMMARY = 10000
    NONE = 2**31 - 1

    @classmethod
    def of(cls, level: MetricsLevel | str) -> MetricsLevel:
        """The level named ``level`` (case-insensitive), or ``level`` itself."""
        return level if isinstance(level, MetricsLevel) else cls[level.upper()]


@dataclass(frozen=True)
class MetricKey:
    """What identifies one CloudWatch metric (plus its unit, which must not change)."""

    namespace: str
    """The CloudWatch namespace."""
    name: str
    """The metric name (``RecordsProcessed``)."""
    dimensions: tuple[tuple[str, str], ...]
    """``(name, value)`` pairs sorted by name."""
    unit: str
    """A CloudWatch unit: ``Count``, ``Bytes``, ``Milliseconds``, ``Count/Second``."""


def filter_dimensions(
    dimensions: Mapping[str, str], enabled: frozenset[str]
) -> tuple[tuple[str, str], ...]:
    """The dimensions to publish, as the KCL's ``FilteringMetricsScope`` does: those not
    enabled are dropped (the datum then merges with the same metric without them); empty
    values are dropped too (CloudWatch rejects them), long ones cut to 1024 characters."""
    keep_all = ALL_DIMENSIONS in enabled
    kept = sorted(
        (k, v[:MAX_DIMENSION_VALUE])
        for k, v in dimensions.items()
        if v and (keep_all or k in enabled or k in ALWAYS_ENABLED_DIMENSIONS)
    )
    return tuple(kept[:MAX_DIMENSIONS])


class Accumulator:
    """Values merged by :class:`MetricKey` until :meth:`drain` (not thread-safe; the
    publisher holds a lock around it)."""

    def __init__(self) -> None:
        self._values: dict[MetricKey, Counter[float]] = {}

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def add(self, key: MetricKey, value: float, count: int = 1) -> None:
        """Merge ``count`` samples of ``value`` into ``key``'s datum."""
        self._values.setdefault(key, Counter())[float(value)] += count

    def drain(self, timestamp: datetime) -> list[tuple[str, dict[str, Any]]]:
        """Every merged datum as ``(namespace, PutMetricData datum)``, stamped with
        ``timestamp``; the accumulator is empty afterwards."""
        out = [
            (key.namespace, to_datum(key, values, timestamp))
            for key, values in self._values.items()
        ]
        self._values = {}
        return out


def to_datum(key: MetricKey, values: Counter[float], timestamp: datetime) -> dict[str, Any]:
    """One ``PutMetricData`` datum: ``Value`` for one sample, ``Values``/``Counts`` for up to
    150 distinct values, else ``StatisticValues``."""
    datum: dict[str, Any] = {"MetricName": key.name, "Timestamp": timestamp, "Unit": key.unit}
    if key.dimensions:
        datum["Dimensions"] = [{"Name": n, "Value": v} for n, v in key.dimensions]
    if len(values) == 1 and sum(values.values()) == 1:
        datum["Value"] = next(iter(values))
    elif len(values) <= MAX_VALUES_PER_DATUM:
        datum["Values"] = list(values)
        datum["Counts"] = [float(n) for n in values.values()]
    else:
        datum["StatisticValues"] = {
            "SampleCount": float(sum(values.values())),
            "Sum": math.fsum(v * n for v, n in values.items()),
            "Minimum": min(values),
            "Maximum": max(values),
        }
    return datum


def encoded_size(datum: Mapping[str, Any]) -> int:
    """An upper bound of the datum's bytes in a request, measured in the most verbose wire
    format botocore may use (the query protocol: ``MetricData.member.1000.X=value&``)."""
    prefix = len("MetricData.member.1000.")
    return sum(prefix + len(path) + len(quote(value, safe="")) + 2 for path, value in _flat(datum))


def _flat(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _flat(v, f"{path}.{k}" if path else k)
    elif isinstance(value, list):
        for i, v in enumerate(value, 1):
            yield from _flat(v, f"{path}.member.{i}")
    else:
        text = value.isoformat() if hasattr(value, "isoformat") else repr(value)
        yield path, text


def split_requests(
    data: Iterable[tuple[str, dict[str, Any]]],
    max_data: int = MAX_DATA_PER_CALL,
    max_bytes: int = MAX_REQUEST_BYTES,
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Group ``(namespace, datum)`` pairs, in order, into ``(namespace, data)`` requests of
    one namespace, at most ``max_data`` data and ``max_bytes`` (by :func:`encoded_size`)
    each. Consecutive data of one namespace share requests."""
    namespace: str | None = None
    batch: list[dict[str, Any]] = []
    size = 0
    for ns, datum in data:
        n = encoded_size(datum)
        full = len(batch) >= max_data or size + n > max_bytes - 2 * len(ns) - 64
        if batch and (ns != namespace or full):
            assert namespace is not None
            yield namespace, batch
            batch, size = [], 0
        namespace = ns
        batch.append(datum)
        size += n
    if batch:
        assert namespace is not None
        yield namespace, batch
