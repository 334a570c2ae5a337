"""DynamoDB cost of the lease table at steady state: streamkit measured, KCL derived.

Usage:
    .venv/bin/python bench/lease_cost.py [--minutes 3] [--shards 8] [--workers 2]
                                         [--endpoint URL]

Starts LocalStack (unless ``--endpoint`` names a DynamoDB endpoint), creates a lease table
with ``--shards`` unowned leases and runs ``--workers`` lease coordinators with their
defaults (failover 10 s, renewal every failover/3, take cycle every 2 x failover, leader
election on, as the consumer runs them: decided from the take cycles' scans, no write; the
leader's lease-table audit reads those scans too, so it adds nothing). After the workers hold
``shards / workers`` leases each and one more take cycle has passed, every store's call
counts are read, again ``--minutes`` later, and the difference is turned into capacity
units with DynamoDB's published rules (on-demand; items rounded up to 1 KB per write,
4 KB per read; an eventually consistent read costs half), using the sizes of the items
actually in the table. DynamoDB's own ``ConsumedCapacity`` for one scan is printed as a
cross-check. Checkpoint writes are left out on both sides (one UpdateItem each, at the
application's checkpoint frequency).

KCL's figures are derived from its defaults (``LeaseManagementConfig``, KCL 2.x and 3.x's
2.x-compatible mode): renewal every failover/3 (18 UpdateItem per lease per minute), a
take cycle (one eventually consistent scan) every 2 x failover per worker, the leader
decider's scan every 5 minutes per worker, and the leader's lease-recovery audit scan every
2 minutes. KCL 3.x in its native mode adds a leader lock heartbeat (2 writes a minute) and
worker metrics (2 writes a minute per worker) in two more tables: listed beside.

Writes ``bench/results/lease_cost_<UTC time>.{md,json}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streamkit_kinesis.leases import DynamoDBLeaseStore, Lease, LeaseCoordinator

from streamkit.config import AwsEndpoint

RESULTS = Path(__file__).with_name("results")
FAILOVER = 10.0


def attribute_size(value: dict[str, Any]) -> int:
    """Bytes DynamoDB bills for one attribute value (S, N, SS; what lease items hold)."""
    if "S" in value:
        return len(value["S"].encode())
    if "N" in value:
        digits = value["N"].lstrip("-").replace(".", "").lstrip("0") or "0"
        return math.ceil(len(digits) / 2) + 1
    if "SS" in value:
        return sum(len(v.encode()) for v in value["SS"])
    raise ValueError(f"unexpected attribute type in a lease item: {value!r}")


def item_size(item: dict[str, dict[str, Any]]) -> int:
    """An item's billed size: attribute names plus values."""
    return sum(len(name.encode()) + attribute_size(v) for name, v in item.items())


def units(calls: dict[str, float], sizes: list[int], table_size: int) -> dict[str, float]:
    """Read and write capacity units of ``calls`` on a table of items of ``sizes``."""
    largest = max(sizes)
    write = math.ceil(largest / 1024)
    scan = 0.5 * max(1, math.ceil(table_size / 4096))  # eventually consistent, one page
    get = math.ceil(largest / 4096)  # strongly consistent
    writes = write * sum(calls.get(op, 0) for op in ("UpdateItem", "PutItem", "DeleteItem"))
    reads = scan * calls.get("Scan", 0) + get * calls.get("GetItem", 0)
    return {"read_units": reads, "write_units": writes}


def kcl_per_minute(shards: int, workers: int, sizes: list[int], table: int) -> dict[str, Any]:
    """KCL 2.x defaults, per minute, for the whole application."""
    calls: dict[str, float] = {
        "UpdateItem": shards * 60 / (FAILOVER / 3),  # renewals
        "Scan": workers * 60 / (2 * FAILOVER) + workers / 5 + 1 / 2,  # taker, decider, audit
    }
    return {"calls": calls, **units(calls, sizes, table)}


async def table_sizes(store: DynamoDBLeaseStore) -> tuple[list[int], int, Any]:
    """Billed sizes of every item, their total, and the server's ConsumedCapacity of a scan."""
    client = store.endpoint.client("dynamodb")
    page = await asyncio.to_thread(
        client.scan, TableName=store.table_name, ReturnConsumedCapacity="TOTAL"
    )
    sizes = [item_size(i) for i in page["Items"]]
    return sizes, sum(sizes), page.get("ConsumedCapacity")


