"""The fleet view of ``streamkit status APP``: workers, the tasks each holds, per-task lag
and watermark, the fleet watermark and the duplicates dropped.

Two sources, read as they are now (no sampling):

- the lease tables: ``APP`` (source tasks: leases of the source stream's shards),
  ``APP-right`` when the query joins two streams (the right stream's shards; the source
  tasks are then shown as ``left/<shard id>`` and ``right/<shard id>``) and
  ``APP-exchange`` (aggregation tasks: leases of the exchange stream's shards); the owner
  of each lease is the worker holding that task;
- the task status files each task writes after each batch under
  ``<checkpoint root>/fleet/tasks/<kind>-<shard id>.json`` (a local folder or
  ``s3://bucket/prefix``): batch, watermark, MillisBehindLatest, rows, duplicates dropped,
  and its worker's fence claims refused so far with when that count began (a worker's
  count is the largest among the files of its newest count: it reaches this view with
  that worker's next batch of any task).

The fleet watermark is the minimum of the aggregation tasks' watermarks (none while one of
them has none): every window ending at or before it is closed on every task.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table
from streamkit_kinesis.leases import DynamoDBLeaseStore, Lease
from streamkit_kinesis.leases.errors import LeaseStoreError

from streamkit.cli._common import EXIT_NOT_FOUND, CliError

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint

TASKS_DIR = "fleet/tasks"
KINDS = ("source", "aggregation")


def exchange_table(app: str) -> str:
    """The aggregation tasks' lease table of ``app``."""
    return f"{app}-exchange"


def right_table(app: str) -> str:
    """The source lease table of the right stream of a join of two streams of ``app``."""
    return f"{app}-right"


_NEVER = datetime.min.replace(tzinfo=UTC)


def _instant(value: object) -> datetime | None:
    """An ISO 8601 time with its offset, or None when absent; ValueError otherwise."""
    if value is None:
        return None
    try:
        instant = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        instant = None
    if instant is None or instant.tzinfo is None:
        raise ValueError(f"claims_since is {value!r}, not an ISO 8601 time with an offset")
    return instant


@dataclass(frozen=True)
class TaskStatus:
    """One task status file (FLEET.md point 10)."""

    kind: str
    shard: str
    worker: str
    batch: int
    watermark_ms: int | None
    lag_ms: int | None
    rows: int
    duplicates_dropped: int
    updated: str
    refused_claims: int | None = None
    """The writing worker's fence claims refused so far (None: a file written before
    workers reported them)."""
    claims_since: datetime | None = None
    """When that count began (one worker process's; None: not reported)."""

    @classmethod
    def parse(cls, data: bytes) -> TaskStatus:
        """The status in ``data``; ValueError saying what is wrong otherwise."""
        raw = json.loads(data)
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        if raw.get("kind") not in KINDS:
            raise ValueError(f"kind {raw.get('kind')!r} is not source or aggregation")
        ints = ("batch", "rows", "duplicates_dropped")
        optional = ("watermark_ms", "lag_ms", "refused_claims")
        for name in (*ints, *optional):
            value = raw.get(name)  # (absent = None)
            if not (isinstance(value, int) and not isinstance(value, bool)) and not (
                value is None and name in optional
            ):
                raise ValueError(f"{name} is {value!r}, not an integer")
        for name in ("shard", "worker", "updated"):
            if not isinstance(raw.get(name), str):
                raise ValueError(f"{name} is missing or not a string")
        fields: dict[str, Any] = {f: raw.get(f) for f in cls.__dataclass_fields__}
        fields["claims_since"] = _instant(raw.get("claims_since"))
        return cls(**fields)


