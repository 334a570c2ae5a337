"""A fleet worker's consumers in the Prometheus metrics (``streamkit worker --metrics-port``).

A fleet member runs no query of ``sk.streams``, so the connector's collector
(:class:`~streamkit_kinesis.metrics_prometheus.KinesisCollector`) finds its consumers here:
:func:`track` adds a :class:`~streamkit_kinesis.fleet.worker.KinesisFleetWorker`, and
:func:`fleet_snapshots` yields each consumer it has started or is starting (the source
consumer, and the aggregation consumer of a stateful plan), labelled ``query`` = the app name
of its lease table: ``<app>`` for the source shards, ``<app>-exchange`` for the exchange
shards; :func:`fleet_refusals` yields each worker's fence claims refused
(:attr:`~streamkit_kinesis.fleet.refusals.RefusedClaims.refused`), labelled by the app name.
A worker is dropped from the scrape when it is garbage-collected.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

    from streamkit_kinesis.consumer.metrics import ConsumerMetrics
    from streamkit_kinesis.fleet.worker import KinesisFleetWorker

_workers: weakref.WeakSet[KinesisFleetWorker] = weakref.WeakSet()


def track(worker: KinesisFleetWorker) -> None:
    """Report ``worker``'s consumers on every scrape of this process's metrics."""
    _workers.add(worker)


def fleet_snapshots() -> Iterator[tuple[str, ConsumerMetrics]]:
    """``(lease table app name, consumer metrics)`` of every tracked worker's consumers."""
    from streamkit_kinesis.consumer.metrics import read_metrics

    for worker in list(_workers):
        for parts in list(worker.parts):
            consumer = parts.consumer
            yield consumer.config.app_name, read_metrics(consumer)


def fleet_refusals() -> Iterator[tuple[str, str, int]]:
    """``(app name, worker id, fence claims refused)`` of every tracked worker: a claim
    refused by a task's fence, a race with a newer owner or a fence ahead of the lease
    table (:mod:`streamkit_kinesis.fleet.refusals`); a counter since the worker started."""
    for worker in list(_workers):
        yield worker.source.app_name, worker.spec.worker_id, worker.refusals.refused
