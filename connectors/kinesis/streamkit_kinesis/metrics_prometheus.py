"""The Kinesis consumer's figures as Prometheus metrics, read at scrape time.

:func:`install` (called by the connector's plugin) adds one collector to
:mod:`streamkit.metrics`; it needs ``prometheus_client`` only when scraped. On each scrape
it takes :meth:`KinesisConsumer.metrics` of every active query reading a Kinesis source,
and of each consumer of this process's fleet worker (:mod:`streamkit_kinesis.fleet.metrics`:
``query`` is then the lease table's app name, ``<app>`` or ``<app>-exchange``), and
reports, labelled by ``query`` and ``worker``: leases held, taken, stolen, lost, released
and renewed; the worker's backlog (the largest MillisBehindLatest of the shards it
holds, the figure to scale on); lease-table calls by ``operation``; per ``shard`` records, bytes,
GetRecords calls, throttles, lag and whether this worker holds it. Counters are the
consumer's own totals since it started (a restarted query starts again from zero, which
Prometheus' ``rate`` treats as a counter reset). A fleet worker also reports
``streamkit_fleet_refused_claims`` (labelled by ``query`` = its app name and ``worker``):
its tasks' fence claims refused (:mod:`streamkit_kinesis.fleet.refusals`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from streamkit._deps import require

if TYPE_CHECKING:
    from streamkit_kinesis.consumer.metrics import ConsumerMetrics

_installed = threading.Event()

LEASE_COUNTERS = (
    ("takes", "streamkit_kinesis_lease_takes", "Unowned or expired leases taken."),
    ("steals", "streamkit_kinesis_lease_steals", "Leases taken from a live worker."),
    ("losses", "streamkit_kinesis_lease_losses", "Leases lost (renewal rejected, expired)."),
    ("releases", "streamkit_kinesis_lease_releases", "Leases released on shutdown."),
    ("renewals", "streamkit_kinesis_lease_renewals", "Successful lease renewals."),
)
SHARD_COUNTERS = (
    ("records", "streamkit_kinesis_shard_records", "Records delivered from the shard."),
    ("bytes", "streamkit_kinesis_shard_bytes", "Payload bytes delivered from the shard."),
    ("get_records_calls", "streamkit_kinesis_get_records_calls", "Successful GetRecords."),
    ("throttles", "streamkit_kinesis_shard_throttles", "Throttled Kinesis calls (retried)."),
)


def install() -> None:
    """Register the collector with :mod:`streamkit.metrics` (once per process)."""
    if _installed.is_set():
        return
    _installed.set()
    from streamkit.metrics import register_collector

    register_collector(KinesisCollector())


def _snapshots() -> Iterator[tuple[str, ConsumerMetrics]]:
    """``(query name, consumer metrics)`` of every active query reading Kinesis, then of
    the fleet workers' consumers (one collector: no family is exposed twice)."""
    from streamkit.streaming.listeners import streams
    from streamkit_kinesis.consumer.metrics import read_metrics
    from streamkit_kinesis.fleet.metrics import fleet_snapshots
    from streamkit_kinesis.source import KinesisStreamSource

    for query in streams.active:
        source = query.source
        consumer = source.consumer if isinstance(source, KinesisStreamSource) else None
        if consumer is not None:
            yield query.name, read_metrics(consumer)
    yield from fleet_snapshots()


def _refusals() -> Iterator[tuple[str, str, int]]:
    from streamkit_kinesis.fleet.metrics import fleet_refusals

    return fleet_refusals()


class KinesisCollector:
    """A ``prometheus_client`` collector of the Kinesis consumers' metrics: those of every
    active Kinesis query, or of what ``snapshots()`` yields (``(query, metrics)`` pairs);
    and the fence claims refused in this process's fleet workers, or what ``refusals()``
    yields (``(app name, worker id, refused)``)."""

    def __init__(
        self,
        snapshots: Callable[[], Iterable[tuple[str, ConsumerMetrics]]] = _snapshots,
        refusals: Callable[[], Iterable[tuple[str, str, int]]] = _refusals,
    ) -> None:
        self._snapshots, self._refusals = snapshots, refusals

    def describe(self) -> list[Any]:
        """Nothing up front (the series exist only while a Kinesis query runs)."""
        return []

    def collect(self) -> Iterator[Any]:
        """One family per figure, a sample per query/worker (and shard or operation)."""
        core = require("prometheus_client.core", "metrics")
        qw = ["query", "worker"]
        held = core.GaugeMetricFamily("streamkit_kinesis_leases_held", "Leases held now.",
                                      labels=qw)  # fmt: skip
        leases = {f: core.CounterMetricFamily(n, d, labels=qw) for f, n, d in LEASE_COUNTERS}
        calls = core.CounterMetricFamily(
            "streamkit_kinesis_lease_table_calls", "Lease-table (DynamoDB) calls by operation.",
            labels=[*qw, "operation"],
        )  # fmt: skip
        qws = [*qw, "shard"]
        shards = {f: core.CounterMetricFamily(n, d, labels=qws) for f, n, d in SHARD_COUNTERS}
        lag = core.GaugeMetricFamily(
            "streamkit_kinesis_shard_lag_seconds", "MillisBehindLatest of the last read / 1000.",
            labels=qws,
        )  # fmt: skip
        owned = core.GaugeMetricFamily(
            "streamkit_kinesis_shard_held", "1 while this worker holds the shard.", labels=qws
        )
        backlog = core.GaugeMetricFamily(
            "streamkit_kinesis_worker_backlog_seconds",
            "The worker's backlog (scale on it): max MillisBehindLatest of its shards / 1000.",
            labels=qw,
        )  # fmt: skip
        for name, m in self._snapshots():
            who = [name, m.worker_id]
            held.add_metric(who, m.leases.held)
            backlog.add_metric(who, m.backlog_millis / 1000)
            for f, family in leases.items():
                family.add_metric(who, getattr(m.leases, f))
            for op, n in m.dynamodb_calls_by_operation.items():
                calls.add_metric([*who, op], n)
            for s in m.shards:
                at = [*who, s.shard_id]
                for f, family in shards.items():
                    family.add_metric(at, getattr(s, f))
                if s.millis_behind_latest is not None:
                    lag.add_metric(at, s.millis_behind_latest / 1000)
                owned.add_metric(at, 1 if s.held else 0)
        refused = core.CounterMetricFamily(
            "streamkit_fleet_refused_claims",
            "Fleet task fence claims refused in this worker (a race, or a fence ahead).",
            labels=qw,
        )  # fmt: skip
        for app, worker, n in self._refusals():
            refused.add_metric([app, worker], n)
        yield from (held, backlog, *leases.values(), calls, *shards.values(), lag, owned)
        yield refused
