"""Issue 14, test 2: the result stays exact while the fleet changes under it, and source
and aggregation tasks rebalance within three lease cycles after each change. Three workers
start on an 8-shard stream; between three slices of the records (in event-time order,
watermark two minutes behind) a fourth worker joins, one is SIGKILLed and one stops
gracefully (SIGTERM, exit 0). The sink read as one dataset must equal DuckDB over the
records put.

Rebalance is measured from the lease tables, sampled about every 0.25 s while the fleet
runs (owners per lease over time): after each change, each table must reach balance (every
lease owned by a live worker, the live workers' counts within one of each other, none
empty) within three take cycles of every live worker, counted from the change as the table
shows it: the joiner's first lease; the leaver's last lease released; the SIGKILL itself,
plus the failover time (KCL: the dead worker's leases expire ``failover_time`` after its
last renewal, at or before the kill). Cycles are counted, not timed: each worker logs the
end of each of its take cycles per table (``STREAMKIT_FLEET_EVENTS``), and a sample of the
table that started after every live worker ended its third cycle must show the balance (a
loaded machine stretches cycles; it does not add any).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest
from streamkit_kinesis.leases import LEADER_LEASE_KEY, DynamoDBLeaseStore
from streamkit_kinesis.testing.streams import fresh_stream, unique

from streamkit_kinesis_tests.fleet.fleet_harness import (
    Fleet,
    close_and_collect,
    drop_fleet_tables,
    payloads,
    put_random_keys,
    same,
    sink_rows,
    truth,
    until,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack, pytest.mark.slow]

SHARDS = 8
EVENTS = 3000


FAILOVER = 6.0
"""The workers' failover time (fleet_job.py)."""
CYCLES = 3


@dataclass
class Sample:
    at: float
    """Unix time when the sample's Scans ended."""
    owners: dict[str, list[str | None]]
    """Per table, the owner of each lease."""
    scan: float
    """Seconds the Scans of this sample took."""

    @property
    def started(self) -> float:
        return self.at - self.scan


Cycles = dict[str, dict[str, list[float]]]
"""Per worker, per lease table, the Unix times its take cycles ended (in order)."""


def take_cycles(folder: Path) -> Cycles:
    """The take cycles the workers logged in ``folder`` (``STREAMKIT_FLEET_EVENTS``; a line:
    ``<unix time> <table> <event kind> <shard> <detail>``)."""
    found: Cycles = {}
    for f in sorted(folder.glob("*.log")):
        per_table = found.setdefault(f.stem, {})
        for line in f.read_text().splitlines():
            at, table, kind, *_ = line.split(" ", 4)
            if kind == "take_cycle":
                per_table.setdefault(table, []).append(float(at))
    return found


def cycles_done(cycles: Cycles, table: str, live: set[str], after: float) -> float:
    """When every worker of ``live`` had ended CYCLES take cycles of ``table`` after
    ``after`` (infinite while one has not)."""
    ends = []
    for w in live:
        mine = [t for t in cycles.get(w, {}).get(table, []) if t >= after]
        ends.append(mine[CYCLES - 1] if len(mine) >= CYCLES else math.inf)
    return max(ends)


@dataclass
class LeaseWatch:
    """Samples both lease tables of ``app`` until stopped."""

    ep: AwsEndpoint
    app: str
    samples: list[Sample] = field(default_factory=list)

    @property
    def tables(self) -> tuple[str, str]:
        return (self.app, f"{self.app}-exchange")

    async def run(self) -> None:
        while True:
            started = time.time()
            with contextlib.suppress(Exception):  # a table not created yet
                got = {t: await owners(self.ep, t) for t in self.tables}
                done = time.time()
                self.samples.append(Sample(done, got, done - started))
            await asyncio.sleep(0.25)

    def first(self, table: str, since: float, test: Callable[[list[str | None]], bool]) -> float:
        """When ``table`` first passed ``test`` at or after ``since``."""
        for x in self.samples:
            if x.at >= since and test(x.owners[table]):
                return x.at
        raise AssertionError(f"{table}: never seen after t={since:.1f}")

    def check(
        self, table: str, since: float, live: set[str], extra: float, what: str, *, cycles: Cycles
    ) -> None:
        """``table`` balanced over ``live`` within CYCLES take cycles of each live worker
        ended after ``since + extra``: no sample that started once they had ended still
        shows it unbalanced."""
        done = self.first(table, since, lambda owned: balanced(owned, live))
        due = cycles_done(cycles, table, live, since + extra)
        late = [x for x in self.samples if since <= x.at < done and x.started >= due]
        assert not late, (
            f"{what}: {table} still unbalanced {late[-1].started - due:.1f}s after every live "
            f"worker ended {CYCLES} take cycles ({late[-1].owners[table]}); balanced "
            f"{done - since:.1f}s after the change"
        )


