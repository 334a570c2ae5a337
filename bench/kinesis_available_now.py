"""``available_now`` against ``processing_time=0`` on the same Kinesis backlog (issue 15
item 3): does finding each shard's end cost a second read of the backlog?

Usage:
    nice -n 10 .venv/bin/python bench/kinesis_available_now.py [--records 200000] [--reps 3]

kinesalite serves a 4-shard stream, LocalStack's DynamoDB the lease tables (both started
here). ``--records`` JSON records of ~97 bytes are put once. Then, ``--reps`` times, each
mode runs a streaming query over the whole stream from a fresh application (new lease
table, TRIM_HORIZON, default source settings, ``count()`` per action, complete mode,
memory sink), interleaved (order rotating per rep), after one untimed warm-up of each:

- ``processing_time=0``: timed from ``start()`` until every record is in a committed batch
  (progress polled every 10 ms; the stop afterwards is not timed) - the baseline;
- ``available_now``: timed from ``start()`` until the query has ended by itself (the end of
  every shard found, every record committed, leases released); "all rows in" is when the
  last record was in a committed batch;
- ``available_now, tip read``: the same, with the previous design's ``end_offsets`` (each
  shard read to its tip by a separate reader before the query knows its target).

Each run's counts must sum to ``--records``. Reported per mode, medians over reps: rows/s,
wall s, this process's CPU s (all threads; the servers run in their own processes) and per
record, the records the source's GetRecords answers held per record put (counted on the
client), rows/s against the baseline, and the median over reps of the ratio within a rep
(baseline wall / mode wall: runs of one rep are close in time, so it is less exposed to a
changing machine load). Writes bench/results/kinesis_available_now_<UTC time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import _records_cli as records_cli
import pyarrow as pa
from streamkit_kinesis.admin import StreamAdmin
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.leases import DynamoDBLeaseStore
from streamkit_kinesis.retrieval.columnar import _RAW_KEY
from streamkit_kinesis.source import KinesisStreamSource, session
from streamkit_kinesis.source.tips import consumer_tips

import streamkit as sk
from streamkit.config import AwsEndpoint
from streamkit.streaming.contracts import Offsets
from streamkit.testing.servers import start_kinesalite, start_localstack

SHARDS = 4
BASE, NOW, TIP = "processing_time=0", "available_now", "available_now, tip read"
SCHEMA = pa.schema(
    [("id", pa.int64()), ("user", pa.string()), ("action", pa.string()), ("ts", pa.string())]
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def payload(i: int) -> bytes:
    action = ("click", "view", "buy")[i % 3]
    return json.dumps(
        {"id": i, "user": f"u{i % 997}", "action": action, "ts": "2026-12-02T10:00:00.000000Z"}
    ).encode()


def produce(endpoint: AwsEndpoint, stream: str, n: int) -> None:
    """Put ``n`` records with plain PutRecords."""
    client = endpoint.client("kinesis")
    for start in range(0, n, 500):
        entries = [
            {"Data": payload(i), "PartitionKey": f"k{i}"} for i in range(start, min(n, start + 500))
        ]
        while entries:
            out = client.put_records(StreamName=stream, Records=entries)
            entries = [e for e, r in zip(entries, out["Records"], strict=True) if "ErrorCode" in r]


class Counting:
    """A real Kinesis client counting the records its GetRecords answers hold."""

    records = 0

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def get_records(self, **kwargs: Any) -> Any:
        out = self._inner.get_records(**kwargs)
        raw = out.get(_RAW_KEY)
        held = raw.count(b'"SequenceNumber"') if raw is not None else len(out["Records"])
        Counting.records += held
        return out


def counting_client(*args: Any, **kwargs: Any) -> Any:
    return Counting(kinesis_client(*args, **kwargs))


class TipReadSource(KinesisStreamSource):
    """The previous design: each shard read to its tip by a separate reader."""

    async def end_offsets(self) -> Offsets:
        await self._opened.wait()
        consumer = self._need_consumer()
        initial = self._session.initial_position
        target = await consumer_tips(consumer, self.endpoint.url, initial, self._buffers.known)
        self._watch(target)
        return target


def one_run(
    mode: str, stream: str, endpoint: AwsEndpoint, leases: AwsEndpoint, n: int
) -> dict[str, float]:
    app, name = f"an-{uuid.uuid4().hex[:8]}", f"an_{uuid.uuid4().hex[:8]}"
    kind = TipReadSource if mode == TIP else KinesisStreamSource
    source = kind(stream, app, endpoint, schema=SCHEMA, lease_endpoint=leases)
    df = sk.read_stream.source(source)
    writer = df.group_by("action").agg(sk.count().alias("n")).write_stream.output_mode("complete")
    writer = (
        writer.trigger(available_now=True) if mode != BASE else writer.trigger(processing_time=0)
    )
    Counting.records = 0
    wall, cpu = time.perf_counter(), time.process_time()
    started = wall
    query = writer.memory(name).start()
    while sum(p.num_input_rows for p in query.recent_progress) < n:
        if query.exception is not None:
            raise query.exception
        if not query.is_active:
            break
        time.sleep(0.01)
    rows_done = time.perf_counter() - started
    if mode != BASE:
        query.await_termination()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    read = Counting.records
    if mode == BASE:
        query.stop()
    got = sum(sk.memory_table(name)["n"].to_pylist())
    asyncio.run(DynamoDBLeaseStore(leases, app).delete_table())
    if got != n:
        raise RuntimeError(f"{mode}: counted {got} records, expected {n}")
    return {"wall": wall, "cpu": cpu, "read_per_record": read / n, "rows_done": rows_done}


def main(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"started": datetime.now(UTC).isoformat(), "args": vars(args)}
    session.kinesis_client = counting_client  # type: ignore[attr-defined]
    modes = [BASE, NOW, TIP]
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    with start_kinesalite() as kinesalite, start_localstack() as localstack:
        endpoint, leases = kinesalite.endpoint, localstack.endpoint
        stream = f"an-{int(time.time())}"
        asyncio.run(StreamAdmin(endpoint, poll_interval=0.1).create_stream(stream, SHARDS))
        log(f"putting {args.records} records ...")
        produce(endpoint, stream, args.records)
        for mode in modes:  # warm-up, untimed
            one_run(mode, stream, endpoint, leases, args.records)
        for rep in range(args.reps):
            for k in range(len(modes)):
                mode = modes[(rep + k) % len(modes)]
                run = one_run(mode, stream, endpoint, leases, args.records)
                log(f"rep {rep} {mode}: {run}")
                runs[mode].append(run)
    result["runs"] = runs
    result["modes"] = {
        m: {
            k: statistics.median(r[k] for r in rs)
            for k in ("wall", "cpu", "read_per_record", "rows_done")
        }
        for m, rs in runs.items()
    }
    return result


def report(result: dict[str, Any]) -> str:
    n = result["args"]["records"]
    base = n / result["modes"][BASE]["wall"]
    lines = [
        "| mode | rows/s | wall s | CPU s | CPU µs per record | all rows in s "
        "| records read per record | rows/s vs baseline | median of per-rep ratios |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    runs = result["runs"]
    for mode, s in result["modes"].items():
        rate = n / s["wall"]
        paired = statistics.median(
            b["wall"] / r["wall"] for b, r in zip(runs[BASE], runs[mode], strict=True)
        )
        lines.append(
            f"| {mode} | {rate:,.0f} | {s['wall']:.2f} | {s['cpu']:.2f} | "
            f"{s['cpu'] / n * 1e6:.1f} | {s['rows_done']:.2f} | "
            f"{s['read_per_record']:.2f} | {rate / base:.2f}x | {paired:.2f}x |"
        )
    walls = {m: ", ".join(f"{r['wall']:.2f}" for r in rs) for m, rs in result["runs"].items()}
    lines.append("")
    lines.append("wall s per rep: " + "; ".join(f"{m}: {w}" for m, w in walls.items()))
    return "\n".join(lines)


if __name__ == "__main__":
    records_cli.run("kinesis_available_now", __doc__, main, report)