async def run(endpoint: AwsEndpoint, args: argparse.Namespace) -> dict[str, Any]:
    table = f"lease-cost-{uuid.uuid4().hex[:8]}"
    admin = DynamoDBLeaseStore(endpoint, table)
    await admin.create_table_if_not_exists()
    for i in range(args.shards):
        await admin.create_lease_if_not_exists(Lease(f"shardId-{i:012d}"))
    stores = [DynamoDBLeaseStore(endpoint, table) for _ in range(args.workers)]
    workers = [
        LeaseCoordinator(s, f"worker-{n}", elect_leader=True, create_table=False)
        for n, s in enumerate(stores)
    ]
    for w in workers:
        await w.start()

    try:
        share = args.shards // args.workers
        deadline = time.monotonic() + args.warmup_max
        while not all(len(w.held_shard_ids()) == share for w in workers):
            if time.monotonic() > deadline:
                raise SystemExit(f"not balanced after {args.warmup_max}s")
            await asyncio.sleep(1)
        await asyncio.sleep(2 * FAILOVER + 1)
        before = [dict(s.call_counts()) for s in stores]
        moved = sum(w.metrics().losses for w in workers)  # steals while balancing
        started = time.monotonic()
        await asyncio.sleep(args.minutes * 60)
        minutes = (time.monotonic() - started) / 60
        after = [dict(s.call_counts()) for s in stores]
        held = [sorted(w.held_shard_ids()) for w in workers]
        leaders = [w.worker_id for w in workers if w.is_leader]
        losses = sum(w.metrics().losses for w in workers) - moved
    finally:
        for w in workers:
            await w.release_all()
            await w.stop()
    sizes, total, consumed = await table_sizes(admin)
    await admin.delete_table()
    calls: dict[str, int] = {}
    for b, a in zip(before, after, strict=True):
        for op, n in a.items():
            calls[op] = calls.get(op, 0) + n - b.get(op, 0)
    per_minute = {op: n / minutes for op, n in sorted(calls.items())}
    return {
        "minutes": minutes, "held": held, "leaders": leaders, "losses": losses,
        "warmup_steals": moved,
        "item_sizes": sizes, "table_size": total, "scan_consumed_capacity": consumed,
        "streamkit": {"calls": per_minute, **units(per_minute, sizes, total)},
        "kcl": kcl_per_minute(args.shards, args.workers, sizes, total),
    }  # fmt: skip


def report(result: dict[str, Any], args: argparse.Namespace) -> str:
    shards, minutes = args.shards, result["minutes"]
    sk, kcl = result["streamkit"], result["kcl"]
    sk_reads, sk_writes = (sk[k] / shards for k in ("read_units", "write_units"))
    kcl_reads, kcl_writes = (kcl[k] / shards for k in ("read_units", "write_units"))
    kcl3_writes = kcl_writes + (2 + 2 * args.workers) / shards
    rows = [
        "| per lease per minute | streamkit (measured) | KCL 2.x (derived) | KCL 3.x native |",
        "|---|---|---|---|",
        f"| read units | {sk_reads:.3f} | {kcl_reads:.3f} | {kcl_reads:.3f} + LAM reads |",
        f"| write units | {sk_writes:.2f} | {kcl_writes:.2f} | {kcl3_writes:.2f} |",
    ]
    calls = ", ".join(f"{op} {n:.1f}" for op, n in sk["calls"].items())
    kcalls = ", ".join(f"{op} {n:.1f}" for op, n in kcl["calls"].items())
    return "\n".join(
        [
            f"# Lease table cost: {shards} shards, {args.workers} workers, steady state",
            "",
            *rows,
            "",
            f"- measured over {minutes:.2f} min; leases held {result['held']}; leader "
            f"{result['leaders']}; lease losses while measuring {result['losses']} (leases "
            f"moved by balancing steals during the warm-up: {result['warmup_steals']})",
            f"- streamkit calls per minute (all workers): {calls}",
            f"- KCL calls per minute (derived): {kcalls}",
            f"- item sizes {result['item_sizes']} B (table {result['table_size']} B); the "
            f"server's ConsumedCapacity for one scan: {result['scan_consumed_capacity']}",
        ]
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--warmup-max", type=float, default=240.0)
    p.add_argument("--endpoint", help="a DynamoDB endpoint URL (default: start LocalStack)")
    args = p.parse_args()
    with contextlib.ExitStack() as servers:
        if args.endpoint:
            endpoint = AwsEndpoint.local(args.endpoint)
        else:
            from streamkit.testing.servers import start_localstack

            endpoint = servers.enter_context(start_localstack()).endpoint
        result = asyncio.run(run(endpoint, args))
    text = report(result, args)
    print(text)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"lease_cost_{stamp}.md").write_text(text + "\n")
    (RESULTS / f"lease_cost_{stamp}.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
