"""Producer records/s into kinesalite: a bare PutRecords loop against ``KinesisProducer``
(issue 15 item 4).

One run, one kinesalite, a fresh 4-shard stream per measurement; the writers take turns
(interleaved reps, rotated order):

- ``bare PutRecords``: plain boto3, one thread, 500 records per call, one call in flight,
  failed entries resent (the producer's own concurrency: one PutRecords in flight);
- ``KinesisProducer``: defaults (``preserve_key_order=True``, ``linger_ms=50``), one
  ``await put()`` per record, then ``close()`` (flush);
- ``KinesisProducer aggregate``: the same with ``aggregate=True`` (KPL aggregation,
  50 KiB aggregates).

Every record has its own partition key (``k<i>``) and a ~100-byte JSON payload, built
before timing. Wall and CPU are timed from the first call to the last acknowledgement;
CPU is this process's (all threads), the server's is kinesalite's process tree. After each
measurement the stream is read back with plain boto3 and de-aggregated
(:func:`streamkit_kinesis.kpl.deaggregate`): the (payload, key) pairs read must be exactly
those put, or the run fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import _records_cli as records_cli
from _proc_tree import usage
from streamkit_kinesis.admin import StreamAdmin
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.kpl import deaggregate
from streamkit_kinesis.producer import KinesisProducer
from streamkit_kinesis.testing.streams import read_stream_blocking
from streamkit_kinesis.types import KinesisRecord

from streamkit.testing.servers import start_kinesalite

SHARDS = 4
BARE, PRODUCER, AGGREGATE = "bare PutRecords", "KinesisProducer", "KinesisProducer aggregate"

Records = list[tuple[bytes, str]]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def payload(i: int) -> bytes:
    event = {"id": i, "user": f"u{i % 997}", "action": "click", "v": i % 1000}
    return json.dumps(event | {"ts": "2026-12-02T10:00:00.000000Z"}).encode()


def records(n: int) -> Records:
    """``n`` (payload, partition key) pairs; payloads ~100 bytes of JSON."""
    return [(payload(i), f"k{i}") for i in range(n)]


def bare(client: Any, stream: str, put: Records) -> None:
    for start in range(0, len(put), 500):
        entries = [{"Data": d, "PartitionKey": k} for d, k in put[start : start + 500]]
        while entries:
            out = client.put_records(StreamName=stream, Records=entries)
            entries = [e for e, r in zip(entries, out["Records"], strict=True) if "ErrorCode" in r]


async def produce(client: Any, stream: str, put: Records, aggregate: bool) -> dict[str, int]:
    async with KinesisProducer(None, stream, client=client, aggregate=aggregate) as producer:
        for data, key in put:
            await producer.put(data, key)
    m = producer.metrics()
    return {"calls": m.calls, "kinesis_records": m.kinesis_records, "retries": m.retries}


def read_back(client: Any, stream: str) -> tuple[list[tuple[bytes, str]], int]:
    """The (payload, key) pairs of every user record in ``stream``, and the Kinesis
    record count."""
    raw = read_stream_blocking(client, stream)
    plain = [
        KinesisRecord(r["Data"], r["PartitionKey"], r["SequenceNumber"])
        for rs in raw.values()
        for r in rs
    ]
    return [(r.data, r.partition_key) for r in deaggregate(plain)], len(plain)


def measure(name: str, endpoint: Any, server_pid: int, put: Records) -> dict[str, Any]:
    stream = f"prod-{uuid.uuid4().hex[:8]}"
    admin = StreamAdmin(endpoint, poll_interval=0.1)
    asyncio.run(admin.create_stream(stream, SHARDS))
    plain = endpoint.client("kinesis")
    hooked = kinesis_client(endpoint)
    server = usage(server_pid).cpu_s
    wall, cpu = time.perf_counter(), time.process_time()
    extra: dict[str, int] = {}
    if name == BARE:
        bare(plain, stream, put)
    else:
        extra = asyncio.run(produce(hooked, stream, put, aggregate=name == AGGREGATE))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    server = usage(server_pid).cpu_s - server
    got, kinesis = read_back(plain, stream)
    if sorted(got) != sorted(put):
        raise RuntimeError(f"{name}: read back {len(got)} records, not the {len(put)} put")
    asyncio.run(admin.delete_stream(stream, wait=False))
    admin.close()
    n = len(put)
    return {
        "wall": wall, "cpu": cpu, "server_cpu": server, "kinesis_records": kinesis,
        "records_per_s": n / wall, "cpu_us_per_record": cpu / n * 1e6, **extra,
    }  # fmt: skip


def main(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"started": datetime.now(UTC).isoformat(), "args": vars(args)}
    names = [BARE, PRODUCER, AGGREGATE]
    put = records(args.records)
    result["payload_bytes"] = sum(len(d) for d, _ in put)
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    with start_kinesalite() as kinesalite:
        endpoint, pid = kinesalite.endpoint, kinesalite.process.pid
        for name in names:  # warm-up, untimed: imports, connections, first-use paths
            measure(name, endpoint, pid, put[: args.records // 20])
        result["load_before"] = os.getloadavg()
        for rep in range(args.reps):
            for k in range(len(names)):
                name = names[(rep + k) % len(names)]
                run = measure(name, endpoint, pid, put)
                log(f"rep {rep} {name}: {run}")
                runs[name].append(run)
        result["load_after"] = os.getloadavg()
    result["runs"] = runs
    result["writers"] = {n: summary(r) for n, r in runs.items()}
    for name in names:  # the ratio to the bare loop of the same rep (load drifts between reps)
        pairs = zip(runs[BARE], runs[name], strict=True)
        ratios = [bare_run["wall"] / run["wall"] for bare_run, run in pairs]
        result["writers"][name]["per_rep_ratio"] = statistics.median(ratios)
    return result


def summary(runs: list[dict[str, Any]]) -> dict[str, float]:
    keys = ("wall", "cpu", "server_cpu", "records_per_s", "cpu_us_per_record", "kinesis_records")
    return {k: statistics.median(float(r[k]) for r in runs) for k in keys}


def report(result: dict[str, Any]) -> str:
    writers = result["writers"]
    base = writers[BARE]["records_per_s"]
    n = result["args"]["records"]
    lines = [
        "| writer | records/s | vs bare | vs bare, per rep | wall s | client CPU s | "
        "CPU µs/record | kinesalite CPU µs/record | Kinesis records |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in writers.items():
        lines.append(
            f"| {name} | {s['records_per_s']:,.0f} | {s['records_per_s'] / base:.2f}x | "
            f"{s['per_rep_ratio']:.2f}x | "
            f"{s['wall']:.2f} | {s['cpu']:.2f} | {s['cpu_us_per_record']:.1f} | "
            f"{s['server_cpu'] / n * 1e6:.1f} | {s['kinesis_records']:,.0f} |"
        )
    lines.append(
        f"\nmedians of {result['args']['reps']} interleaved reps, {n:,} records "
        f"({result['payload_bytes'] / n:.0f} B payload) on {SHARDS} shards, every run read "
        f"back and checked; load average (1, 5, 15 min) before the timed reps "
        f"{result['load_before']}, after {result['load_after']}"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    records_cli.run("kinesis_producer", __doc__, main, report)
