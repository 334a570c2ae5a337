"""Streaming queries' metrics in CloudWatch, through the query listener API.

:func:`publish_to_cloudwatch` starts a :class:`~streamkit.metrics.cloudwatch.CloudWatchPublisher`
and adds a :class:`CloudWatchQueryListener` to ``sk.streams``; every query of the process
then publishes, under ``namespace`` (default ``streamkit``) with a ``Query`` dimension:

==========================  ============  =========  =========================================
metric                      unit          level      per batch
==========================  ============  =========  =========================================
``InputRows``               Count         SUMMARY    rows decoded
``ProcessedRowsPerSecond``  Count/Second  SUMMARY    rows over the batch's duration
``InputRowsPerSecond``      Count/Second  DETAILED   rows over the time since the last batch
``OutputRows``              Count         DETAILED   rows handed to the sink
``BatchDuration``           Milliseconds  SUMMARY    ``Phase=total``; DETAILED per phase
``WatermarkDelay``          Milliseconds  SUMMARY    newest event time minus the watermark
``LateRows``                Count         SUMMARY    rows behind the watermark
``DeadLetters``             Count         SUMMARY    records not decoded; DETAILED by ``Reason``
``StateRows``               Count         DETAILED   groups held in state
``PartitionRecords``        Count         DETAILED   per ``Partition`` (shard)
==========================  ============  =========  =========================================

A connector adds its own metrics with :func:`register_source_reporter` (the Kinesis
connector publishes the KCL's metrics of the query's consumer, under its app name).
Listener calls run on the listener thread; the publisher's sends on its own thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from streamkit.metrics.cloudwatch import CloudWatchPublisher
from streamkit.metrics.cloudwatch_data import ALL_DIMENSIONS, MetricsLevel
from streamkit.metrics.dead_letters import dead_letters_by_reason
from streamkit.streaming.listeners import (
    QueryIdleEvent,
    QueryProgressEvent,
    QueryStartedEvent,
    QueryTerminatedEvent,
    StreamingQueryListener,
    streams,
)

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint

DEFAULT_NAMESPACE = "streamkit"
PHASES = ("fetch", "decode", "execute", "state", "sink", "commit")
S, D = MetricsLevel.SUMMARY, MetricsLevel.DETAILED


class SourceReporter(Protocol):
    """Publishes a source's own metrics (called on the listener thread after each batch,
    idle event and at termination)."""

    def report(self, publisher: CloudWatchPublisher) -> None:
        """Add the source's figures since the last call to ``publisher``."""


SourceReporterFactory = Callable[[Any], "SourceReporter | None"]
"""Given a running query, a reporter for its source, or None when it is not of its kind."""
_factories: list[SourceReporterFactory] = []


def register_source_reporter(factory: SourceReporterFactory) -> None:
    """Let ``factory`` attach a :class:`SourceReporter` to every query it recognises."""
    if factory not in _factories:
        _factories.append(factory)