@dataclass(frozen=True)
class FleetView:
    """Both lease tables and the task status files of one application."""

    app: str
    source_leases: list[Lease]
    exchange_leases: list[Lease] | None
    """None when the ``APP-exchange`` table does not exist."""
    tasks: list[TaskStatus]
    skipped: list[str] = field(default_factory=list)
    """Status files that could not be read, with the reason."""
    right_leases: list[Lease] | None = None
    """The ``APP-right`` table of a join of two streams (None: no such table)."""

    def owners(self) -> dict[tuple[str, str], str | None]:
        """(kind, shard) -> owner, for every unfinished lease of every table (a join's
        source shards named ``left/<id>`` and ``right/<id>``)."""
        joined = self.right_leases is not None
        tables = (
            ("source", "left/" if joined else "", self.source_leases),
            ("source", "right/", self.right_leases or []),
            ("aggregation", "", self.exchange_leases or []),
        )
        return {
            (kind, prefix + lease.lease_key): lease.lease_owner
            for kind, prefix, leases in tables
            for lease in leases
            if not lease.is_finished
        }

    def workers(self) -> dict[str, dict[str, list[str]]]:
        """worker -> {"source": [shard ids], "aggregation": [shard ids]}, sorted."""
        out: dict[str, dict[str, list[str]]] = {}
        for (kind, shard), owner in sorted(self.owners().items()):
            if owner is not None:
                out.setdefault(owner, {k: [] for k in KINDS})[kind].append(shard)
        return dict(sorted(out.items()))

    def refused_claims(self) -> dict[str, int | None]:
        """worker -> fence claims refused in it: the largest count among its status files
        of the newest ``claims_since`` (one process's counter, which only grows, so the
        order the files were written in does not matter; None: no file has a count)."""
        newest: dict[str, tuple[datetime, int]] = {}
        for t in self.tasks:
            if t.refused_claims is not None:
                mine = (t.claims_since or _NEVER, t.refused_claims)
                newest[t.worker] = max(newest.get(t.worker, mine), mine)
        return {w: n for w, (_, n) in newest.items()}

    def fleet_watermark_ms(self) -> int | None:
        """Min of the aggregation tasks' watermarks; None if one has none (or no task)."""
        marks = [t.watermark_ms for t in self.tasks if t.kind == "aggregation"]
        if not marks or any(m is None for m in marks):
            return None
        return min(m for m in marks if m is not None)

    def duplicates_dropped(self) -> int:
        """Chunks dropped as already applied, over every aggregation task."""
        return sum(t.duplicates_dropped for t in self.tasks if t.kind == "aggregation")

    def rows(self) -> list[dict[str, Any]]:
        """One row per task: every unfinished lease and every status file, source first."""
        owners = self.owners()
        by_key = {(t.kind, t.shard): t for t in self.tasks}
        keys = sorted(set(owners) | set(by_key), key=lambda k: (KINDS.index(k[0]), k[1]))
        out = []
        for kind, shard in keys:
            t = by_key.get((kind, shard))
            out.append({
                "kind": kind, "shard": shard, "owner": owners.get((kind, shard)),
                "lease": (kind, shard) in owners,
                "last_batch_by": t.worker if t else None, "batch": t.batch if t else None,
                "lag_ms": t.lag_ms if t else None,
                "watermark_ms": t.watermark_ms if t else None,
                "rows": t.rows if t else None,
                "duplicates_dropped": t.duplicates_dropped if t else None,
                "updated": t.updated if t else None,
            })  # fmt: skip
        return out

    def to_json(self) -> dict[str, Any]:
        """The view as plain JSON values."""
        refused = self.refused_claims()
        return {
            "app": self.app,
            "exchange_table": self.exchange_leases is not None,
            "workers": {
                w: {**held, "refused_claims": refused.get(w)} for w, held in self.workers().items()
            },
            "tasks": self.rows(),
            "fleet_watermark_ms": self.fleet_watermark_ms(),
            "duplicates_dropped": self.duplicates_dropped(),
            "skipped_status_files": self.skipped,
        }


