"""A windowed count over Kinesis into Parquet with an event-time watermark, run as a
subprocess by the per-shard watermark crash test (``test_window_crash.py``).

Job: read ``--stream`` with the KinesisStreamSource (lease table ``--app``), count events
and sum ``value`` per 1-minute window of ``event_time`` (watermark delay 10 seconds) in
``--mode`` (append or update) under ``--policy`` (``watermark_policy``: min or global),
write each batch to ``--out`` (Parquet, idempotent per batch id), checkpoint to
``--checkpoint``. ``--trigger processing`` runs until killed; ``--trigger available_now``
reads to the current end of every shard, commits and exits 0. Lines on stdout:
``batch <id> rows <n>`` per committed batch, and at a clean exit ``late <n>`` (late rows of
this run).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import streamkit as sk
from streamkit.config import AwsEndpoint
from streamkit.testing.events import SCHEMA

DELAY = "10 seconds"
WINDOW = "1 minute"


def windowed(df: sk.DataFrame) -> sk.DataFrame:
    """Events and value sum per 1-minute window, watermark 10 seconds behind."""
    marked = df.with_watermark("event_time", DELAY)
    return marked.group_by(sk.window("event_time", WINDOW)).agg(
        sk.count().alias("n"), sk.sum("value").alias("total")
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    for name in ("endpoint", "stream", "app", "worker-id", "checkpoint", "out"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--trigger", choices=("processing", "available_now"), default="processing")
    p.add_argument("--mode", choices=("append", "update"), default="append")
    p.add_argument("--policy", choices=("min", "global"), default="min")
    p.add_argument("--interval", type=float, default=0.1)
    p.add_argument("--max-records", type=int, default=20)
    args = p.parse_args(argv)

    options: dict[str, Any] = {
        "worker_id": args.worker_id,
        "failover_time": 2.0,
        "max_records_per_batch": args.max_records,
        "consumer_options": {"idle_time": 0.1, "take_interval": 0.5},
    }
    endpoint = AwsEndpoint.local(args.endpoint)
    df = sk.read_stream.kinesis(args.stream, args.app, SCHEMA, endpoint, **options)
    writer = (
        windowed(df)
        .write_stream.output_mode(args.mode)
        .watermark_policy(args.policy)
        .checkpoint(args.checkpoint)
    )
    if args.trigger == "available_now":
        writer = writer.trigger(available_now=True)
    else:
        writer = writer.trigger(processing_time=args.interval)
    query = writer.parquet(args.out).start()
    seen = -1
    while not query.await_termination(0.05):
        for progress in query.recent_progress:  # every batch, however fast they come
            if progress.batch_id > seen:
                seen = progress.batch_id
                print(f"batch {seen} rows {progress.num_input_rows}", flush=True)
    late = query.late_rows
    print(f"late {0 if late is None else late.num_rows}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
