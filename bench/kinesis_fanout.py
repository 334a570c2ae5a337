"""Put-to-sink latency of the Kinesis consumer: polling against Enhanced Fan-Out, on
LocalStack (issue 15, item 2).

Usage:
    .venv/bin/python bench/kinesis_fanout.py [--rate 1000] [--seconds 20] [--reps 3]
                                             [--shards 2] [--endpoint URL]

For each rep and each retrieval (order alternating per rep), on a fresh stream: a
``KinesisConsumer`` (KCL defaults: ``idle_time`` 1.5 s for polling; fan-out through a
registered stream consumer) starts, every shard is read once (caught up), then a
producer in a separate process puts ``--rate`` records/s (PutRecords every 50 ms) for
``--seconds``. Each payload carries its wall-clock put time; the processor records the
time each record reaches it: latency = arrival at ``process_records`` - put time. The
first 2 s are dropped (warm-up). Every record put must be received exactly once (else
the bench fails). Reported: p50 / p99 latency, records/s achieved, and this process's
CPU seconds (the consumer only: the producer runs elsewhere) beside the wall time; the
medians over reps. LocalStack runs in its own processes. Writes
bench/results/kinesis_fanout_<UTC time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
WARM_UP = 2.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def produce(url: str, stream: str, rate: int, seconds: float) -> None:
    """The producer process: ``rate`` records/s for ``seconds``, payload ``put_time:i``."""
    from streamkit_kinesis.client import kinesis_client

    from streamkit.config import AwsEndpoint

    client = kinesis_client(AwsEndpoint.local(url))
    tick, per_tick = 0.05, max(1, round(rate * 0.05))
    start, i, n = time.time(), 0, 0
    while time.time() - start < seconds:
        now = time.time()
        entries = [
            {"Data": f"{now:.6f}:{i + k}".encode(), "PartitionKey": str(i + k)}
            for k in range(per_tick)
        ]
        out = client.put_records(StreamName=stream, Records=entries)  # type: ignore[arg-type]
        assert out["FailedRecordCount"] == 0, out
        i += per_tick
        n += 1
        time.sleep(max(0.0, start + n * tick - time.time()))
    print(i, flush=True)


async def run_one(
    url: str, retrieval: str, rate: int, seconds: float, shards: int
) -> dict[str, Any]:
    from streamkit_kinesis.admin import StreamAdmin
    from streamkit_kinesis.consumer import (
        BaseRecordProcessor,
        ConsumerConfig,
        InitialPosition,
        KinesisConsumer,
    )
    from streamkit_kinesis.leases import DynamoDBLeaseStore
    from streamkit_kinesis.testing.streams import unique

    from streamkit.config import AwsEndpoint

    endpoint = AwsEndpoint.local(url)
    admin = StreamAdmin(endpoint, poll_interval=0.1)
    stream, app = unique("lat"), unique("latapp")
    await admin.create_stream(stream, shards)
    arrivals: list[tuple[float, float, int]] = []

    class Timing(BaseRecordProcessor):
        async def process_records(self, batch: Any, checkpointer: Any) -> None:
            now = time.time()
            for r in batch.records:
                put, i = r.data.split(b":")
                arrivals.append((float(put), now, int(i)))
            await checkpointer.checkpoint()

    config = ConsumerConfig(
        app_name=app, stream=stream, initial_position=InitialPosition.trim_horizon(),
        failover_time=3.0, take_interval=0.5, retrieval=retrieval,  # type: ignore[arg-type]
    )  # fmt: skip
    consumer = KinesisConsumer(config, endpoint)
    running = asyncio.create_task(consumer.run(Timing))
    try:
        ids = [s.shard_id for s in await consumer.shards.list_shards()]
        deadline = time.monotonic() + 120
        while not all(_calls(consumer, s) > 0 for s in ids):
            assert time.monotonic() < deadline, "consumer did not start reading"
            await asyncio.sleep(0.1)
        cpu0, wall0 = time.process_time(), time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--produce", url, stream, str(rate), str(seconds),
            stdout=subprocess.PIPE,
        )  # fmt: skip
        out, _ = await proc.communicate()
        assert proc.returncode == 0, "producer failed"
        sent = int(out.decode().split()[-1])
        deadline = time.monotonic() + 120
        while len(arrivals) < sent:
            assert time.monotonic() < deadline, f"{len(arrivals)} of {sent} records arrived"
            await asyncio.sleep(0.05)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    finally:
        await consumer.stop()
        await running
        await DynamoDBLeaseStore(endpoint, app).delete_table()
        await admin.delete_stream(stream, wait=False)
        admin.close()
    ids_seen = sorted(i for _, _, i in arrivals)
    assert ids_seen == list(range(sent)), "a record was lost or repeated"
    first = min(p for p, _, _ in arrivals)
    lat = sorted(a - p for p, a, _ in arrivals if p - first >= WARM_UP)
    return {
        "retrieval": retrieval,
        "records": sent,
        "rate": sent / seconds,
        "p50_ms": 1000 * lat[len(lat) // 2],
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
        "wall_s": wall,
        "cpu_s": cpu,
    }


def _calls(consumer: Any, shard: str) -> int:
    try:
        return int(consumer.metrics().shard(shard).get_records_calls)
    except (KeyError, AttributeError):
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--produce", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--endpoint", default=os.environ.get("STREAMKIT_AWS_ENDPOINT"))
    args = parser.parse_args()
    if args.produce:
        url, stream, rate, seconds = args.produce
        produce(url, stream, int(rate), float(seconds))
        return
    with ExitStack() as stack:
        url = args.endpoint
        if not url:
            from streamkit.testing.servers import start_localstack

            url = stack.enter_context(start_localstack()).url
        runs: list[dict[str, Any]] = []
        for rep in range(args.reps):
            order = ["polling", "fanout"] if rep % 2 == 0 else ["fanout", "polling"]
            for retrieval in order:
                result = asyncio.run(run_one(url, retrieval, args.rate, args.seconds, args.shards))
                log(json.dumps(result))
                runs.append(result)
    summary = {
        mode: {
            key: statistics.median(r[key] for r in runs if r["retrieval"] == mode)
            for key in ("p50_ms", "p99_ms", "rate", "wall_s", "cpu_s")
        }
        for mode in ("polling", "fanout")
    }
    print(f"{'retrieval':<10} {'rec/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'wall s':>7} {'CPU s':>6}")
    for mode, s in summary.items():
        print(
            f"{mode:<10} {s['rate']:>7.0f} {s['p50_ms']:>8.0f} {s['p99_ms']:>8.0f} "
            f"{s['wall_s']:>7.1f} {s['cpu_s']:>6.1f}"
        )
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS_DIR / f"kinesis_fanout_{stamp}.json"
    out.write_text(json.dumps({"args": vars(args), "runs": runs, "summary": summary}, indent=2))
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
