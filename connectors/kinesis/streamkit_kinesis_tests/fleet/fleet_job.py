"""The job file of the fleet integration tests (``test_fleet_*.py``), run by each worker
process with ``STREAMKIT_FLEET=1`` (what ``streamkit worker`` sets) and
``STREAMKIT_WORKER_ID``.

Query: per (1-minute window of ``event_time``, ``action``): count, value sum and value
average, watermark ``--delay`` behind, in ``--mode`` (append default), into Parquet at
``--out`` with the checkpoint root ``--checkpoint``; fleet options ``exchange_shards=4``,
``idle_timeout=--idle``. Prints ``started`` once the member runs and ``stopped`` at a
clean exit (SIGTERM: graceful stop). SIGUSR1 dumps every thread's stack to stderr (the
harness does it when a worker does not stop in time, then shows the log).
"""

from __future__ import annotations

import argparse
import faulthandler
import signal
import sys

import streamkit as sk
from streamkit.config import AwsEndpoint
from streamkit.testing.events import SCHEMA


def windowed(df: sk.DataFrame, delay: str) -> sk.DataFrame:
    """count, sum and avg of ``value`` per (1-minute window, action)."""
    marked = df.with_watermark("event_time", delay)
    return marked.group_by(sk.window("event_time", "1 minute"), "action").agg(
        sk.count().alias("n"), sk.sum("value").alias("total"), sk.avg("value").alias("mean")
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    for name in ("endpoint", "stream", "app", "checkpoint", "out"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--mode", choices=("append", "update"), default="append")
    p.add_argument("--delay", default="1 hour")
    p.add_argument("--idle", default="60 seconds")
    args = p.parse_args(argv)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    options = {
        "failover_time": 6.0,
        "consumer_options": {"idle_time": 0.2, "take_interval": 1.0},
    }
    endpoint = AwsEndpoint.local(args.endpoint)
    df = sk.read_stream.kinesis(args.stream, args.app, SCHEMA, endpoint, **options)
    member = (
        windowed(df, args.delay)
        .write_stream.output_mode(args.mode)
        .fleet(exchange_shards=4, idle_timeout=args.idle)
        .trigger(processing_time=0.5)
        .checkpoint(args.checkpoint)
        .parquet(args.out)
        .start()
    )
    print("started", flush=True)
    member.await_termination()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
