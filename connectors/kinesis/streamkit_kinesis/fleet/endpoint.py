"""A fleet worker's own UI endpoint: what it reports about itself (``/api/worker``) and
where the other workers find it.

Advertisement: a worker serving the UI writes ``<checkpoint root>/fleet/workers/<worker
id>.json`` (``{"worker", "url", "started", "updated"}``) when it starts, rewrites it every
:data:`HEARTBEAT` seconds and deletes it at a graceful stop. The lease tables are left as
they are (they may be shared with a Java KCL): the root is the place every worker of the
fleet already shares, as the task status files do.

Report (:meth:`WorkerReport.__call__`, built on the worker's own event loop): the leases
its two consumers hold now, per held task its last status (batch, lag, watermark, rows),
the records its source tasks ran since it started (every batch: a shard re-read after a
lease moved counts again) and their rate, its backlog (largest MillisBehindLatest of
its source shards), its watermark (the minimum of its source tasks' watermarks) and the
fleet watermark as its aggregation tasks know it (their minimum).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from streamkit_kinesis.fleet.status import local_source_rows, local_statuses

if TYPE_CHECKING:
    from streamkit.streaming.contracts import CheckpointStore
    from streamkit_kinesis.consumer import KinesisConsumer
    from streamkit_kinesis.fleet.status import TaskStatus

ADVERT_DIR = "fleet/workers"
HEARTBEAT = 10.0
"""Seconds between two rewrites of a worker's advertisement."""
RATE_WINDOW = 10.0
"""Seconds over which the records/s rate is measured."""
ADVERTISE_ENV = "STREAMKIT_UI_ADVERTISE_URL"
"""The URL other workers use to reach this worker's UI (default: ``http://<host>:<port>/``,
the host being the interface served, or this machine's name when it serves every one)."""


def advertised_url(host: str, port: int) -> str:
    """``$STREAMKIT_UI_ADVERTISE_URL``, else ``http://<host>:<port>/`` (see above)."""
    url = os.environ.get(ADVERTISE_ENV, "").strip()
    if url:
        return url if url.endswith("/") else url + "/"
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    return f"http://{host}:{port}/"


def advert_path(worker: str) -> str:
    """The advertisement file of ``worker``, relative to the checkpoint root."""
    return f"{ADVERT_DIR}/{worker}.json"


def write_advert(store: CheckpointStore, worker: str, url: str, started: str) -> None:
    """Write (or refresh) ``worker``'s advertisement (blocking)."""
    body = {"worker": worker, "url": url, "started": started,
            "updated": datetime.now(UTC).isoformat()}  # fmt: skip
    store.write_bytes(advert_path(worker), json.dumps(body).encode())


def read_adverts(store: CheckpointStore) -> list[dict[str, Any]]:
    """Every advertisement under the root (unreadable ones skipped; blocking)."""
    out = []
    for name in store.list(ADVERT_DIR):
        raw = store.read_bytes(f"{ADVERT_DIR}/{name}")
        if raw is None:
            continue
        try:
            body = json.loads(raw)
        except ValueError:
            continue
        if (
            isinstance(body, dict)
            and isinstance(body.get("worker"), str)
            and isinstance(body.get("url"), str)
        ):
            out.append(body)
    return out


class RateMeter:
    """Records per second over the last :data:`RATE_WINDOW` seconds, from running totals
    sampled when asked (O(1) amortised per sample)."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._samples: deque[tuple[float, int]] = deque()

    def rate(self, total: int) -> float | None:
        """Add a sample; the rate since the oldest sample in the window (None: one sample)."""
        now = self._clock()
        samples = self._samples
        samples.append((now, total))
        while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW:
            samples.popleft()
        t0, n0 = samples[0]
        return None if now <= t0 else (total - n0) / (now - t0)


def min_known(values: list[int | None]) -> int | None:
    """The minimum, None when empty or when one is unknown."""
    if not values or any(v is None for v in values):
        return None
    return min(v for v in values if v is not None)


class WorkerReport:
    """This worker's own figures (call on the worker's event loop)."""

    def __init__(self, worker: str, app: str, url: str) -> None:
        self.worker, self.app, self.url = worker, app, url
        self.started = datetime.now(UTC).isoformat()
        self.source: KinesisConsumer | None = None
        self.right: KinesisConsumer | None = None
        """The right stream's source consumer of a join of two streams (None: one stream);
        its shards, and then the left stream's, are reported as ``<stream>/<shard id>``."""
        self.aggregation: KinesisConsumer | None = None
        self._meter = RateMeter()

    def __call__(self) -> dict[str, Any]:
        """The JSON of ``/api/worker``."""
        held: dict[str, tuple[str, ...]] = {}
        backlog = 0
        lags: dict[tuple[str, str], int | None] = {}
        left = "left/" if self.right is not None else ""
        consumers = (("source", left, self.source), ("source", "right/", self.right),
                     ("aggregation", "", self.aggregation))  # fmt: skip
        for kind, prefix, consumer in consumers:
            if consumer is None:
                held.setdefault(kind, ())
                continue
            m = consumer.metrics()
            ids = held.get(kind, ()) + tuple(prefix + s for s in m.held_shard_ids)
            held[kind] = tuple(sorted(ids))
            lags.update({(kind, prefix + s.shard_id): s.millis_behind_latest for s in m.shards})
            if kind == "source":
                backlog = max(backlog, m.backlog_millis)
        records = local_source_rows(self.worker)
        last: dict[tuple[str, str], TaskStatus] = {
            (s.kind, s.shard): s for s in local_statuses(self.worker)
        }
        tasks: list[dict[str, Any]] = []
        marks: dict[str, list[int | None]] = {k: [] for k in held}
        for kind, shards in held.items():
            for shard in shards:
                s = last.get((kind, shard))
                marks[kind].append(s.watermark_ms if s else None)
                tasks.append({
                    "kind": kind, "shard": shard, "batch": s.batch if s else None,
                    "lag_ms": lags.get((kind, shard)),
                    "watermark_ms": s.watermark_ms if s else None,
                    "rows": s.rows if s else None,
                })  # fmt: skip
        return {
            "worker": self.worker,
            "app": self.app,
            "url": self.url,
            "started": self.started,
            "leases": {k: list(v) for k, v in held.items()},
            "tasks": tasks,
            "records_read": records,
            "records_per_second": self._meter.rate(records),
            "backlog_ms": backlog,
            "watermark_ms": min_known(marks["source"]),
            "fleet_watermark_ms": min_known(marks["aggregation"]),
        }


class Advertiser:
    """Keeps a worker's advertisement fresh on its loop until :meth:`close`."""

    def __init__(self, store: CheckpointStore, report: WorkerReport) -> None:
        self.store, self.report = store, report
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Write the advertisement now, then every :data:`HEARTBEAT` seconds."""
        r = self.report
        await asyncio.to_thread(write_advert, self.store, r.worker, r.url, r.started)
        self._task = asyncio.create_task(self._beat())

    async def _beat(self) -> None:
        r = self.report
        while True:
            await asyncio.sleep(HEARTBEAT)
            try:
                await asyncio.to_thread(write_advert, self.store, r.worker, r.url, r.started)
            except Exception:  # an outage of the store: the next beat retries
                continue

    async def close(self) -> None:
        """Stop refreshing and delete the advertisement (a graceful stop)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await asyncio.to_thread(self.store.delete, advert_path(self.report.worker))
        except Exception:  # left behind: it goes stale and is no longer shown
            return
