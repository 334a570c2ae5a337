"""Client CPU per Kinesis record: the bare boto3 GetRecords loop against streamkit's
columnar GetRecords path, its polling ShardReader and the query path (the stream source),
on kinesalite (issue 15 item 1).

Usage:
    nice -n 10 .venv/bin/python bench/kinesis_cost.py [--records 200000] [--reps 3]
        [--loader-per-client] [--before]

``--records`` JSON records of ~97 bytes are put over 4 shards; then each reader reads the
whole stream from TRIM_HORIZON once untimed (warm-up), then ``--reps`` times, interleaved
(order rotating per rep):

- bare boto3: a thread per shard, plain boto3 ``GetRecords`` (Limit 10,000) until caught up;
- columnar: the same loop through :func:`get_records_columnar` (raw body, Arrow columns);
- ShardReader: streamkit's polling reader (its batches hold the records as columns), all
  shards concurrently on one event loop; the records' payload bytes summed per record
  object, as a record-processor consumer reads them (the objects are built then);
- query path, raw / JSON: :class:`KinesisStreamSource` as a streaming query drives it
  (fresh application per run, so a new lease table in LocalStack's DynamoDB, started here;
  TRIM_HORIZON; default settings): ``open``, then ``next_batch`` and ``commit`` of each
  batch's offsets until every record is in a batch; timed from ``open`` (lease table
  creation, first take cycle, consumer, lease renewals included), ``close`` not timed.
  Decoder: ``RawDecoder`` (rows = the payload column) or ``JsonDecoder`` under the
  records' schema (rows = 4 parsed columns). Every batch's dead letters must be empty.
- with ``--loader-per-client``, the two query paths once more per rep, every boto client
  made as before :mod:`streamkit.aws_sessions` (a botocore session with its own loader,
  re-reading botocore's data): the A/B of ``open``'s client cost in one run.
- with ``--before``, the two query paths once more per rep with the code before session 22
  (``main`` at ``705a5e3``) patched in (:mod:`_kinesis_before`: the lease table ensured
  twice per open, each shard's lease checkpointed at its first commit, every JSON batch
  framed record by record): the A/B of session 22's changes in one run (both decoder
  paths first checked to give the same rows on a real body).

Every read must return every record and every payload byte (the JSON query path: every
record, as a row) (else the bench fails); MB are the payload MB put. Client
CPU is this process's CPU time (all threads; kinesalite runs in its own process). Reported:
medians over reps of rows/s, wall and CPU µs per record and per MB of payload. Writes
bench/results/kinesis_cost_<UTC time>.json.
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
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import _kinesis_before as kinesis_before
import _records_cli as records_cli
import pyarrow as pa
import pyarrow.compute as pc
from streamkit_kinesis.admin import StreamAdmin
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.leases import DynamoDBLeaseStore
from streamkit_kinesis.retrieval.columnar import get_records_columnar, raw_get_records
from streamkit_kinesis.retrieval.polling import ShardReader
from streamkit_kinesis.shards import list_shards_blocking
from streamkit_kinesis.source import KinesisStreamSource
from streamkit_kinesis.types import TRIM_HORIZON

from streamkit import aws_sessions
from streamkit.config import AwsEndpoint
from streamkit.streaming.decode import Decoder, JsonDecoder, RawDecoder
from streamkit.testing.servers import start_kinesalite, start_localstack

SHARDS = 4
BARE, COLUMNAR, READER = "bare boto3", "columnar GetRecords", "streamkit ShardReader"
RAW, JSON = "query path, raw decoder", "query path, JSON decoder"
OWN = ", a loader per client"
RAW_OWN, JSON_OWN = RAW + OWN, JSON + OWN
BEFORE = ", code before session 22"
RAW_BEFORE, JSON_BEFORE = RAW + BEFORE, JSON + BEFORE
QUERY_PATHS = (RAW, JSON, RAW_OWN, JSON_OWN, RAW_BEFORE, JSON_BEFORE)
JSON_PATHS = (JSON, JSON_OWN, JSON_BEFORE)
SCHEMA = pa.schema(
    [("id", pa.int64()), ("user", pa.string()), ("action", pa.string()), ("ts", pa.string())]
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def payload(i: int) -> bytes:
    return json.dumps(
        {"id": i, "user": f"u{i % 997}", "action": "click", "ts": "2026-12-02T10:00:00.000000Z"}
    ).encode()


def produce(endpoint: AwsEndpoint, stream: str, n: int) -> int:
    """Put ``n`` records with plain PutRecords; returns the payload bytes."""
    client = endpoint.client("kinesis")
    total = 0
    for start in range(0, n, 500):
        batch = [payload(i) for i in range(start, min(n, start + 500))]
        total += sum(map(len, batch))
        entries = [{"Data": d, "PartitionKey": f"k{start + j}"} for j, d in enumerate(batch)]
        while entries:
            out = client.put_records(StreamName=stream, Records=entries)
            entries = [e for e, r in zip(entries, out["Records"], strict=True) if "ErrorCode" in r]
    return total


def thread_loop(client: Any, stream: str, columnar: bool) -> tuple[int, int]:
    """A thread per shard reading until caught up; (records, payload bytes)."""
    shard_ids = [s.shard_id for s in list_shards_blocking(client, stream)]

    def read(shard_id: str) -> tuple[int, int]:
        it: str | None = client.get_shard_iterator(
            StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        count = size = 0
        while it is not None:
            if columnar:
                got = get_records_columnar(client, it, 10_000)
                n, behind, it = len(got), got.millis_behind_latest, got.next_iterator
                size += got.payload_bytes()
            else:
                out = client.get_records(ShardIterator=it, Limit=10_000)
                n, behind, it = len(out["Records"]), out.get("MillisBehindLatest"), None
                size += sum([len(r["Data"]) for r in out["Records"]])
                it = out.get("NextShardIterator")
            count += n
            if not n and not behind:
                break
        return count, size

    with ThreadPoolExecutor(len(shard_ids)) as pool:
        parts = list(pool.map(read, shard_ids))
    return sum(p[0] for p in parts), sum(p[1] for p in parts)


def first_body(client: Any, stream: str) -> bytes:
    """The raw body of a GetRecords from the first shard's start."""
    shard_id = list_shards_blocking(client, stream)[0].shard_id
    it = client.get_shard_iterator(
        StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    body = raw_get_records(client, it, 10_000)
    assert body is not None
    return body


async def reader_loop(client: Any, stream: str) -> tuple[int, int]:
    """streamkit's ShardReader on every shard at once, until each is caught up."""
    shards = list_shards_blocking(client, stream)

    async def read(reader: ShardReader) -> tuple[int, int]:
        count = size = 0
        while True:
            batch = await reader.next_batch()
            count += len(batch.records)
            size += sum([len(r.data) for r in batch.records])
            if not batch.records and not batch.millis_behind_latest:
                return count, size

    readers = [ShardReader(client, stream, s, TRIM_HORIZON, idle_time=0.0) for s in shards]
    parts = await asyncio.gather(*(read(r) for r in readers))
    return sum(p[0] for p in parts), sum(p[1] for p in parts)


async def source_loop(
    endpoint: AwsEndpoint, leases: AwsEndpoint, stream: str, decoder: Decoder, n: int
) -> tuple[int, int]:
    """The stream source as a query drives it, until ``n`` records are in batches; the
    payload bytes are summed from the decoded rows (raw) or counted as records (JSON)."""
    app = f"cost-{uuid.uuid4().hex[:8]}"
    source = KinesisStreamSource(stream, app, endpoint, decoder, lease_endpoint=leases)
    count = size = 0
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        await source.open(None)
        consumer = source.consumer
        assert consumer is not None
        _opened.update(
            open_wall=time.perf_counter() - wall,
            open_cpu=time.process_time() - cpu,
            read_at_open=sum(s.records for s in consumer.metrics().shards),
        )
        while count < n:
            batch = await source.next_batch(1.0)
            if batch is None:
                continue
            if batch.dead_letters.num_rows:
                raise RuntimeError(f"dead letters: {batch.dead_letters.slice(0, 3)}")
            count += batch.rows.num_rows
            if "data" in batch.rows.column_names:
                size += int(pc.sum(pc.binary_length(batch.rows.column("data"))).as_py() or 0)
            await source.commit(batch.end_offsets)
    finally:
        wall, cpu = time.perf_counter(), time.process_time()
        await source.close()
        await DynamoDBLeaseStore(leases, app).delete_table()
        _untimed.append((time.perf_counter() - wall, time.process_time() - cpu))
    return count, size


@contextmanager
def own_loader_session() -> Iterator[Any]:
    """What every boto client was made from before the shared loader: a new session with
    its own loader (``botocore.session.get_session()`` / ``boto3.session.Session()``)."""
    import botocore.session

    yield botocore.session.Session()


_untimed: list[tuple[float, float]] = []
_opened: dict[str, float] = {}


def measure(
    name: str, client: Any, stream: str, leases: AwsEndpoint | None = None, n: int = 0
) -> dict[str, float]:
    """One read of the whole stream by ``name`` on ``client`` (created once, untimed)."""
    _untimed.clear()
    _opened.clear()
    wall, cpu = time.perf_counter(), time.process_time()
    if name == READER:
        records, size = asyncio.run(reader_loop(client, stream))
    elif name in QUERY_PATHS:
        assert leases is not None
        decoder: Decoder = JsonDecoder(SCHEMA) if name in JSON_PATHS else RawDecoder()
        patch: Any = nullcontext()
        if name in (RAW_OWN, JSON_OWN):
            patch = mock.patch.object(aws_sessions, "fresh_session", own_loader_session)
        elif name in (RAW_BEFORE, JSON_BEFORE):
            patch = kinesis_before.before()
        with patch:
            records, size = asyncio.run(source_loop(client, leases, stream, decoder, n))
    else:
        records, size = thread_loop(client, stream, columnar=name == COLUMNAR)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    for w, c in _untimed:  # the source's close and lease table drop
        wall, cpu = wall - w, cpu - c
    run = {"records": records, "bytes": size, "wall": wall, "cpu": cpu, **_opened}
    if _opened:  # past open: the steady state (records read during open counted out)
        run["read_cpu"] = cpu - _opened["open_cpu"]
        run["read_wall"] = wall - _opened["open_wall"]
    return run


def summary(runs: list[dict[str, float]], payload: int) -> dict[str, float]:
    med = {k: statistics.median(r[k] for r in runs) for k in ("wall", "cpu")}
    records, mb = runs[0]["records"], payload / 1e6
    extra: dict[str, float] = {}
    if "open_cpu" in runs[0]:
        for k in ("open_cpu", "open_wall", "read_cpu", "read_wall", "read_at_open"):
            extra[k] = statistics.median(r[k] for r in runs)
        after = records - extra["read_at_open"]
        extra["read_cpu_us_per_record"] = extra["read_cpu"] / after * 1e6
        extra["read_cpu_ms_per_mb"] = extra["read_cpu"] / (mb * after / records) * 1e3
    return extra | {
        "rows_per_s": records / med["wall"],
        "wall_us_per_record": med["wall"] / records * 1e6,
        "cpu_us_per_record": med["cpu"] / records * 1e6,
        "cpu_ms_per_mb": med["cpu"] / mb * 1e3,
        "wall_s": med["wall"],
        "cpu_s": med["cpu"],
    }


def main(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"started": datetime.now(UTC).isoformat(), "args": vars(args)}
    names = [BARE, COLUMNAR, READER, RAW, JSON]
    if args.loader_per_client:
        names += [RAW_OWN, JSON_OWN]
    if args.before:
        names += [RAW_BEFORE, JSON_BEFORE]
    with start_kinesalite() as kinesalite, start_localstack() as localstack:
        endpoint, leases = kinesalite.endpoint, localstack.endpoint
        admin = StreamAdmin(endpoint, poll_interval=0.1)
        stream = f"cost-{int(time.time())}"
        asyncio.run(admin.create_stream(stream, SHARDS))
        log(f"putting {args.records} records ...")
        expected_bytes = produce(endpoint, stream, args.records)
        runs: dict[str, list[dict[str, float]]] = {n: [] for n in names}
        plain = endpoint.client("kinesis", max_pool_connections=SHARDS * 2)
        hooked = kinesis_client(endpoint, max_pool_connections=SHARDS * 2)
        if args.before:
            kinesis_before.check_same_rows(first_body(hooked, stream), SCHEMA)
        clients: dict[str, Any] = {BARE: plain, COLUMNAR: hooked, READER: hooked}
        clients |= dict.fromkeys(QUERY_PATHS, endpoint)
        for name in names:  # warm-up, untimed: imports, first-use initialisation, connections
            measure(name, clients[name], stream, leases, args.records)
        result["load_before"] = os.getloadavg()
        for rep in range(args.reps):
            for k in range(len(names)):
                name = names[(rep + k) % len(names)]
                run = measure(name, clients[name], stream, leases, args.records)
                size = expected_bytes if name not in JSON_PATHS else 0
                if (run["records"], run["bytes"]) != (args.records, size):
                    raise RuntimeError(f"{name} read {run}, expected {args.records} records")
                log(f"rep {rep} {name}: {run}")
                runs[name].append(run)
        result["load_after"] = os.getloadavg()
    result["payload_bytes"] = expected_bytes
    result["readers"] = {n: summary(r, expected_bytes) for n, r in runs.items()}
    result["runs"] = runs
    return result


def report(result: dict[str, Any]) -> str:
    base = result["readers"][BARE]["cpu_us_per_record"]
    lines = [
        "| reader | rows/s | wall µs/record | CPU µs/record | CPU ms/MB | CPU vs bare |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in result["readers"].items():
        lines.append(
            f"| {name} | {s['rows_per_s']:,.0f} | {s['wall_us_per_record']:.1f} | "
            f"{s['cpu_us_per_record']:.2f} | {s['cpu_ms_per_mb']:.1f} | "
            f"{base / s['cpu_us_per_record']:.1f}x less |"
        )
        if "read_cpu" in s:
            lines.append(
                f"| {name}, past open | | | {s['read_cpu_us_per_record']:.2f} | "
                f"{s['read_cpu_ms_per_mb']:.1f} | "
                f"{base / s['read_cpu_us_per_record']:.1f}x less |"
            )
    opened = [(n, s) for n, s in result["readers"].items() if "open_cpu" in s]
    for name, s in opened:
        lines.append(
            f"\n{name}: open (lease table, clients, first take) {s['open_cpu']:.3f} CPU s, "
            f"{s['open_wall']:.2f} s wall; {s['read_at_open']:.0f} records read during it"
        )
    lines.append(
        f"\nload average (1, 5, 15 min) before the timed reps {result['load_before']}, "
        f"after {result['load_after']}"
    )
    return "\n".join(lines)


def options(p: argparse.ArgumentParser) -> None:
    """The bench's own options."""
    p.add_argument(
        "--loader-per-client",
        action="store_true",
        help="also the query paths with a botocore loader per client",
    )
    p.add_argument(
        "--before", action="store_true", help="also the query paths with the code before session 22"
    )


if __name__ == "__main__":
    records_cli.run("kinesis_cost", __doc__, main, report, options)
