"""The Kinesis consumer's figures in CloudWatch, with the KCL's metric names and dimensions.

:class:`KinesisCloudWatchReporter` turns successive :meth:`KinesisConsumer.metrics`
snapshots into the data the KCL publishes (checked against KCL 3.x: ``ProcessTask``,
``DynamoDBLeaseRenewer``, ``DynamoDBLeaseTaker``, ``MetricsUtil``), under the namespace of
the application name, as KCL's ``ConfigsBuilder`` defaults it:

====================  ===================================  ============  =======  ==========
metric                dimensions                            unit          level    value
====================  ===================================  ============  =======  ==========
RecordsProcessed      Operation=ProcessTask, ShardId        Count         SUMMARY  new records
DataBytesProcessed    Operation=ProcessTask, ShardId        Bytes         SUMMARY  new bytes
MillisBehindLatest    Operation=ProcessTask, ShardId        Milliseconds  SUMMARY  last read
MillisBehindLatest    Operation=ApplicationTracker          Milliseconds  SUMMARY  every shard
CurrentLeases         Operation=RenewAllLeases, WorkerId.   Count         SUMMARY  held now
LostLeases            Operation=RenewAllLeases, WorkerId.   Count         SUMMARY  new losses
TakenLeases           Operation=TakeLeases, WorkerId.       Count         SUMMARY  new takes
BacklogMillis         Operation=Backlog, WorkerId.          Milliseconds  SUMMARY  see below
BacklogMillis         Operation=Backlog                     Milliseconds  SUMMARY  every worker
Time, Success         Operation=TakeLeases, WorkerId.       ms, Count     SUMMARY  per cycle
ListLeases.*          Operation=TakeLeases, WorkerId.       ms, Count     DETAILED per scan
TakeLease.*           Operation=TakeLeases, WorkerId.       ms, Count     DETAILED per take
Time, Success         Operation=RenewAllLeases, WorkerId.   ms, Count     SUMMARY  per cycle
RenewLease.*          Operation=RenewAllLeases, WorkerId.   ms, Count     DETAILED per write
UpdateLease.*         Operation=ProcessTask, ShardId        ms, Count     DETAILED checkpoints
KinesisDataFetcher.   Operation=ProcessTask, ShardId        ms, Count     DETAILED per attempt
 getRecords.*,
 getShardIterator.*
====================  ===================================  ============  =======  ==========

``BacklogMillis`` is not the KCL's: it is the worker's backlog, the largest
``MillisBehindLatest`` of the shards it holds (0 when it holds none), the signal to scale a
fleet on (its ``Maximum`` without ``WorkerIdentifier`` is the fleet's worst worker).

(``WorkerId.`` is ``WorkerIdentifier``; ``X.*`` is ``X.Time`` and ``X.Success``.) KCL adds
a datum per task run; here one per snapshot, so sums (records, bytes, leases taken and
lost) match KCL's and counts of samples do not. The per-call metrics are one sample per
call, as KCL's: ``Time`` in whole milliseconds, ``Success`` 1 or 0 (its average is the
success rate; a take that loses its conditional write is a failure, as in KCL; a renewal
cycle with a transient failure is too). They are recorded from the reporter's first report
on (:class:`~streamkit_kinesis.leases.metrics.CallTimings` keeps nothing before), and for
polling only (Enhanced Fan-Out has no per-call reads).

Queries reading Kinesis report through the query listener (:func:`install`, called by the
connector's plugin); a consumer used on its own runs :meth:`KinesisCloudWatchReporter.run`.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from streamkit.metrics.cloudwatch_data import MetricsLevel
from streamkit_kinesis.leases.metrics import OPERATION_KEY

from .consumer.metrics import read_metrics

if TYPE_CHECKING:
    from collections.abc import Callable

    from streamkit.metrics.cloudwatch import CloudWatchPublisher
    from streamkit_kinesis.consumer import ConsumerMetrics, KinesisConsumer
    from streamkit_kinesis.leases.metrics import CallStat

S = MetricsLevel.SUMMARY
D = MetricsLevel.DETAILED


class KinesisCloudWatchReporter:
    """Publishes the figures of the consumer ``consumer()`` returns (None: not running)
    since the previous :meth:`report`; ``namespace`` defaults to the consumer's app name."""

    def __init__(
        self, consumer: Callable[[], KinesisConsumer | None], namespace: str | None = None
    ) -> None:
        self._consumer, self._namespace = consumer, namespace
        self._last: tuple[KinesisConsumer, ConsumerMetrics] | None = None

    @classmethod
    def of(
        cls, consumer: KinesisConsumer, namespace: str | None = None
    ) -> KinesisCloudWatchReporter:
        """A reporter of one consumer."""
        return cls(lambda: consumer, namespace)

    def report(self, publisher: CloudWatchPublisher) -> None:
        """Add the data of the changes since the last call (the first call: since start)."""
        consumer = self._consumer()
        if consumer is None:
            return
        now = read_metrics(consumer)
        before = self._last[1] if self._last is not None and self._last[0] is consumer else None
        self._last = (consumer, now)
        ns = self._namespace or consumer.config.app_name
        self._shards(publisher, ns, now, before)
        self._leases(publisher, ns, now, before)
        timings = consumer.call_timings
        self._calls(publisher, ns, timings.drain())
        timings.enabled = True

    async def run(self, publisher: CloudWatchPublisher, interval: float = 10.0) -> None:
        """Report every ``interval`` seconds until cancelled, and once more then."""
        try:
            while True:
                self.report(publisher)
                await asyncio.sleep(interval)
        finally:
            with contextlib.suppress(Exception):
                self.report(publisher)

    @staticmethod
    def _shards(
        pub: CloudWatchPublisher, ns: str, now: ConsumerMetrics, before: ConsumerMetrics | None
    ) -> None:
        for s in now.shards:
            old = before.shard(s.shard_id) if before is not None else None
            records = s.records - (old.records if old else 0)
            if not s.held and records == 0:
                continue
            at = {"Operation": "ProcessTask", "ShardId": s.shard_id}
            pub.add(ns, "RecordsProcessed", records, "Count", dimensions=at, level=S)
            nbytes = s.bytes - (old.bytes if old else 0)
            pub.add(ns, "DataBytesProcessed", nbytes, "Bytes", dimensions=at, level=S)
            if s.held and s.millis_behind_latest is not None:
                lag = s.millis_behind_latest
                pub.add(ns, "MillisBehindLatest", lag, "Milliseconds", dimensions=at, level=S)
                app = {"Operation": "ApplicationTracker"}
                pub.add(ns, "MillisBehindLatest", lag, "Milliseconds", dimensions=app, level=S)

    @staticmethod
    def _leases(
        pub: CloudWatchPublisher, ns: str, now: ConsumerMetrics, before: ConsumerMetrics | None
    ) -> None:
        m, old = now.leases, before.leases if before is not None else None
        renew = {"Operation": "RenewAllLeases", "WorkerIdentifier": now.worker_id}
        pub.add(ns, "CurrentLeases", m.held, "Count", dimensions=renew, level=S)
        pub.add(ns, "LostLeases", m.losses - (old.losses if old else 0), dimensions=renew, level=S)
        taken = m.takes + m.steals - (old.takes + old.steals if old else 0)
        take = {"Operation": "TakeLeases", "WorkerIdentifier": now.worker_id}
        pub.add(ns, "TakenLeases", taken, "Count", dimensions=take, level=S)
        backlog = now.backlog_millis
        for dims in ({"Operation": "Backlog", "WorkerIdentifier": now.worker_id},
                     {"Operation": "Backlog"}):  # fmt: skip
            pub.add(ns, "BacklogMillis", backlog, "Milliseconds", dimensions=dims, level=S)

    @staticmethod
    def _calls(pub: CloudWatchPublisher, ns: str, stats: list[CallStat]) -> None:
        for stat in stats:
            key = OPERATION_KEY.get(stat.operation, "ShardId")
            at = {"Operation": stat.operation, key: stat.key}
            level = S if not stat.name else D
            prefix = f"{stat.name}." if stat.name else ""
            for millis, n in stat.millis.items():
                pub.add(ns, f"{prefix}Time", millis, "Milliseconds", dimensions=at, level=level,
                        count=n)  # fmt: skip
            for value, n in ((1, stat.successes), (0, stat.calls - stat.successes)):
                if n:
                    pub.add(ns, f"{prefix}Success", value, "Count", dimensions=at, level=level,
                            count=n)  # fmt: skip


def _for_query(query: Any) -> KinesisCloudWatchReporter | None:
    from streamkit_kinesis.source import KinesisStreamSource

    source = query.source
    if not isinstance(source, KinesisStreamSource):
        return None
    return KinesisCloudWatchReporter(lambda: source.consumer)


def install() -> None:
    """Report the consumer of every Kinesis query through
    :class:`~streamkit.metrics.cloudwatch_queries.CloudWatchQueryListener` (idempotent)."""
    from streamkit.metrics.cloudwatch_queries import register_source_reporter

    register_source_reporter(_for_query)
