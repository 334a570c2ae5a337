"""The Kinesis panel of a query's web UI page (:mod:`streamkit.ui`): what the lease table
says — every worker of the application with the shards it holds, and every lease with its
owner, counter and checkpoint — plus this worker's last MillisBehindLatest per shard.

The table is scanned at most once per :data:`REFRESH` seconds however many pages poll.
Workers other than this process are shown as the lease table names them (their lag is on
their own pages / metrics).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from streamkit_kinesis.leases.model import checkpoint_text

if TYPE_CHECKING:
    from streamkit_kinesis.leases import Lease
    from streamkit_kinesis.source import KinesisStreamSource

REFRESH = 2.0
"""Seconds a lease-table scan is reused."""


class LeasePanel:
    """Reads the lease table of one Kinesis query's application (call it on the UI's loop)."""

    def __init__(self, source: KinesisStreamSource, clock: Any = time.monotonic) -> None:
        self.source, self._clock = source, clock
        self._store: Any = None
        self._leases: list[Lease] = []
        self._read_at: float | None = None

    async def __call__(self) -> dict[str, Any]:
        """The panel's JSON: ``title``, ``workers`` and ``leases``."""
        from streamkit_kinesis.consumer.metrics import read_metrics
        from streamkit_kinesis.leases import DynamoDBLeaseStore

        now = self._clock()
        if self._read_at is None or now - self._read_at >= REFRESH:
            if self._store is None:
                src = self.source
                self._store = DynamoDBLeaseStore(src.lease_endpoint, src.app_name)
            self._leases, self._read_at = await self._store.list_leases(), now
        consumer = self.source.consumer
        lag: dict[str, int | None] = {}
        if consumer is not None:
            lag = {s.shard_id: s.millis_behind_latest for s in read_metrics(consumer).shards
                   if s.held}  # fmt: skip
        me = self.source.worker_id
        owners: dict[str, list[str]] = {}
        for lease in self._leases:
            if lease.lease_owner and not lease.is_finished:
                owners.setdefault(lease.lease_owner, []).append(lease.lease_key)
        return {
            "title": f"Kinesis stream {self.source.stream} · application {self.source.app_name}",
            "workers": [
                {"worker": w, "leases": len(shards), "shards": shards, "self": w == me}
                for w, shards in sorted(owners.items())
            ],
            "leases": [
                {
                    "shard": lease.lease_key,
                    "owner": lease.lease_owner,
                    "counter": lease.lease_counter,
                    "checkpoint": checkpoint_text(lease),
                    "lag_ms": lag.get(lease.lease_key) if lease.lease_owner == me else None,
                }
                for lease in self._leases
            ],
        }


def _for_query(view: Any) -> LeasePanel | None:
    from streamkit_kinesis.source import KinesisStreamSource

    source = view.source
    return LeasePanel(source) if isinstance(source, KinesisStreamSource) else None


def install() -> None:
    """Add the panel to the pages of Kinesis queries (idempotent)."""
    from streamkit.ui.snapshot import register_source_panel

    register_source_panel(_for_query)
