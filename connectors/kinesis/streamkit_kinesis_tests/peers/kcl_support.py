"""Helpers for the Java KCL peer tests: a fleet of mixed workers, raw lease items, and the
duplicate bound computed from the checkpoints the workers resumed from.

Both kinds of worker write the same JSON lines (``shard``, ``seq``, ``data``, ``worker``,
``t``) and the same ``initialize`` events (``shard``, ``start``: the lease's checkpoint as
the worker read it from the table when it took the lease).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streamkit.testing.peers.kcl import KclWorker, start_kcl_worker
from streamkit_kinesis_tests.consumer.consumer_support import WorkerProcess

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path

    from streamkit.config import AwsEndpoint

FAILOVER = 3.0
"""Failover time of every worker, KCL and streamkit alike (KCL's failoverTimeMillis)."""
KCL_TAKE_INTERVAL = 2 * (FAILOVER + 0.025)
"""KCL 2.x's lease taker period: ``(failoverTimeMillis + epsilonMillis) * 2``."""
KCL_TIMINGS: dict[str, Any] = {
    "failover_time": FAILOVER,
    "idle_time": 0.2,
    "shard_sync_interval": 5.0,
    "parent_poll_interval": 0.5,
}
STREAMKIT_TIMINGS: dict[str, Any] = {"failover": FAILOVER, "take_interval": 0.5, "idle_time": 0.2}
CHANGED_BY_TAKE_AND_CHECKPOINT = frozenset(
    {"leaseOwner", "leaseCounter", "checkpoint", "checkpointSubSequenceNumber",
     "ownerSwitchesSinceCheckpoint"}
)  # fmt: skip
"""The attributes a take, renew or checkpoint may change; every other one must survive."""

Item = dict[str, dict[str, Any]]


def position(checkpoint: str) -> int:
    """A checkpoint as a number; TRIM_HORIZON (nothing checkpointed yet) is before all."""
    return -1 if checkpoint == "TRIM_HORIZON" else int(checkpoint)


def raw_items(endpoint: AwsEndpoint, table: str) -> dict[str, Item]:
    """The lease items exactly as stored (plain boto3, consistent scan), by ``leaseKey``."""
    client = endpoint.client("dynamodb")
    found: dict[str, Item] = {}
    for page in client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        for item in page.get("Items", []):
            found[item["leaseKey"]["S"]] = item
    return found


def owner_counts(items: dict[str, Item]) -> dict[str, int]:
    """Leases per owner (``-`` for unowned)."""
    return dict(Counter(i.get("leaseOwner", {}).get("S", "-") for i in items.values()))


def checkpoints(items: dict[str, Item]) -> dict[str, int]:
    """Checkpoint of every lease, as a number (see :func:`position`)."""
    return {key: position(item["checkpoint"]["S"]) for key, item in items.items()}


async def poll_items(
    endpoint: AwsEndpoint,
    table: str,
    predicate: Callable[[dict[str, Item]], bool],
    timeout: float,
    what: str,
) -> dict[str, Item]:
    """Scan the lease table until ``predicate`` holds; fails after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: dict[str, Item] = {}
    while time.monotonic() < deadline:
        try:
            last = await asyncio.to_thread(raw_items, endpoint, table)
        except Exception:  # the table does not exist yet
            last = {}
        if predicate(last):
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(
        f"timed out after {timeout:.0f} s waiting for {what}; owners {owner_counts(last)}"
    )


@dataclass(frozen=True)
class Takeover:
    """A worker starting to process a shard from the checkpoint it read in the table."""

    worker: str
    shard: str
    start: int
    t: float


@dataclass
class Fleet:
    """KCL and streamkit workers of one application; :meth:`close` stops all by PID."""

    endpoint: AwsEndpoint
    stream: str
    app: str
    tmp: Path
    kcl_workers: dict[str, KclWorker] = field(default_factory=dict)
    streamkit_workers: dict[str, WorkerProcess] = field(default_factory=dict)

    def start_kcl(self, worker_id: str, **opts: Any) -> KclWorker:
        worker = start_kcl_worker(
            self.endpoint, self.stream, self.app, worker_id, self.tmp, **{**KCL_TIMINGS, **opts}
        )
        self.kcl_workers[worker_id] = worker
        return worker

    def start_streamkit(self, worker_id: str, **opts: Any) -> WorkerProcess:
        worker = WorkerProcess(
            self.endpoint, self.stream, self.app, worker_id, self.tmp,
            **{**STREAMKIT_TIMINGS, **opts},
        )  # fmt: skip
        self.streamkit_workers[worker_id] = worker
        return worker

    def records(self, workers: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Processed records of ``workers`` (default: all), as logged."""
        names = set(workers) if workers is not None else None
        found: list[dict[str, Any]] = []
        for worker_id, worker in self._all():
            if names is None or worker_id in names:
                found.extend(worker.records())
        return found

    def takeovers(self, since: float) -> list[Takeover]:
        """``initialize`` events of every worker at or after wall-clock ``since``."""
        return [
            Takeover(e["worker"], e["shard"], position(e["start"]), float(e["t"]))
            for _, worker in self._all()
            for e in worker.events("initialize")
            if float(e["t"]) >= since
        ]

    def logs(self) -> str:
        """The end of every worker's log, for failure messages."""
        parts = [f"--- {w}\n{k.log_tail(40)}" for w, k in self.kcl_workers.items()]
        parts += [f"--- {w}\n{s.log()[-3000:]}" for w, s in self.streamkit_workers.items()]
        return "\n".join(parts)

    def close(self) -> None:
        """Stop every worker by its PID (KCL: SIGTERM then SIGKILL; streamkit: SIGKILL)."""
        for kcl in self.kcl_workers.values():
            kcl.stop()
        for sk in self.streamkit_workers.values():
            sk.close()

    def _all(self) -> list[tuple[str, KclWorker | WorkerProcess]]:
        return [*self.kcl_workers.items(), *self.streamkit_workers.items()]


@dataclass(frozen=True)
class DuplicateReport:
    """Duplicates per shard against the bound from the checkpoints workers resumed from."""

    duplicates: dict[str, int]
    allowed: dict[str, int]


def duplicate_report(records: list[dict[str, Any]], takeovers: list[Takeover]) -> DuplicateReport:
    """Check that every duplicate lies after a checkpoint some worker resumed from.

    For each takeover of shard ``s`` from checkpoint ``c`` by worker ``W``, the records of
    ``s`` after ``c`` that other workers had processed may be processed again: they are
    "the records after the last checkpoint". The allowance of ``s`` is the sum of those
    counts; a duplicate at or before every such ``c`` fails at once.
    """
    seen: dict[str, dict[int, list[str]]] = {}
    for r in records:
        seen.setdefault(r["shard"], {}).setdefault(int(r["seq"]), []).append(r["worker"])
    duplicates: dict[str, int] = {}
    allowed: dict[str, int] = {}
    for shard, by_seq in seen.items():
        mine = [t for t in takeovers if t.shard == shard]
        allowed[shard] = sum(
            sum(1 for seq, ws in by_seq.items() if seq > t.start and set(ws) - {t.worker})
            for t in mine
        )
        dup = {seq: len(ws) - 1 for seq, ws in by_seq.items() if len(ws) > 1}
        duplicates[shard] = sum(dup.values())
        early = sorted(seq for seq in dup if not any(seq > t.start for t in mine))
        assert not early, (
            f"shard {shard}: records {early[:5]} processed twice although no worker resumed "
            f"from a checkpoint before them (takeovers {mine})"
        )
    return DuplicateReport(duplicates, allowed)
