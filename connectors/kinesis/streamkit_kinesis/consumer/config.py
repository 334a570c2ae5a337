"""Consumer configuration: one frozen value, validated when it is built.

Defaults follow the KCL where a concept is the same: ``failover_time`` 10 s, lease renewal
every third of it, a take cycle every ``2 * failover_time``, one steal per take cycle,
1.5 s between a read that reached the tip and the next (KCL 2.x/3.x
``idleMillisBetweenCalls``; a backlog is read without waiting), up to 10,000 records per
GetRecords, a lease-table audit every 120 s on the leader only, with a full shard sync
(ListShards) only after the same hash-range hole was seen 3 audits in a row (KCL's
``leasesRecoveryAuditorExecutionFrequencyMillis`` and
``leasesRecoveryAuditorInconsistencyConfidenceThreshold``; a shard reaching SHARD_END
creates its children at once, from ``ChildShards``), lease cleanup every 60 s (a vanished shard's
lease deleted after 30 minutes) and initial position LATEST.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from streamkit.errors import ConfigError
from streamkit_kinesis.retrieval.polling import IDLE_TIME, PollingFetchers
from streamkit_kinesis.types import (
    AT_TIMESTAMP,
    LATEST,
    TRIM_HORIZON,
    ExtendedSequenceNumber,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from streamkit_kinesis.client import KinesisApi
    from streamkit_kinesis.leases.metrics import CallTimings
    from streamkit_kinesis.retrieval.fetcher import FetcherFactory

PositionKind = Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"]
Retrieval = Literal["polling", "fanout"]


@dataclass(frozen=True)
class InitialPosition:
    """Where a shard with no checkpoint yet starts (KCL's ``InitialPositionInStream``).

    Only used when shard sync creates a lease; afterwards the lease checkpoint decides.
    """

    kind: PositionKind
    """TRIM_HORIZON (oldest record kept), LATEST (records put from now on) or AT_TIMESTAMP."""
    timestamp: datetime | None = None
    """For AT_TIMESTAMP: the first record that arrived at or after this time (tz-aware)."""

    def __post_init__(self) -> None:
        if (self.kind == "AT_TIMESTAMP") != (self.timestamp is not None):
            raise ConfigError(
                "InitialPosition needs a timestamp for AT_TIMESTAMP and only then; use "
                "InitialPosition.at_timestamp(datetime) / .trim_horizon() / .latest()"
            )
        if self.timestamp is not None and self.timestamp.tzinfo is None:
            raise ConfigError("the AT_TIMESTAMP timestamp must be timezone-aware (e.g. UTC)")

    @classmethod
    def trim_horizon(cls) -> InitialPosition:
        """Start at the oldest record still in the shard."""
        return cls("TRIM_HORIZON")

    @classmethod
    def latest(cls) -> InitialPosition:
        """Start after the newest record: only records put from now on."""
        return cls("LATEST")

    @classmethod
    def at_timestamp(cls, timestamp: datetime) -> InitialPosition:
        """Start at the first record that arrived at or after ``timestamp``."""
        return cls("AT_TIMESTAMP", timestamp)

    @property
    def checkpoint(self) -> ExtendedSequenceNumber:
        """The sentinel checkpoint written into new leases."""
        return {"TRIM_HORIZON": TRIM_HORIZON, "LATEST": LATEST, "AT_TIMESTAMP": AT_TIMESTAMP}[
            self.kind
        ]


def default_worker_id() -> str:
    """``host:pid:random`` — unique per consumer instance, readable in the lease table."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class ConsumerConfig:
    """Everything that configures one consumer worker (all times in seconds).

    Workers sharing ``app_name`` share the lease table named ``app_name`` and split the
    stream's shards between them.
    """

    app_name: str
    """Application name; also the DynamoDB lease table name (created on demand if absent)."""
    stream: str
    """Kinesis stream to consume."""
    worker_id: str = field(default_factory=default_worker_id)
    """This worker's identity in ``leaseOwner``; unique per process."""
    initial_position: InitialPosition = field(default_factory=InitialPosition.latest)
    """Start of a shard that has no checkpoint yet (KCL default: LATEST)."""
    failover_time: float = 10.0
    """A lease whose counter has not moved for this long is expired and may be taken."""
    renew_interval: float | None = None
    """Time between renewals; default ``failover_time / 3``."""
    take_interval: float | None = None
    """Time between take cycles; default ``2 * failover_time`` (KCL). A released lease is
    taken by another worker on that worker's next take cycle, so this bounds a hand-off."""
    max_steal: int = 1
    """Leases stolen per take cycle at most, to balance by count."""
    max_leases: int | None = None
    """Cap on leases held by this worker (``None``: no cap)."""
    idle_time: float = IDLE_TIME
    """Least time from a read that reached the tip (empty or not) to the next GetRecords of
    that shard (KCL 2.x/3.x: 1.5 s between every call); a read behind the tip is followed
    at once. Kinesis allows 5 reads/s per shard for all consumers together."""
    max_records: int = 10_000
    """``Limit`` of each GetRecords call (1..10,000)."""
    gather_records: int = 0
    """Polling only: while a shard is read behind its tip, deliver consecutive reads as one
    batch once they hold this many records or 32 MiB of payload (one read more at most;
    :class:`~streamkit_kinesis.retrieval.gather.GatheringFetcher`): fewer, larger
    ``process_records`` calls on a backlog; a caught-up shard is delivered read by read as
    before. 0 (the default, KCL's behaviour) or 1: a batch per read. For record
    processors: a streaming query's source reads by its own buffers' budget. The fleet
    (``streamkit worker``) uses 50,000 for its source tasks unless this is set (1 turns
    gathering off there)."""
    shard_sync_interval: float = 120.0
    """Time between lease-table audits, run by the leader only (KCL's
    ``leasesRecoveryAuditorExecutionFrequencyMillis``: 2 minutes). An audit reads the last
    take cycle's scan (no call of its own) and checks that the hash ranges of the
    unfinished leases cover the whole key space; a full shard sync (ListShards) runs only
    when the same hole is seen ``audit_confidence`` audits in a row. New shards of a
    reshard need no sync: a shard reaching SHARD_END creates its children's leases at
    once (from ``ChildShards``, else ListShards)."""
    audit_confidence: int = 3
    """Audits in a row that must see the same hash-range hole before a shard sync (KCL's
    ``leasesRecoveryAuditorInconsistencyConfidenceThreshold``: 3)."""
    parent_poll_interval: float = 10.0
    """How often a child shard re-checks whether its parents reached SHARD_END."""
    shard_refresh_interval: float | None = None
    """How often an idle reader re-describes its shard (ListShards) to notice that it was
    closed. Off by default, as in KCL: AWS, LocalStack and kinesalite end a closed shard
    with a null ``NextShardIterator``. Set it (e.g. 30) on moto, which never does."""
    lease_cleanup_interval: float = 60.0
    """Time between lease cleanups: finished parents whose children all started, and leases
    of vanished shards, are deleted (KCL's ``LeaseCleanupManager``)."""
    garbage_lease_grace: float = 1800.0
    """How long a lease's shard must be missing from the shard list before the lease is
    deleted (KCL: 30 minutes)."""
    shutdown_grace: float = 5.0
    """On stop, how long an in-flight ``process_records`` may run before it is cancelled."""
    lease_call_timeout: float = 5.0
    """Connect / read timeout of each DynamoDB call."""
    retrieval: Retrieval = "polling"
    """How shards are read: ``"polling"`` (GetRecords, 5 reads/s per shard shared by every
    consumer of the stream) or ``"fanout"`` (Enhanced Fan-Out: a stream consumer named
    ``consumer_name`` is registered, or reused, and each shard is pushed to this worker
    through SubscribeToShard with 2 MB/s of its own; charged per consumer-shard-hour and
    per GB, see the README). Leases and checkpoints are the same either way."""
    consumer_name: str | None = None
    """The registered stream consumer's name for ``"fanout"`` (default: ``app_name``;
    workers of one application share it). Never deregistered by the consumer."""
    subscription_lifetime: float = 290.0
    """``"fanout"``: re-subscribe after this long (AWS ends a subscription at 5 minutes)."""
    elect_leader: bool = True
    """Elect one leader among the workers, with no write: KCL 2.x's deterministic shuffle
    of the lease owners seen by each take cycle's scan (:mod:`~streamkit_kinesis.leases.leader`).
    Only the leader runs the lease-table audit and lease cleanup. Off, every worker does."""
    announce: bool = False
    """Workers starting together on a fresh lease table first take ONE lease each (to be
    seen), then, a quarter of a take interval later, split the rest exactly (see
    :func:`~streamkit_kinesis.leases.taker.decide_takes`): balanced within about 0.3 take
    cycles instead of a race and 7-9 cycles of steals (1,064 leases, 10-50 workers). Off
    (KCL): a worker that sees itself alone takes everything at once, so a lone worker is
    not delayed. The fleet (``streamkit worker``) turns it on."""

    def __post_init__(self) -> None:
        if not self.app_name or not self.stream:
            raise ConfigError("ConsumerConfig needs a non-empty app_name and stream")
        if not 1 <= self.max_records <= 10_000:
            raise ConfigError(f"max_records must be in 1..10000, got {self.max_records}")
        if self.idle_time < 0:
            raise ConfigError(f"idle_time must be >= 0, got {self.idle_time}")
        if self.gather_records < 0:
            raise ConfigError(f"gather_records must be >= 0, got {self.gather_records}")
        positive = {
            "failover_time": self.failover_time,
            "shard_sync_interval": self.shard_sync_interval,
            "parent_poll_interval": self.parent_poll_interval,
            "shutdown_grace": self.shutdown_grace,
            "lease_cleanup_interval": self.lease_cleanup_interval,
            "audit_confidence": self.audit_confidence,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{name} must be > 0, got {value}")
        if self.renew_interval is not None and not 0 < self.renew_interval < self.failover_time:
            raise ConfigError(
                f"renew_interval ({self.renew_interval}) must be in (0, failover_time "
                f"= {self.failover_time}); otherwise held leases expire between renewals"
            )
        if self.garbage_lease_grace < 0:
            raise ConfigError(f"garbage_lease_grace must be >= 0, got {self.garbage_lease_grace}")
        if self.take_interval is not None and self.take_interval <= 0:
            raise ConfigError(f"take_interval must be > 0, got {self.take_interval}")
        if self.retrieval not in ("polling", "fanout"):
            raise ConfigError(f"retrieval must be 'polling' or 'fanout', got {self.retrieval!r}")
        if not 0 < self.subscription_lifetime <= 300:
            raise ConfigError(
                "subscription_lifetime must be in (0, 300] seconds, got "
                f"{self.subscription_lifetime}"
            )
        if self.max_steal < 0 or (self.max_leases is not None and self.max_leases < 1):
            raise ConfigError("max_steal must be >= 0 and max_leases >= 1 (or None)")

    @property
    def effective_renew_interval(self) -> float:
        """The renewal interval in use (``failover_time / 3`` unless set)."""
        return self.failover_time / 3 if self.renew_interval is None else self.renew_interval

    @property
    def effective_take_interval(self) -> float:
        """The take interval in use (``2 * failover_time`` unless set)."""
        return 2 * self.failover_time if self.take_interval is None else self.take_interval

    def polling_fetchers(
        self,
        client: KinesisApi,
        clock: Callable[[], float],
        timings: CallTimings | None = None,
    ) -> PollingFetchers:
        """The default fetcher factory: GetRecords polling of ``stream`` with this config's
        ``max_records``, ``idle_time`` and ``shard_refresh_interval`` (each call timed in
        ``timings``, when given and on)."""
        return PollingFetchers(
            client,
            self.stream,
            limit=self.max_records,
            idle_time=self.idle_time,
            shard_refresh_interval=self.shard_refresh_interval,
            clock=clock,
            timings=timings,
        )

    def fetchers(
        self,
        client: KinesisApi,
        clock: Callable[[], float],
        timings: CallTimings | None = None,
    ) -> FetcherFactory:
        """The fetcher factory of ``retrieval``, de-aggregating KPL records: polling
        (:meth:`polling_fetchers` in :class:`~streamkit_kinesis.kpl.KplFetchers`) or
        Enhanced Fan-Out (:class:`~streamkit_kinesis.retrieval.fanout.FanoutFetchers`)."""
        from streamkit_kinesis.kpl import KplFetchers

        if self.retrieval == "polling":
            polling = KplFetchers(self.polling_fetchers(client, clock, timings))
            if self.gather_records:
                from streamkit_kinesis.retrieval.gather import GatheringFetchers

                return GatheringFetchers(polling, self.gather_records)
            return polling
        from streamkit_kinesis.retrieval.fanout import FanoutFetchers
        from streamkit_kinesis.retrieval.registration import StreamConsumer

        name = self.consumer_name or self.app_name
        consumer = StreamConsumer(client, self.stream, name, clock=clock)
        return FanoutFetchers(
            client, self.stream, consumer, lifetime=self.subscription_lifetime, clock=clock
        )
