"""Task status files of a fleet (FLEET.md point 10), read by ``streamkit status APP``.

After each batch a task writes ``<checkpoint root>/fleet/tasks/<kind>-<shard id>.json``
(a join's source task: ``source-<stream>-<shard id>.json``, its ``shard`` field
``<stream>/<shard id>``)
through the checkpoint store (local: temp file + rename; S3: one PUT), so a reader never
sees half a file. The last writer of a task's file is its current owner.

The process also keeps the last status of each task it ran (:func:`local_statuses`, one
dict entry per batch): the worker's own UI endpoint reports them without reading files.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from streamkit.fleet.fleet_plan import FleetPlan
    from streamkit.streaming.contracts import CheckpointStore
    from streamkit_kinesis.fleet.refusals import RefusedClaims

_PER_MS = {"ns": 1_000_000, "us": 1_000, "ms": 1}

TaskKind = Literal["source", "aggregation"]


@dataclass(frozen=True)
class TaskStatus:
    """One task's state after its last batch."""

    kind: TaskKind
    shard: str
    worker: str
    batch: int
    """The task's last batch (aggregation: its batch id; source: batches emitted here)."""
    watermark_ms: int | None
    """Source: the shard's max event time minus the delay; aggregation: the fleet watermark."""
    lag_ms: int | None
    """MillisBehindLatest of the task's last read."""
    rows: int
    """Rows of the task's last batch (source: records read; aggregation: output rows)."""
    duplicates_dropped: int
    """Aggregation: chunks dropped as already applied, since this task's state began."""
    refused_claims: int = 0
    """Fence claims refused in ``worker`` since it started, any task
    (:attr:`~streamkit_kinesis.fleet.refusals.RefusedClaims.refused`) at this write: how
    ``streamkit status`` learns each worker's count, with no write of its own."""
    claims_since: str = ""
    """When ``refused_claims`` began counting (:attr:`RefusedClaims.since`): within one
    ``claims_since`` the count only grows, whatever order the files are written in."""
    updated: str = ""

    def encode(self) -> bytes:
        body = asdict(self)
        body["updated"] = self.updated or datetime.now(UTC).isoformat()
        return json.dumps(body).encode()


_STARTED = datetime.now(UTC).isoformat()


def claims(refusals: RefusedClaims | None) -> tuple[int, str]:
    """(refused_claims, claims_since) of a task status: ``refusals``' count and start, or
    0 since this process started when the task has none."""
    if refusals is None:
        return 0, _STARTED
    return refusals.refused, refusals.since


def ticks_to_ms(fleet: FleetPlan, ticks: int | None) -> int | None:
    """A time in ticks of the plan's watermark column as ms since the epoch (a join of
    two streams keeps its times in ms)."""
    if fleet.joined is not None:
        return ticks
    if ticks is None or fleet.mark is None:
        return None
    return ticks // _PER_MS[fleet.time_unit()]


def source_watermark_ms(fleet: FleetPlan, max_event: int | None, stream: str = "") -> int | None:
    """A source shard's watermark: its max event time minus the delay, in ms (a join's
    shard of stream ``stream``: with that side's delay)."""
    if fleet.joined is not None:
        delay = fleet.joined.delay_ms(fleet.joined.side_of(stream))
        return None if delay is None or max_event is None else max_event - delay
    ms = ticks_to_ms(fleet, max_event)
    if ms is None or fleet.mark is None:
        return None
    return ms - fleet.mark.delay_ns // 1_000_000


def status_path(kind: TaskKind, shard: str) -> str:
    """The file of a task, relative to the checkpoint root; a join's source shard
    ``stream/shard`` is the file ``source-<stream>-<shard>.json`` (one folder)."""
    return f"fleet/tasks/{kind}-{shard.replace('/', '-')}.json"


_lock = threading.Lock()
_latest: dict[tuple[str, TaskKind, str], TaskStatus] = {}
"""(worker, kind, shard) -> the last status a task of this process wrote."""
_source_rows: dict[str, int] = {}
"""worker -> records its source tasks ran in this process (every batch, re-reads too)."""


def write_status(store: CheckpointStore, status: TaskStatus) -> None:
    """Write ``status`` atomically (blocking: call it off the event loop); keep it as the
    task's latest in this process."""
    store.write_bytes(status_path(status.kind, status.shard), status.encode())
    with _lock:
        _latest[status.worker, status.kind, status.shard] = status
        if status.kind == "source":
            _source_rows[status.worker] = _source_rows.get(status.worker, 0) + status.rows


def local_statuses(worker: str) -> list[TaskStatus]:
    """The last status of every task worker ``worker`` ran in this process (held or not:
    the caller filters by the leases held now)."""
    with _lock:
        return [s for (w, _, _), s in _latest.items() if w == worker]


def local_source_rows(worker: str) -> int:
    """Records the source tasks of ``worker`` ran in this process, over every batch."""
    with _lock:
        return _source_rows.get(worker, 0)


def read_statuses(store: CheckpointStore) -> list[dict[str, object]]:
    """Every task's last status under the root (unreadable files skipped)."""
    out = []
    for name in store.list("fleet/tasks"):
        raw = store.read_bytes(f"fleet/tasks/{name}")
        if raw is None:
            continue
        try:
            out.append(dict(json.loads(raw)))
        except ValueError:
            continue
    return out
