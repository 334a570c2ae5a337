"""A streaming job reading Kinesis into Parquet, run as a subprocess by the crash test.

It also defines what the Kinesis streaming tests share: the event schema, a deterministic
event generator, and the query (events per action per 1-minute window).

Job: read ``--stream`` with the KinesisStreamSource (lease table ``--app``, worker id
``--worker-id``), count events per (1-minute window, action) in complete mode and write
each batch's full result to ``--out`` (Parquet, idempotent per batch id), checkpointing
to ``--checkpoint``. ``--trigger processing`` runs until killed; ``--trigger available_now``
reads to the current end of every shard, commits and exits 0. Lines on stdout: ``aligned
<Alignment>`` once the source opened, then ``batch <id> rows <n>`` per batch; with
``--commit-delay``, ``lease-commit <offsets JSON>`` when the engine has committed a batch
and the lease checkpoint is about to follow; ``committed <offsets JSON>`` whenever the
source's last commit (the engine's, after its commit log) changed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import streamkit as sk
from streamkit.config import AwsEndpoint
from streamkit.testing.events import SCHEMA, counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    for name in ("endpoint", "stream", "app", "worker-id", "checkpoint", "out"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--trigger", choices=("processing", "available_now"), default="processing")
    p.add_argument("--interval", type=float, default=0.2)
    p.add_argument("--max-records", type=int, default=100)
    p.add_argument("--failover-time", type=float, default=2.0)
    p.add_argument(
        "--checkpoint-interval", type=float, default=None,
        help="the source's checkpoint_interval (default: the source's own)",
    )  # fmt: skip
    p.add_argument(
        "--commit-delay", type=float, default=0.0,
        help="sleep this long between the engine's commit and the lease checkpoint "
        "(a slow lease table), so that kills land there more often",
    )  # fmt: skip
    args = p.parse_args(argv)

    from streamkit_kinesis.source import KinesisStreamSource

    from streamkit.streaming.contracts import Offsets
    from streamkit.streaming.stream_scan import stream_source_of

    options: dict[str, Any] = {
        "worker_id": args.worker_id,
        "failover_time": args.failover_time,
        "max_records_per_batch": args.max_records,
        "consumer_options": {"idle_time": 0.1, "take_interval": 0.5},
    }
    if args.checkpoint_interval is not None:
        options["checkpoint_interval"] = args.checkpoint_interval
    endpoint = AwsEndpoint.local(args.endpoint)
    if args.commit_delay > 0:
        delay = args.commit_delay

        class SlowCommit(KinesisStreamSource):
            async def commit(self, offsets: Offsets) -> None:
                # The engine's commit log holds these offsets now; the leases do not yet.
                print(f"lease-commit {json.dumps(dict(offsets), sort_keys=True)}", flush=True)
                await asyncio.sleep(delay)
                await super().commit(offsets)

        src = SlowCommit(args.stream, args.app, endpoint, schema=SCHEMA, **options)
        df = sk.read_stream.source(src)
    else:
        df = sk.read_stream.kinesis(args.stream, args.app, SCHEMA, endpoint, **options)
    writer = counts(df).write_stream.output_mode("complete").checkpoint(args.checkpoint)
    if args.trigger == "available_now":
        writer = writer.trigger(available_now=True)
    else:
        writer = writer.trigger(processing_time=args.interval)
    source = stream_source_of(df.plan)
    assert isinstance(source, KinesisStreamSource)
    query = writer.parquet(args.out).start()
    seen, aligned, shown = -1, False, None
    while not query.await_termination(0.05):
        if source.committed is not None and source.committed != shown:
            shown = dict(source.committed)
            print(f"committed {json.dumps(shown, sort_keys=True)}", flush=True)
        if source.alignment is not None and not aligned:
            aligned = True
            print(f"aligned {source.alignment}", flush=True)
        last = query.last_progress
        if last is not None and last.batch_id != seen:
            seen = last.batch_id
            print(f"batch {seen} rows {last.num_input_rows}", flush=True)
    if source.alignment is not None and not aligned:
        print(f"aligned {source.alignment}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