class CloudWatchQueryListener(StreamingQueryListener):
    """Adds every query's figures to ``publisher`` (see the module docstring)."""

    def __init__(self, publisher: CloudWatchPublisher, namespace: str = DEFAULT_NAMESPACE) -> None:
        self.publisher, self.namespace = publisher, namespace
        self._sources: dict[str, SourceReporter | None] = {}
        self._lock = threading.Lock()

    def on_query_started(self, event: QueryStartedEvent) -> None:
        """Find the source's reporter while the query is surely active."""
        self._reporter(event.id)

    def on_query_progress(self, event: QueryProgressEvent) -> None:
        """Publish one batch's figures, then the source's."""
        p, q = event.progress, {"Query": event.name}
        self._add("InputRows", p.num_input_rows, "Count", q, S)
        self._add("ProcessedRowsPerSecond", p.processed_rows_per_second, "Count/Second", q, S)
        self._add("InputRowsPerSecond", p.input_rows_per_second, "Count/Second", q, D)
        self._add("OutputRows", p.output_rows, "Count", q, D)
        self._add("LateRows", p.late_rows, "Count", q, S)
        self._add("DeadLetters", p.dead_letters, "Count", q, S)
        self._add("StateRows", p.state_rows, "Count", q, D)
        self._add(
            "BatchDuration", p.durations.total * 1000, "Milliseconds", {**q, "Phase": "total"}, S
        )
        for phase in PHASES:
            ms = getattr(p.durations, phase) * 1000
            self._add("BatchDuration", ms, "Milliseconds", {**q, "Phase": phase}, D)
        if p.watermark is not None and event.newest_event is not None:
            delay = (event.newest_event - p.watermark).total_seconds() * 1000
            self._add("WatermarkDelay", delay, "Milliseconds", q, S)
        if p.dead_letters and self.publisher.enabled(D):
            for reason, n in dead_letters_by_reason(event.id, p).items():
                self._add("DeadLetters", n, "Count", {**q, "Reason": reason}, D)
        for part in p.partitions:
            self._add(
                "PartitionRecords", part.records, "Count", {**q, "Partition": part.partition}, D
            )
        self._report_source(event.id)

    def on_query_idle(self, event: QueryIdleEvent) -> None:
        """The source's figures (a Kinesis lag keeps being published while no data come)."""
        self._report_source(event.id)

    def on_query_terminated(self, event: QueryTerminatedEvent) -> None:
        """The source's last figures; the query's reporter is forgotten."""
        self._report_source(event.id)
        with self._lock:
            self._sources.pop(event.id, None)

    def _add(
        self, name: str, value: float, unit: str, dims: dict[str, str], level: MetricsLevel
    ) -> None:
        self.publisher.add(self.namespace, name, value, unit, dimensions=dims, level=level)

    def _reporter(self, query_id: str) -> SourceReporter | None:
        with self._lock:
            if query_id not in self._sources:
                query = streams.get(query_id)
                if query is None:
                    return None
                self._sources[query_id] = _reporter_for(query)
            return self._sources[query_id]

    def _report_source(self, query_id: str) -> None:
        if (reporter := self._reporter(query_id)) is not None:
            reporter.report(self.publisher)


def _reporter_for(query: Any) -> SourceReporter | None:
    for factory in _factories:
        if (reporter := factory(query)) is not None:
            return reporter
    return None


class CloudWatchMetrics:
    """What :func:`publish_to_cloudwatch` started: the publisher and the listener."""

    def __init__(self, publisher: CloudWatchPublisher, listener: CloudWatchQueryListener) -> None:
        self.publisher, self.listener = publisher, listener

    def flush(self, timeout: float = 30.0) -> bool:
        """Deliver the queued query events, then send everything to CloudWatch now."""
        streams.flush(timeout)
        return self.publisher.flush(timeout)

    def stop(self) -> None:
        """Unsubscribe after the queued events were handled, then flush and stop."""
        streams.flush()
        streams.remove_listener(self.listener)
        self.publisher.stop()


def publish_to_cloudwatch(
    endpoint: AwsEndpoint | None = None,
    *,
    namespace: str = DEFAULT_NAMESPACE,
    level: MetricsLevel | str = MetricsLevel.DETAILED,
    enabled_dimensions: Iterable[str] = (ALL_DIMENSIONS,),
    interval: float = 10.0,
    publisher: CloudWatchPublisher | None = None,
) -> CloudWatchMetrics:
    """Publish every query's metrics (and its source's) to CloudWatch until ``stop()``.

    ``publisher`` replaces the one built from the other arguments (it is started here).
    """
    pub = publisher or CloudWatchPublisher(
        endpoint, level=level, enabled_dimensions=enabled_dimensions, interval=interval
    )
    listener = CloudWatchQueryListener(pub.start(), namespace)
    streams.add_listener(listener)
    return CloudWatchMetrics(pub, listener)