def balanced(owned: list[str | None], live: set[str]) -> bool:
    """Every lease owned by a live worker; counts within one of each other; none empty."""
    if not owned or any(o not in live for o in owned):
        return False
    counts = [owned.count(w) for w in live]
    return min(counts) >= 1 and max(counts) - min(counts) <= 1


async def owners(ep: AwsEndpoint, table: str) -> list[str | None]:
    """The owner of every lease of ``table`` (not the leader lease)."""
    leases = await DynamoDBLeaseStore(ep, table).list_leases()
    return [x.lease_owner for x in leases if x.lease_key != LEADER_LEASE_KEY]


def both_balanced(watch: LeaseWatch, live: set[str]) -> bool:
    """Both tables balanced over ``live`` in the latest sample."""
    return bool(watch.samples) and all(
        balanced(watch.samples[-1].owners[t], live) for t in watch.tables
    )


async def holds(ep: AwsEndpoint, app: str, present: set[str], absent: set[str]) -> bool:
    """Every worker of ``present`` holds a lease of both tables, none of ``absent`` any."""
    for table in (app, f"{app}-exchange"):
        held = await owners(ep, table)
        if not present <= set(held) or absent & set(held):
            return False
    return True


async def test_join_sigkill_and_graceful_leave_stay_exact(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    ep = localstack_endpoint
    data = payloads(EVENTS, seed=22, ordered=True)
    want = truth(data)
    third = len(data) // 3
    async with fresh_stream(ep, SHARDS, "fleetm") as (stream, _):
        fleet = Fleet(ep, stream, unique("fm"), tmp_path, "--delay", "2 minutes")
        logged = tmp_path / "events"
        env = {"STREAMKIT_FLEET_EVENTS": str(logged)}
        app = fleet.app
        watch = LeaseWatch(ep, app)
        sampler = asyncio.create_task(watch.run())
        try:
            last = await asyncio.to_thread(put_random_keys, ep, stream, data[:third])
            workers = {name: await fleet.add(name, **env) for name in ("w0", "w1", "w2")}
            await fleet.read_all(last)
            joined = time.time()
            workers["w3"] = await fleet.add("w3", **env)  # joins
            await until("w3 holds leases", lambda: holds(ep, app, {"w3"}, set()), 300)
            await until(
                "balanced over 4", lambda: both_balanced(watch, {"w0", "w1", "w2", "w3"}), 300
            )
            more = await asyncio.to_thread(put_random_keys, ep, stream, data[third : 2 * third])
            killed = time.time()
            await workers["w1"].kill()  # SIGKILL, while the second slice is read
            await until("w1's leases taken over", lambda: holds(ep, app, set(), {"w1"}), 300)
            await until("balanced over 3", lambda: both_balanced(watch, {"w0", "w2", "w3"}), 300)
            left = time.time()
            code = await workers["w2"].terminate()  # graceful leave
            assert code == 0, fleet.tail()
            await until("w2's leases taken over", lambda: holds(ep, app, set(), {"w2"}), 300)
            await until("balanced over 2", lambda: both_balanced(watch, {"w0", "w3"}), 300)
            rest = await asyncio.to_thread(put_random_keys, ep, stream, data[2 * third :])
            for part in (more, rest):
                last = {s: max(last.get(s, 0), part.get(s, 0)) for s in last.keys() | part.keys()}
            await fleet.read_all(last)
            await close_and_collect(ep, stream, [fleet], len(want))
            await fleet.stop()
        finally:
            sampler.cancel()
            await fleet.kill_all()
            await drop_fleet_tables(ep, app)
    got = sink_rows(fleet.out)
    assert same(got, want), f"{len(got)} rows vs {len(want)}: {sorted(set(got) ^ set(want))[:10]}"
    cycles = take_cycles(logged)
    assert {w: set(t) for w, t in cycles.items()} == {
        w: set(watch.tables) for w in ("w0", "w1", "w2", "w3")
    }  # every worker logged its cycles of both tables (none: every check would pass)
    for table in watch.tables:
        came = watch.first(table, joined, lambda owned: "w3" in owned)
        watch.check(table, came, {"w0", "w1", "w2", "w3"}, 0.0, "w3 joined", cycles=cycles)
        watch.check(table, killed, {"w0", "w2", "w3"}, FAILOVER, "w1 SIGKILLed", cycles=cycles)
        gone = watch.first(table, left, lambda owned: "w2" not in owned)
        watch.check(table, gone, {"w0", "w3"}, 0.0, "w2 left", cycles=cycles)
