"""GetRecords and lease-table cost of the Kinesis stream source at its defaults, against
what KCL's defaults imply (issue 12 item 10).

Usage:
    nice .venv/bin/python bench/kinesis_polling_cost.py [--minutes 2] [--reps 3]
                                                        [--shards 8] [--rate 50]

Kinesis is kinesalite, the lease table LocalStack's DynamoDB (both started here). For each
rep and each scenario (``idle``: nothing put; ``busy``: ``--rate`` records/s put to every
shard, spread over the measurement) a fresh ``--shards`` stream gets two workers: two
:class:`KinesisStreamSource` of one app name, default settings (no ``consumer_options``,
default ``checkpoint_interval``), each driven as the engine drives it with its default
trigger: ``next_batch`` back to back, ``commit`` after each batch. Once each worker holds
``shards / 2`` leases and 25 s more have passed, ``--minutes`` are measured:

- Kinesis calls counted on the wire (botocore ``before-send`` of each worker's client,
  so retries count too): GetRecords per shard per second, ListShards per minute;
- lease-table calls (every UpdateItem, PutItem, DeleteItem, GetItem, Scan of both
  workers: renewals, take cycles, checkpoints; the leader decision and the lease-table
  audit read the take cycles' scans and write nothing), turned into
  capacity units per lease per minute with :func:`lease_cost.units` (on-demand rules, the
  item sizes actually in the table).

KCL figures, derived from its defaults (KCL 2.x/3.x, polling):
- GetRecords: ``SimpleRecordsFetcherFactory.idleMillisBetweenCalls = 1500L`` and
  ``KinesisSleepTimeController`` sleep until 1500 ms have passed since the previous
  successful call returned, before EVERY call (busy or idle): at most 1 / 1.5 s = 0.667
  calls per shard per second (1 / (1.5 s + call latency) in fact).
- DynamoDB: :func:`lease_cost.kcl_per_minute` (renewal every failover/3, a take-cycle scan
  every 2 x failover per worker, the leader decider's and the lease-recovery auditor's
  scans), plus, in the busy case, one checkpoint per shard per minute (the KCL samples'
  ``CHECKPOINT_INTERVAL_MILLIS = 60000L``; KCL leaves the frequency to the application,
  and does not call ``processRecords`` for empty reads by default, so idle shards are not
  checkpointed).
- ListShards: 0 at steady state (the leader's periodic audit reads the lease table and
  lists shards only after it saw the same hole in the leases 3 times).

Medians over reps. Writes ``bench/results/kinesis_polling_cost_<UTC time>.{md,json}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lease_cost import kcl_per_minute, table_sizes, units
from streamkit_kinesis.admin import StreamAdmin
from streamkit_kinesis.leases import DynamoDBLeaseStore, Lease
from streamkit_kinesis.shards import list_shards_blocking
from streamkit_kinesis.source import KinesisStreamSource
from streamkit_kinesis.types import TRIM_HORIZON

from streamkit.config import AwsEndpoint
from streamkit.testing.servers import start_kinesalite, start_localstack

RESULTS = Path(__file__).with_name("results")
WORKERS = 2
KCL_IDLE = 1.5
KCL_GET_RECORDS_PER_S = 1 / KCL_IDLE


class WireCounter:
    """Kinesis requests sent by one client, by operation (botocore's before-send)."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def __call__(self, event_name: str, **_: Any) -> None:
        op = event_name.rsplit(".", 1)[-1]
        self.calls[op] = self.calls.get(op, 0) + 1


def producer(endpoint: AwsEndpoint, stream: str, per_s: float, stop: threading.Event) -> None:
    """Put ``per_s`` records a second (random keys), in 4 PutRecords a second."""
    client = endpoint.client("kinesis")
    n, tick = 0, 0.25
    while not stop.is_set():
        started = time.monotonic()
        count = max(1, round(per_s * tick))
        entries = [
            {"Data": json.dumps({"id": n + i, "action": "click"}).encode(),
             "PartitionKey": uuid.uuid4().hex}
            for i in range(count)
        ]  # fmt: skip
        n += count
        client.put_records(StreamName=stream, Records=entries)
        stop.wait(max(0.0, tick - (time.monotonic() - started)))


async def drive(source: KinesisStreamSource, stop: asyncio.Event) -> int:
    """The engine's loop at the default trigger: batches back to back, commit after each."""
    rows = 0
    while not stop.is_set():
        batch = await source.next_batch(0.5)
        if batch is not None:
            rows += batch.rows.num_rows
            await source.commit(batch.end_offsets)
    return rows


async def seed_leases(kinesis: AwsEndpoint, dynamo: AwsEndpoint, stream: str, app: str) -> None:
    """Leases split between the two worker ids, as a previous run of both left them: each
    worker takes its own back at start (no minutes of one-steal-per-cycle balancing)."""
    store = DynamoDBLeaseStore(dynamo, app)
    await store.create_table_if_not_exists()
    shards = await asyncio.to_thread(list_shards_blocking, kinesis.client("kinesis"), stream)
    for n, shard in enumerate(shards):
        lease = Lease.for_shard(shard, TRIM_HORIZON)
        await store.create_lease_if_not_exists(replace(lease, lease_owner=worker(n % WORKERS)))


def worker(n: int) -> str:
    return f"worker-{n}"


def held(source: KinesisStreamSource) -> int:
    return len(source.consumer.held_shard_ids()) if source.consumer is not None else 0


def snapshot(sources: list[KinesisStreamSource], wires: list[WireCounter]) -> dict[str, Any]:
    dynamo: dict[str, int] = {}
    for s in sources:
        assert s.consumer is not None
        for op, n in s.consumer.store.call_counts().items():
            dynamo[op] = dynamo.get(op, 0) + n
    kinesis: dict[str, int] = {}
    for w in wires:
        for op, n in w.calls.items():
            kinesis[op] = kinesis.get(op, 0) + n
    return {"dynamodb": dynamo, "kinesis": kinesis, "t": time.monotonic()}


def diff(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {op: b[op] - a.get(op, 0) for op in sorted(b) if b[op] - a.get(op, 0)}


async def run_once(
    kinesis: AwsEndpoint, dynamo: AwsEndpoint, busy: bool, args: argparse.Namespace
) -> dict[str, Any]:
    stream, app = f"cost-{uuid.uuid4().hex[:8]}", f"cost-{uuid.uuid4().hex[:8]}"
    admin = StreamAdmin(kinesis)
    await admin.create_stream(stream, args.shards)
    stop_put = threading.Event()
    put = threading.Thread(
        target=producer, args=(kinesis, stream, args.rate * args.shards, stop_put), daemon=True
    )
    if busy:
        put.start()
    sources = [
        KinesisStreamSource(stream, app, kinesis, lease_endpoint=dynamo,
                            worker_id=worker(n), initial_position="LATEST")
        for n in range(WORKERS)
    ]  # fmt: skip
    stop = asyncio.Event()
    drivers: list[asyncio.Task[int]] = []
    try:
        await seed_leases(kinesis, dynamo, stream, app)
        for s in sources:
            await s.open(None)
        wires = []
        for s in sources:
            assert s.consumer is not None
            wire = WireCounter()
            client: Any = s.consumer.client  # a boto3 client: count requests as sent
            client.meta.events.register("before-send.kinesis", wire)
            wires.append(wire)
        drivers = [asyncio.create_task(drive(s, stop)) for s in sources]
        share, deadline = args.shards // WORKERS, time.monotonic() + args.warmup_max
        while not all(held(s) == share for s in sources):
            if time.monotonic() > deadline:
                raise SystemExit(f"not balanced after {args.warmup_max}s")
            await asyncio.sleep(1)
        await asyncio.sleep(25)
        before = snapshot(sources, wires)
        await asyncio.sleep(args.minutes * 60)
        after = snapshot(sources, wires)
        leases_held = [held(s) for s in sources]
    finally:
        stop.set()
        stop_put.set()
        rows = sum(await asyncio.gather(*drivers)) if drivers else 0
        for s in sources:
            await s.close()
        if busy:
            put.join()
    store = DynamoDBLeaseStore(dynamo, app)
    sizes, total, _ = await table_sizes(store)
    shard_sizes = [size for size in sizes if size]
    await store.delete_table()
    await admin.delete_stream(stream, wait=False)
    admin.close()
    minutes = (after["t"] - before["t"]) / 60
    dyn = {op: n / minutes for op, n in diff(before["dynamodb"], after["dynamodb"]).items()}
    kin = {op: n / minutes for op, n in diff(before["kinesis"], after["kinesis"]).items()}
    cost = units(dyn, shard_sizes, total)
    return {
        "minutes": minutes, "held": leases_held, "rows_read": rows,
        "get_records_per_shard_s": kin.get("GetRecords", 0) / 60 / args.shards,
        "list_shards_per_min": kin.get("ListShards", 0),
        "read_units_per_lease_min": cost["read_units"] / args.shards,
        "write_units_per_lease_min": cost["write_units"] / args.shards,
        "dynamodb_calls_per_min": dyn, "kinesis_calls_per_min": kin,
        "item_sizes": sizes, "table_size": total,
    }  # fmt: skip


def kcl_figures(busy: bool, shards: int, sizes: list[int], table: int) -> dict[str, float]:
    leases = kcl_per_minute(shards, WORKERS, sizes, table)
    checkpoints = 1.0 if busy else 0.0  # per lease per minute (write units: items < 1 KB)
    return {
        "get_records_per_shard_s": KCL_GET_RECORDS_PER_S,
        "list_shards_per_min": 0.0,
        "read_units_per_lease_min": leases["read_units"] / shards,
        "write_units_per_lease_min": leases["write_units"] / shards + checkpoints,
    }


METRICS = [
    ("get_records_per_shard_s", "GetRecords per shard per second", "{:.3f}"),
    ("read_units_per_lease_min", "DynamoDB read units per lease per minute", "{:.3f}"),
    ("write_units_per_lease_min", "DynamoDB write units per lease per minute", "{:.2f}"),
    ("list_shards_per_min", "ListShards per minute (whole app)", "{:.2f}"),
]


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        f"# Kinesis source cost at defaults: {args.shards} shards, {WORKERS} workers, "
        f"kinesalite + LocalStack DynamoDB",
        "",
        f"Medians of {args.reps} reps of {args.minutes} min each; busy = {args.rate} "
        "records/s put to each shard.",
        "",
        "| scenario | metric | streamkit (measured, median) | runs | KCL defaults (derived) |",
        "|---|---|---|---|---|",
    ]
    for scenario, res in results.items():
        for key, label, fmt in METRICS:
            runs = [r[key] for r in res["runs"]]
            med = statistics.median(runs)
            shown = ", ".join(fmt.format(v) for v in runs)
            kcl = fmt.format(res["kcl"][key])
            lines.append(f"| {scenario} | {label} | {fmt.format(med)} | {shown} | {kcl} |")
    lines += ["", "Calls per minute (whole app, first rep):", ""]
    for scenario, res in results.items():
        first = res["runs"][0]
        lines.append(f"- {scenario}: Kinesis {first['kinesis_calls_per_min']}; DynamoDB "
                     f"{first['dynamodb_calls_per_min']}; leases held {first['held']}; rows "
                     f"read {first['rows_read']}")  # fmt: skip
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with contextlib.ExitStack() as servers:
        kinesis = servers.enter_context(start_kinesalite()).endpoint
        dynamo = servers.enter_context(start_localstack()).endpoint
        for rep in range(args.reps):
            for scenario in ("idle", "busy"):
                print(f"rep {rep + 1}/{args.reps}: {scenario}", flush=True)
                run = await run_once(kinesis, dynamo, scenario == "busy", args)
                print(json.dumps({k: run[k] for k, _, _ in METRICS}), flush=True)
                res = results.setdefault(scenario, {"runs": []})
                res["runs"].append(run)
                res["kcl"] = kcl_figures(
                    scenario == "busy", args.shards, run["item_sizes"], run["table_size"]
                )
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=2.0)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--rate", type=float, default=50.0, help="busy: records/s per shard")
    p.add_argument("--warmup-max", type=float, default=240.0)
    args = p.parse_args()
    results = asyncio.run(main_async(args))
    text = report(results, args)
    print(text)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"kinesis_polling_cost_{stamp}.md").write_text(text + "\n")
    payload = {"args": vars(args), "results": results}
    (RESULTS / f"kinesis_polling_cost_{stamp}.json").write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
