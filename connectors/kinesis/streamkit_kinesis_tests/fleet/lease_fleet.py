"""A fleet of in-process lease workers on the two lease tables of a fleet app (FLEET.md 1).

Each simulated worker runs the project's real :class:`LeaseCoordinator` (taker + renewer)
on both tables, ``<app>`` (source leases) and ``<app>-exchange`` (aggregation leases), each
through its own :class:`DynamoDBLeaseStore` and hence its own boto3 client. No Kinesis is
read: leases only. An observer (its own client, not counted) reads both tables with
strongly consistent scans; balance and safety are judged on what it sees:

- balanced: every active lease of a table is owned by a live worker and every live worker
  owns floor or ceil of leases / live workers of that table;
- safe: a worker's held view of a lease whose counter equals the table's names that worker
  as the owner (counters are unique per write, so two workers can never both hold the
  current counter); a stale view (lower counter) cannot write and is only counted.

Used by ``bench/fleet_leases.py`` and ``test_lease_balance.py``.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streamkit_kinesis.leases import DynamoDBLeaseStore, Lease, LeaseCoordinator
from streamkit_kinesis.leases import dynamodb_items as items

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from streamkit.config import AwsEndpoint

KINDS = ("source", "aggregation")


@dataclass(frozen=True)
class Timing:
    """Lease timing of every worker (the coordinator's options)."""

    failover_time: float
    take_interval: float
    renew_interval: float

    @classmethod
    def kcl(cls, scale: float = 1.0) -> Timing:
        """KCL's defaults (failover 10 s, take every 2x, renew every 1/3), times ``scale``."""
        failover = 10.0 * scale
        return cls(failover, 2 * failover, failover / 3)


@dataclass
class SimWorker:
    """One worker: a coordinator per table, each with its own store (own client)."""

    worker_id: str
    coordinators: dict[str, LeaseCoordinator]
    alive: bool = True

    def calls(self, kind: str) -> dict[str, int]:
        """DynamoDB calls of this worker on one table (renewal lane included)."""
        return dict(self.coordinators[kind].store.call_counts())


@dataclass(frozen=True)
class Observation:
    """One strongly consistent look at both tables and every live worker's held view."""

    at: float
    owners: dict[str, Counter[str]]
    """Per kind: owner (``"-"`` unowned) -> leases."""
    dead_or_unowned: dict[str, int]
    """Per kind: active leases not owned by a live worker."""
    violations: list[str]
    """Safety violations (a held current counter whose table owner is someone else)."""
    stale_double_holds: int
    """Leases a second worker still believes it holds with an outdated counter."""
    live: tuple[str, ...]

    def balanced(self, kind: str) -> bool:
        """Every lease of ``kind`` owned by a live worker, each within floor/ceil."""
        if self.dead_or_unowned[kind] or not self.live:
            return False
        total = sum(self.owners[kind].values())
        lo, hi = total // len(self.live), math.ceil(total / len(self.live))
        return all(lo <= self.owners[kind].get(w, 0) <= hi for w in self.live)

    @property
    def all_balanced(self) -> bool:
        """Both tables balanced."""
        return all(self.balanced(kind) for kind in KINDS)

    def spread(self, kind: str) -> tuple[int, int]:
        """(min, max) leases per live worker."""
        counts = [self.owners[kind].get(w, 0) for w in self.live]
        return (min(counts), max(counts)) if counts else (0, 0)


@dataclass
class LeaseFleet:
    """Two lease tables and ``workers`` simulated workers on them.

    ``coordinator`` builds each coordinator (defaults to the real one with ``timing``);
    a test may pass a variant to plant a bug.
    """

    endpoint: AwsEndpoint
    source_leases: int
    aggregation_leases: int
    workers: int
    timing: Timing
    max_steal: int = 1
    announce: bool = True
    """The coordinators' announcing first take (meant for fleets); False: KCL's race."""
    app: str = field(default_factory=lambda: f"fleet-sim-{uuid.uuid4().hex[:8]}")
    seed: int = 14
    coordinator: Callable[..., LeaseCoordinator] = LeaseCoordinator
    members: list[SimWorker] = field(default_factory=list)
    started_at: float = 0.0

    @property
    def tables(self) -> dict[str, str]:
        """Kind -> table name (FLEET.md decision 1)."""
        return {"source": self.app, "aggregation": f"{self.app}-exchange"}

    def _sizes(self) -> dict[str, int]:
        return {"source": self.source_leases, "aggregation": self.aggregation_leases}

    async def create_tables(self) -> None:
        """Create both tables with unowned leases (uncounted admin client)."""
        for kind, table in self.tables.items():
            admin = DynamoDBLeaseStore(self.endpoint, table, threads=8)
            await admin.create_table_if_not_exists()
            prefix = "shardId" if kind == "source" else "exchange-shardId"
            keys = [f"{prefix}-{i:012d}" for i in range(self._sizes()[kind])]
            for i in range(0, len(keys), 64):
                await asyncio.gather(
                    *(admin.create_lease_if_not_exists(Lease(k)) for k in keys[i : i + 64])
                )
            admin.close()

    def build_workers(self) -> None:
        """Build every worker's stores and coordinators (clients are created here)."""
        rng = random.Random(self.seed)
        for n in range(self.workers):
            worker_id = f"worker-{n:03d}"
            coordinators = {
                kind: self.coordinator(
                    DynamoDBLeaseStore(self.endpoint, table, threads=2),
                    worker_id,
                    failover_time=self.timing.failover_time,
                    take_interval=self.timing.take_interval,
                    renew_interval=self.timing.renew_interval,
                    max_steal=self.max_steal,
                    rng=random.Random(rng.random()),
                    create_table=False,
                    announce=self.announce,
                )
                for kind, table in self.tables.items()
            }
            self.members.append(SimWorker(worker_id, coordinators))

    async def start(self) -> None:
        """Start every coordinator at once; :attr:`started_at` is the monotonic start time."""
        self.started_at = time.monotonic()
        await asyncio.gather(*(c.start() for m in self.members for c in m.coordinators.values()))

    async def kill(self, member: SimWorker) -> None:
        """Stop ``member``'s renewals and takes abruptly, as SIGKILL would: nothing is
        released, its leases expire in the table after the failover time."""
        member.alive = False
        for c in member.coordinators.values():
            await c.stop()

    def live(self) -> list[SimWorker]:
        """Workers not killed."""
        return [m for m in self.members if m.alive]

    async def scan(self, kind: str) -> list[Lease]:
        """Every lease of ``kind``, strongly consistent (observer client, uncounted)."""
        client = self._observer()
        leases: list[Lease] = []
        start: dict[str, Any] | None = None
        while True:
            kwargs: dict[str, Any] = {"TableName": self.tables[kind], "ConsistentRead": True}
            if start:
                kwargs["ExclusiveStartKey"] = start
            page = await asyncio.to_thread(client.scan, **kwargs)
            leases.extend(items.from_item(i) for i in page.get("Items", []))
            start = page.get("LastEvaluatedKey")
            if not start:
                return leases

    def _observer(self) -> Any:
        if not hasattr(self, "_client"):
            self._client = self.endpoint.client("dynamodb", read_timeout=30)
        return self._client

    async def observe(self) -> Observation:
        """Scan both tables, then read every live worker's held view."""
        tables = {kind: await self.scan(kind) for kind in KINDS}
        live = self.live()
        live_ids = {m.worker_id for m in live}
        owners: dict[str, Counter[str]] = {}
        dead: dict[str, int] = {}
        violations: list[str] = []
        stale = 0
        for kind, leases in tables.items():
            owners[kind] = Counter(lease.lease_owner or "-" for lease in leases)
            dead[kind] = sum(1 for lease in leases if lease.lease_owner not in live_ids)
            current = {lease.lease_key: lease for lease in leases}
            holders: Counter[str] = Counter()
            for m in live:
                coordinator = m.coordinators[kind]
                for key in coordinator.held.shard_ids():
                    held = coordinator.held_lease(key)
                    row = current.get(key)
                    if held is None or row is None:
                        continue
                    holders[key] += 1
                    if held.lease_counter == row.lease_counter and row.lease_owner != m.worker_id:
                        violations.append(
                            f"{kind} {key}: {m.worker_id} holds counter {held.lease_counter}, "
                            f"table says owner {row.lease_owner}"
                        )
            stale += sum(n - 1 for n in holders.values() if n > 1)
        return Observation(
            time.monotonic(), owners, dead, violations, stale, tuple(sorted(live_ids))
        )

    async def wait_balanced(
        self, deadline: float, poll: float, log: list[Observation] | None = None
    ) -> Observation:
        """Observe every ``poll`` s until both tables are balanced or ``deadline`` (monotonic)
        passes; returns the last observation. Every observation is appended to ``log``."""
        while True:
            obs = await self.observe()
            if log is not None:
                log.append(obs)
            if obs.all_balanced or time.monotonic() > deadline:
                return obs
            await asyncio.sleep(poll)

    def counts(self, name: str) -> dict[str, int]:
        """A coordinator counter (``takes``, ``steals``, ``losses``...) summed per kind over
        every worker, killed ones included (their counts stop growing)."""
        return {
            kind: sum(getattr(m.coordinators[kind].metrics(), name) for m in self.members)
            for kind in KINDS
        }

    def calls(self) -> dict[str, dict[str, int]]:
        """Per kind: DynamoDB calls by operation, summed over live workers."""
        out: dict[str, dict[str, int]] = {kind: {} for kind in KINDS}
        for m in self.live():
            for kind in KINDS:
                for op, n in m.calls(kind).items():
                    out[kind][op] = out[kind].get(op, 0) + n
        return out

    async def close(self, delete: bool = True) -> None:
        """Stop every worker (no release: the tables are deleted) and delete the tables."""
        for m in self.members:
            for c in m.coordinators.values():
                await c.stop()
        if delete:
            for table in self.tables.values():
                await DynamoDBLeaseStore(self.endpoint, table).delete_table()


def diff_calls(
    after: Mapping[str, Mapping[str, int]], before: Mapping[str, Mapping[str, int]]
) -> dict[str, dict[str, int]]:
    """``after - before`` per kind and operation."""
    return {
        kind: {op: n - before.get(kind, {}).get(op, 0) for op, n in ops.items()}
        for kind, ops in after.items()
    }
