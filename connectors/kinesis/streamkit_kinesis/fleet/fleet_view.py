"""The fleet page's JSON (``/api/fleet``): every worker of a Kinesis fleet with the leases
the lease tables say it holds and the figures its own endpoint reports.

Workers are the owners of unfinished leases in both lease tables (``APP``: source tasks,
``APP-exchange``: aggregation tasks) plus every worker advertising an endpoint under the
checkpoint root (:mod:`.endpoint`) refreshed within :data:`STALE` seconds. Each advertised
endpoint is asked for ``/api/worker`` (all at once, :data:`FETCH_TIMEOUT` each); a worker
whose endpoint does not answer is listed as ``unreachable`` with the error, one that
advertises none as ``no endpoint``; neither is dropped while it holds a lease. The fleet
watermark is the minimum of the aggregation watermarks the reachable workers report
(``partial`` when a worker holding an aggregation lease did not answer).

The lease tables and advertisements are read at most once per :data:`REFRESH` seconds.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from streamkit_kinesis.fleet.endpoint import (
    Advertiser,
    WorkerReport,
    advertised_url,
    min_known,
    read_adverts,
)
from streamkit_kinesis.leases import DynamoDBLeaseStore, LeaseStoreError
from streamkit_kinesis.leases.model import checkpoint_text

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint
    from streamkit.streaming.contracts import CheckpointStore
    from streamkit_kinesis.leases import Lease

REFRESH = 2.0
STALE = 60.0
"""Seconds after which an advertisement not refreshed is ignored (unless its worker holds
a lease)."""
FETCH_TIMEOUT = 3.0
KINDS = ("source", "aggregation")


def _age(updated: object) -> float:
    try:
        then = datetime.fromisoformat(str(updated))
    except ValueError:
        return float("inf")
    return (datetime.now(UTC) - then).total_seconds()


class FleetPanel:
    """Builds the fleet JSON of application ``app`` (call on the UI's loop)."""

    def __init__(self, endpoint: AwsEndpoint, app: str, store: CheckpointStore,
                 me: str | None = None, clock: Any = time.monotonic) -> None:  # fmt: skip
        self.app, self.store, self.me, self._clock = app, store, me, clock
        self._endpoint = endpoint
        self._tables: dict[str, DynamoDBLeaseStore] = {}
        """Made on the UI's loop, at the first read."""
        self._leases: dict[str, list[Lease]] = {k: [] for k in KINDS}
        self._adverts: list[dict[str, Any]] = []
        self._read_at: float | None = None

    async def _refresh(self) -> None:
        now = self._clock()
        if self._read_at is not None and now - self._read_at < REFRESH:
            return
        if not self._tables:
            app, ep = self.app, self._endpoint
            self._tables = {"source": DynamoDBLeaseStore(ep, app),
                            "aggregation": DynamoDBLeaseStore(ep, f"{app}-exchange")}  # fmt: skip
        for kind, table in self._tables.items():
            try:
                self._leases[kind] = await table.list_leases()
            except LeaseStoreError as e:
                if "does not exist" not in str(e):
                    raise
                self._leases[kind] = []
        self._adverts = await asyncio.to_thread(read_adverts, self.store)
        self._read_at = now

    async def __call__(self) -> dict[str, Any]:
        """``app``, ``workers`` (one entry each, sorted), ``leases`` and the fleet watermark."""
        from aiohttp import ClientSession, ClientTimeout

        await self._refresh()
        held: dict[str, dict[str, list[str]]] = {}
        for kind, leases in self._leases.items():
            for lease in leases:
                if (
                    lease.lease_owner
                    and not lease.is_finished
                    and lease.lease_key.startswith("shardId")
                ):
                    held.setdefault(lease.lease_owner, {k: [] for k in KINDS})[kind].append(
                        lease.lease_key
                    )
        urls = {a["worker"]: a["url"] for a in self._adverts
                if a["worker"] in held or _age(a.get("updated")) < STALE}  # fmt: skip
        names = sorted(set(held) | set(urls))
        async with ClientSession(timeout=ClientTimeout(total=FETCH_TIMEOUT)) as session:

            async def ask(url: str) -> dict[str, Any] | str:
                try:
                    async with session.get(url + "api/worker") as reply:
                        reply.raise_for_status()
                        body: dict[str, Any] = await reply.json()
                        return body
                except Exception as e:  # shown on the page as the reason
                    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__

            answers = await asyncio.gather(*(ask(urls[n]) for n in names if n in urls))
        replies = dict(zip([n for n in names if n in urls], answers, strict=True))
        workers: list[dict[str, Any]] = []
        marks: list[int | None] = []
        silent = False
        for name in names:
            reply = replies.get(name)
            report = reply if isinstance(reply, dict) else None
            mine = {k: sorted(held.get(name, {}).get(k, [])) for k in KINDS}
            status = "no endpoint" if name not in urls else "ok" if report else "unreachable"
            workers.append({
                "worker": name, "self": name == self.me, "url": urls.get(name),
                "status": status, "error": reply if isinstance(reply, str) else None,
                "leases": mine, "report": report,
            })  # fmt: skip
            if report is not None and report["leases"]["aggregation"]:
                marks.append(report["fleet_watermark_ms"])
            silent = silent or (report is None and bool(mine["aggregation"]))
        return {
            "app": self.app,
            "workers": workers,
            "fleet_watermark_ms": min_known(marks),
            "fleet_watermark_partial": silent,
            "leases": [
                {
                    "table": kind,
                    "shard": x.lease_key,
                    "owner": x.lease_owner,
                    "counter": x.lease_counter,
                    "checkpoint": checkpoint_text(x),
                }
                for kind, leases in self._leases.items()
                for x in leases
                if x.lease_key.startswith("shardId")
            ],
        }


async def publish(
    worker: str, app: str, root: CheckpointStore, lease_endpoint: AwsEndpoint
) -> tuple[WorkerReport, Advertiser] | None:
    """When this process serves the UI: serve the fleet page and this worker's report on
    it and advertise the endpoint (call on the worker's loop); None when it serves none."""
    import streamkit.ui
    from streamkit.ui.fleet import on_loop, set_fleet

    servers = streamkit.ui.serving()
    if not servers:
        return None
    server = servers[0]
    report = WorkerReport(worker, app, advertised_url(server.host, server.port))
    set_fleet(FleetPanel(lease_endpoint, app, root, worker),
              on_loop(asyncio.get_running_loop(), report))  # fmt: skip
    advertiser = Advertiser(root, report)
    await advertiser.start()
    return report, advertiser


async def unpublish(published: tuple[WorkerReport, Advertiser] | None) -> None:
    """Undo :func:`publish` (a graceful stop)."""
    if published is None:
        return
    from streamkit.ui.fleet import set_fleet

    set_fleet(None)
    await published[1].close()