def read_tasks(root: str, endpoint: AwsEndpoint) -> tuple[list[TaskStatus], list[str]]:
    """The status files under ``root`` (and the names skipped, with why)."""
    from streamkit.streaming.checkpoint_store import LocalCheckpointStore, S3CheckpointStore

    store: LocalCheckpointStore | S3CheckpointStore
    if root.startswith("s3://"):  # an outage fails the command instead of stalling it
        store = S3CheckpointStore(root, endpoint, retry_forever=False)
    else:
        local = Path(root.removeprefix("file://"))
        if not local.is_dir():
            raise CliError(f"no checkpoint root {root!r} (not a directory)",
                           "pass the job's checkpoint location as --checkpoint",
                           EXIT_NOT_FOUND)  # fmt: skip
        store = LocalCheckpointStore(local)
    tasks, skipped = [], []
    for name in store.list(TASKS_DIR):
        if not name.endswith(".json"):
            continue
        data = store.read_bytes(f"{TASKS_DIR}/{name}")
        try:
            if data is None:
                raise ValueError("vanished while listing")
            tasks.append(TaskStatus.parse(data))
        except ValueError as e:  # JSONDecodeError is one
            skipped.append(f"{TASKS_DIR}/{name}: {e}")
    return tasks, skipped


async def _leases(endpoint: AwsEndpoint, table: str) -> list[Lease] | None:
    try:
        return await DynamoDBLeaseStore(endpoint, table).list_leases()
    except LeaseStoreError as e:
        if "does not exist" not in str(e):
            raise
        return None


async def load_fleet(endpoint: AwsEndpoint, app: str, root: str | None) -> FleetView | None:
    """The fleet of ``app``, or None when it shows no sign of one (no ``APP-exchange``
    table, no status file)."""
    import asyncio

    tasks, skipped = await asyncio.to_thread(read_tasks, root, endpoint) if root else ([], [])
    exchange = await _leases(endpoint, exchange_table(app))
    if exchange is None and not tasks and not skipped:
        return None
    source = await _leases(endpoint, app)
    right = await _leases(endpoint, right_table(app))
    return FleetView(app, source or [], exchange, tasks, skipped, right)


def _time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _num(value: int | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:,}{unit}"


def render(view: FleetView) -> list[Table | str]:
    """The workers table, the tasks table and the summary lines."""
    workers = Table(title=f"fleet of {view.app}: workers")
    for col in ("worker", "source tasks", "aggregation tasks", "refused claims"):
        workers.add_column(col, overflow="fold")
    refused = view.refused_claims()
    for w, held in view.workers().items():
        workers.add_row(w, ", ".join(held["source"]) or "-",
                        ", ".join(held["aggregation"]) or "-", _num(refused.get(w)))  # fmt: skip
    tasks = Table(title="tasks")
    for col in ("kind", "shard", "owner", "batch", "lag", "watermark", "rows", "duplicates"):
        tasks.add_column(col, overflow="fold")
    for r in view.rows():
        owner = r["owner"] or ("(free)" if r["lease"] else "(no lease)")
        if r["last_batch_by"] and r["last_batch_by"] != r["owner"]:
            owner += f" (last batch by {r['last_batch_by']})"
        tasks.add_row(r["kind"], r["shard"], owner, _num(r["batch"]), _num(r["lag_ms"], " ms"),
                      _time(r["watermark_ms"]), _num(r["rows"]),
                      _num(r["duplicates_dropped"]))  # fmt: skip
    fleet = view.fleet_watermark_ms()
    n_agg = sum(1 for t in view.tasks if t.kind == "aggregation")
    lines: list[Table | str] = [workers, tasks]
    if fleet is not None:
        lines.append(f"fleet watermark: {_time(fleet)} (min of {n_agg} aggregation task(s))")
    else:
        lines.append("fleet watermark: none yet (an aggregation task has no watermark)")
    lines.append(f"duplicates dropped: {view.duplicates_dropped():,}")
    if view.exchange_leases is None:
        lines.append(f"no lease table {exchange_table(view.app)!r}: aggregation owners unknown")
    if not view.tasks:
        lines.append("no task status files: pass the job's checkpoint root as --checkpoint")
    lines += [f"skipped {s}" for s in view.skipped]
    return lines
