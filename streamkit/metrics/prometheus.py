"""Prometheus metrics of the process's streaming queries, fed by a query listener.

Needs ``prometheus_client`` (``pip install 'streamkit[metrics]'``). Every figure comes from
the query events (:mod:`streamkit.streaming.listeners`), so the cost is a few label look-ups
per batch on the dispatcher thread, none on the query's loop. Names follow Prometheus
conventions: counters end in ``_total``, durations are ``_seconds``, times are Unix seconds.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from streamkit._deps import require
from streamkit.metrics.dead_letters import dead_letters_by_reason
from streamkit.streaming.listeners import (
    QueryIdleEvent,
    QueryProgressEvent,
    QueryStartedEvent,
    QueryTerminatedEvent,
    StreamingQueryListener,
)
from streamkit.streaming.progress import PhaseDurations, QueryProgress

PHASES = ("fetch", "decode", "execute", "state", "sink", "commit")
"""The ``phase`` label values of ``streamkit_batch_duration_seconds`` (and ``total``)."""
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
"""Histogram buckets of the batch phases, in seconds."""


def _prom() -> Any:
    return require("prometheus_client", "metrics")


class PrometheusListener(StreamingQueryListener):
    """Keeps the ``streamkit_*`` metrics of every query in ``registry`` (a
    ``prometheus_client.CollectorRegistry``; a new one when None)."""

    def __init__(self, registry: Any = None) -> None:
        prom = _prom()
        self.registry = registry if registry is not None else prom.CollectorRegistry()
        q, qp = ["query"], ["query", "partition"]

        def counter(name: str, doc: str, labels: list[str]) -> Any:
            return prom.Counter(name, doc, labels, registry=self.registry)

        def gauge(name: str, doc: str, labels: list[str]) -> Any:
            return prom.Gauge(name, doc, labels, registry=self.registry)

        self.up = gauge("streamkit_query_up", "1 while the query runs, 0 after it ended.", q)
        self.batches = counter("streamkit_batches", "Micro-batches committed.", q)
        self.input_rows = counter("streamkit_input_rows", "Decoded input rows.", q)
        self.output_rows = counter("streamkit_output_rows", "Rows handed to the sink.", q)
        self.input_rate = gauge(
            "streamkit_input_rows_per_second", "Input rows/s of the latest batch.", q
        )
        self.processed_rate = gauge(
            "streamkit_processed_rows_per_second", "Rows/s over the latest batch's duration.", q
        )
        self.duration = prom.Histogram(
            "streamkit_batch_duration_seconds", "Time per phase of a batch.",
            ["query", "phase"], buckets=BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.watermark = gauge(
            "streamkit_watermark_timestamp_seconds", "Event-time watermark (Unix seconds).", q
        )
        self.newest = gauge(
            "streamkit_newest_event_timestamp_seconds", "Newest event time seen (Unix s).", q
        )
        self.watermark_lag = gauge(
            "streamkit_watermark_lag_seconds", "Newest event time minus the watermark.", q
        )
        self.state_rows = gauge("streamkit_state_rows", "Groups held in aggregation state.", q)
        self.late_rows = counter("streamkit_late_rows", "Rows behind the watermark.", q)
        self.dead_letters = counter(
            "streamkit_dead_letters", "Records that could not be decoded, by reason.",
            ["query", "reason"],
        )  # fmt: skip
        self.idle = counter("streamkit_idle_triggers", "Idle events (no data).", q)
        self.part_records = counter(
            "streamkit_partition_records", "Records fetched per partition/shard.", qp
        )
        self.part_lag = gauge(
            "streamkit_partition_lag_seconds", "Behind the tip (Kinesis MillisBehindLatest).", qp
        )
        self.part_backoff = gauge(
            "streamkit_partition_backing_off", "1 while the partition's endpoint is out.", qp
        )
        self.part_errors = gauge(
            "streamkit_partition_consecutive_errors", "Retryable failures in a row.", qp
        )

    def on_query_started(self, event: QueryStartedEvent) -> None:
        """The query's ``up`` gauge goes to 1."""
        self.up.labels(event.name).set(1)

    def on_query_terminated(self, event: QueryTerminatedEvent) -> None:
        """The query's ``up`` gauge goes to 0 (its other series are kept)."""
        self.up.labels(event.name).set(0)

    def on_query_idle(self, event: QueryIdleEvent) -> None:
        """Count the idle trigger; a stalled partition's back-off state is updated."""
        self.idle.labels(event.name).inc()
        if event.progress is not None:
            self._partitions(event.name, event.progress, count=False)

    def on_query_progress(self, event: QueryProgressEvent) -> None:
        """Update every query and partition series from one batch's progress."""
        name, p = event.name, event.progress
        self.batches.labels(name).inc()
        self.input_rows.labels(name).inc(p.num_input_rows)
        self.output_rows.labels(name).inc(p.output_rows)
        self.input_rate.labels(name).set(p.input_rows_per_second)
        self.processed_rate.labels(name).set(p.processed_rows_per_second)
        self._durations(name, p.durations)
        self.state_rows.labels(name).set(p.state_rows)
        self.late_rows.labels(name).inc(p.late_rows)
        self._event_time(name, p.watermark, event.newest_event)
        if p.dead_letters:
            self._dead_letters(event.id, name, p)
        self._partitions(name, p, count=True)

    def _durations(self, name: str, d: PhaseDurations) -> None:
        for phase in PHASES:
            self.duration.labels(name, phase).observe(getattr(d, phase))
        self.duration.labels(name, "total").observe(d.total)

    def _event_time(self, name: str, wm: datetime | None, newest: datetime | None) -> None:
        if wm is not None:
            self.watermark.labels(name).set(wm.timestamp())
        if newest is not None:
            self.newest.labels(name).set(newest.timestamp())
        if wm is not None and newest is not None:
            self.watermark_lag.labels(name).set((newest - wm).total_seconds())

    def _dead_letters(self, query_id: str, name: str, p: QueryProgress) -> None:
        """Count the batch's dead letters by reason (:func:`dead_letters_by_reason`)."""
        for reason, n in dead_letters_by_reason(query_id, p).items():
            self.dead_letters.labels(name, reason).inc(n)

    def _partitions(self, name: str, p: QueryProgress, *, count: bool) -> None:
        for part in p.partitions:
            key = (name, part.partition)
            if count:
                self.part_records.labels(*key).inc(part.records)
            if part.lag_ms is not None:
                self.part_lag.labels(*key).set(part.lag_ms / 1000)
            self.part_backoff.labels(*key).set(1 if part.state == "backing off" else 0)
            self.part_errors.labels(*key).set(part.consecutive_errors)
