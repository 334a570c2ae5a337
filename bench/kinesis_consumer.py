"""Benchmark the Kinesis consumer: read throughput against a bare boto3 loop, and the lease
table's DynamoDB calls at steady state.

Usage:
    .venv/bin/python bench/kinesis_consumer.py [--records 200000] [--reps 3] [--idle-seconds 60]

1. Throughput, on kinesalite (started here): ``--records`` records of ~100 bytes are written
   over 4 shards with KinesisProducer, then read from TRIM_HORIZON ``--reps`` times by each
   reader, interleaved (the order rotates with each repetition):
   - bare: one thread per shard, plain boto3 ``GetRecords`` (Limit 10,000) until caught up;
   - consumer: KinesisConsumer with default settings (new application each time, in-memory
     lease store since kinesalite has no DynamoDB), a processor that counts and checkpoints
     every batch; timed from ``run()`` (startup included) to the last record;
   - the same consumer on streamkit's stock client (botocore's timestamp parser, see
     connectors/kinesis/consumer/client.py), to show what the client choice is worth.
   Reported: median records/s of each and their ratio (target >= 0.9).
2. DynamoDB calls, on LocalStack (started here, or ``$STREAMKIT_AWS_ENDPOINT``): one worker
   with default settings (failover 10 s) holds the 4 leases of an idle stream; the calls of
   its DynamoDBLeaseStore are counted over ``--idle-seconds`` after a warm-up, per lease and
   minute, next to what KCL's defaults imply (a renewal every failover/3 = 3.33 s: 18
   UpdateItem per lease per minute; a Scan per take cycle every 2 x failover = 20 s and per
   shard sync every 60 s, shared by the worker's leases).

Prints a table; writes bench/results/kinesis_consumer_<UTC time>.json.
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamkit_kinesis.admin import StreamAdmin
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.consumer import (
    BaseRecordProcessor,
    ConsumerConfig,
    InitialPosition,
    KinesisConsumer,
)
from streamkit_kinesis.leases import DynamoDBLeaseStore, InMemoryLeaseStore
from streamkit_kinesis.producer.producer import KinesisProducer

from streamkit.config import ENDPOINT_ENV, AwsEndpoint
from streamkit.testing.servers import start_kinesalite, start_localstack

if TYPE_CHECKING:
    from streamkit_kinesis.leases import Checkpointer
    from streamkit_kinesis.types import RecordBatch

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BARE, CONSUMER, STOCK = "bare boto3", "streamkit consumer", "consumer, stock client"
SHARDS = 4
FAILOVER = 10.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Run:
    """One timed read of the whole stream."""

    reader: str
    rep: int
    records: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.records / self.seconds


async def produce(endpoint: AwsEndpoint, stream: str, n: int) -> float:
    """Write ``n`` records of 100 bytes (payload + key ~ 110); returns records/s."""
    pad = b"x" * 90
    started = time.perf_counter()
    async with KinesisProducer(endpoint, stream, linger_ms=20) as producer:
        for i in range(n):
            await producer.put(b"%010d" % i + pad, f"k{i}")
    return n / (time.perf_counter() - started)


def bare_read(endpoint: AwsEndpoint, stream: str, expected: int, rep: int) -> Run:
    """One thread per shard: GetShardIterator(TRIM_HORIZON), GetRecords until caught up."""
    client = endpoint.client("kinesis", max_pool_connections=SHARDS * 2)
    shard_ids = [s["ShardId"] for s in client.list_shards(StreamName=stream)["Shards"]]

    def read(shard_id: str) -> int:
        it: str | None = client.get_shard_iterator(
            StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        count = 0
        while it is not None:
            out = client.get_records(ShardIterator=it, Limit=10_000)
            count += len(out["Records"])
            if not out["Records"] and not out.get("MillisBehindLatest"):
                break
            it = out.get("NextShardIterator")
        return count

    started = time.perf_counter()
    with ThreadPoolExecutor(len(shard_ids)) as pool:
        total = sum(pool.map(read, shard_ids))
    elapsed = time.perf_counter() - started
    client.close()
    if total != expected:
        raise RuntimeError(f"bare loop read {total} records, expected {expected}")
    return Run(BARE, rep, total, elapsed)


class CountingProcessor(BaseRecordProcessor):
    """Counts records and checkpoints every batch; sets ``done`` at ``expected``."""

    def __init__(self, state: dict[str, int], done: asyncio.Event, expected: int) -> None:
        self._state = state
        self._done = done
        self._expected = expected

    async def process_records(self, batch: RecordBatch, checkpointer: Checkpointer) -> None:
        self._state["records"] += len(batch.records)
        await checkpointer.checkpoint()
        if self._state["records"] >= self._expected:
            self._done.set()


async def consumer_read(
    endpoint: AwsEndpoint, stream: str, expected: int, rep: int, *, stock_client: bool = False
) -> Run:
    """KinesisConsumer, default settings, fresh application: TRIM_HORIZON to the end.

    ``stock_client`` swaps in streamkit's plain Kinesis client (botocore's own timestamp
    parser) for the consumer's default one.
    """
    config = ConsumerConfig(
        app_name=f"bench-{uuid.uuid4().hex[:8]}",
        stream=stream,
        initial_position=InitialPosition.trim_horizon(),
    )
    client = kinesis_client(endpoint) if stock_client else None
    consumer = KinesisConsumer(config, endpoint, kinesis=client, lease_store=InMemoryLeaseStore())
    state = {"records": 0}
    done = asyncio.Event()
    started = time.perf_counter()
    running = asyncio.create_task(consumer.run(lambda: CountingProcessor(state, done, expected)))
    waiter = asyncio.create_task(done.wait())
    await asyncio.wait([running, waiter], return_when=asyncio.FIRST_COMPLETED)
    elapsed = time.perf_counter() - started
    waiter.cancel()
    await consumer.stop()
    await running  # re-raises a consumer error, if any
    if state["records"] != expected:
        raise RuntimeError(f"consumer read {state['records']} records, expected {expected}")
    name = STOCK if stock_client else CONSUMER
    return Run(name, rep, state["records"], elapsed)


async def throughput(endpoint: AwsEndpoint, records: int, reps: int) -> dict[str, Any]:
    stream = f"bench-{uuid.uuid4().hex[:8]}"
    async with StreamAdmin(endpoint) as admin:
        await admin.create_stream(stream, SHARDS)
        log(f"writing {records} records over {SHARDS} shards ...")
        write_rate = await produce(endpoint, stream, records)
        log(f"  {write_rate:,.0f} records/s written")
        runs: list[Run] = []
        for rep in range(1, reps + 1):
            order = [BARE, CONSUMER, STOCK]
            shift = (rep - 1) % len(order)  # rotate who goes first
            for reader in order[shift:] + order[:shift]:
                if reader == BARE:
                    run = await asyncio.to_thread(bare_read, endpoint, stream, records, rep)
                else:
                    run = await consumer_read(
                        endpoint, stream, records, rep, stock_client=reader == STOCK
                    )
                log(f"  rep {rep} {run.reader:<24} {run.rate:>10,.0f} records/s")
                runs.append(run)
        await admin.delete_stream(stream, wait=False)
    medians = {
        name: statistics.median(r.rate for r in runs if r.reader == name)
        for name in (BARE, CONSUMER, STOCK)
    }
    return {
        "records": records,
        "shards": SHARDS,
        "write_rate": write_rate,
        "runs": [asdict(r) | {"rate": r.rate} for r in runs],
        "median_rate": medians,
        "ratio": medians[CONSUMER] / medians[BARE],
        "ratio_stock_client": medians[STOCK] / medians[BARE],
    }


class IdleProcessor(BaseRecordProcessor):
    async def process_records(self, batch: RecordBatch, checkpointer: Checkpointer) -> None:
        await checkpointer.checkpoint()


async def dynamodb_calls(endpoint: AwsEndpoint, seconds: float, warmup: float) -> dict[str, Any]:
    """DynamoDB calls of one idle worker holding every lease, per lease and minute."""
    stream = f"bench-idle-{uuid.uuid4().hex[:8]}"
    config = ConsumerConfig(app_name=stream, stream=stream)  # every setting at its default
    async with StreamAdmin(endpoint) as admin:
        await admin.create_stream(stream, SHARDS)
        consumer = KinesisConsumer(config, endpoint)
        running = asyncio.create_task(consumer.run(IdleProcessor))
        while len(consumer.held_shard_ids()) < SHARDS and not running.done():
            await asyncio.sleep(0.1)
        await asyncio.sleep(warmup)
        before, t0 = consumer.metrics().dynamodb_calls_by_operation, time.monotonic()
        log(f"counting DynamoDB calls of an idle worker for {seconds:.0f} s ...")
        await asyncio.sleep(seconds)
        after, t1 = consumer.metrics().dynamodb_calls_by_operation, time.monotonic()
        await consumer.stop()
        await running
        await DynamoDBLeaseStore(endpoint, config.app_name).delete_table()
        await admin.delete_stream(stream, wait=False)
    minutes = (t1 - t0) / 60
    delta = {op: after.get(op, 0) - before.get(op, 0) for op in sorted(after)}
    delta = {op: n for op, n in delta.items() if n}
    renew = FAILOVER / 3
    kcl = {  # per lease and minute: renewals; one Scan per take cycle and per shard sync
        "UpdateItem": 60 / renew,
        "Scan": (60 / (2 * FAILOVER) + 1) / SHARDS,
    }
    return {
        "leases": SHARDS,
        "window_seconds": t1 - t0,
        "calls": delta,
        "per_lease_per_minute": {op: n / SHARDS / minutes for op, n in delta.items()},
        "total_per_lease_per_minute": sum(delta.values()) / SHARDS / minutes,
        "kcl_defaults_per_lease_per_minute": kcl,
        "kcl_total_per_lease_per_minute": sum(kcl.values()),
    }


def report(result: dict[str, Any]) -> str:
    lines = []
    if tp := result.get("throughput"):
        lines += [
            f"## Read throughput, kinesalite, {tp['records']:,} records x ~100 B, "
            f"{tp['shards']} shards (median of {len(tp['runs']) // 3})",
            "",
            "| reader | median records/s |",
            "|---|---:|",
        ]
        lines += [f"| {name} | {rate:,.0f} |" for name, rate in tp["median_rate"].items()]
        lines += [
            "",
            f"consumer / bare = **{tp['ratio']:.2f}x** (target >= 0.9x); with a stock client "
            f"(botocore's timestamp parser) {tp['ratio_stock_client']:.2f}x",
            "",
        ]
    if dd := result.get("dynamodb"):
        lines += [
            f"## DynamoDB calls per lease per minute, idle worker, default settings "
            f"({dd['leases']} leases, {dd['window_seconds']:.0f} s window)",
            "",
            "| operation | streamkit | KCL defaults imply |",
            "|---|---:|---:|",
        ]
        ours, kcl = dd["per_lease_per_minute"], dd["kcl_defaults_per_lease_per_minute"]
        for op in sorted(set(ours) | set(kcl)):
            lines.append(f"| {op} | {ours.get(op, 0.0):.2f} | {kcl.get(op, 0.0):.2f} |")
        lines += [
            f"| **total** | **{dd['total_per_lease_per_minute']:.2f}** "
            f"| **{dd['kcl_total_per_lease_per_minute']:.2f}** |"
        ]
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=16))
    result: dict[str, Any] = {"started": datetime.now(UTC).isoformat(), "args": vars(args)}
    if args.reps > 0:
        with start_kinesalite() as kinesalite:
            result["throughput"] = await throughput(kinesalite.endpoint, args.records, args.reps)
    if args.idle_seconds > 0:
        if os.environ.get(ENDPOINT_ENV):
            result["dynamodb"] = await dynamodb_calls(AwsEndpoint.from_env(), args.idle_seconds, 5)
        else:
            log("starting LocalStack ...")
            with start_localstack() as localstack:
                result["dynamodb"] = await dynamodb_calls(localstack.endpoint, args.idle_seconds, 5)
    return result


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--reps", type=int, default=3, help="repetitions per reader (0: skip)")
    p.add_argument("--idle-seconds", type=float, default=60.0, help="0: skip the DynamoDB part")
    return p.parse_args()


if __name__ == "__main__":
    outcome = asyncio.run(main(parse_args()))
    text = report(outcome)
    print(text)
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    path = RESULTS_DIR / f"kinesis_consumer_{stamp}.json"
    path.write_text(json.dumps(outcome, indent=1, default=str))
    log(f"wrote {path}")
