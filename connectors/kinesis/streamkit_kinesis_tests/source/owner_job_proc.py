"""A small streaming job for the owner-lease tests, run as a subprocess.

It reads ``--stream`` (app ``--app``, worker id ``--worker-id``) into a memory sink,
checkpointing to ``--checkpoint`` (a local path or ``s3://``; the S3 endpoint comes from
``STREAMKIT_AWS_ENDPOINT``). Lines on stdout: ``started`` once ``start()`` returned, or
``refused <ErrorClass> <message>`` (exit 3) when it refused; ``failed <ErrorClass>
<message>`` (exit 4) when the running query stopped with an error. SIGTERM stops it
cleanly (owner leases released, exit 0).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

import pyarrow as pa

import streamkit as sk
from streamkit.config import AwsEndpoint
from streamkit.errors import StreamkitError

SCHEMA = pa.schema([("k", pa.string())])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    for name in ("endpoint", "stream", "app", "worker-id", "checkpoint"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--failover-time", type=float, default=3.0)
    p.add_argument("--force", action="store_true")
    args = p.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    endpoint = AwsEndpoint.local(args.endpoint)
    sk.configure(endpoint)  # the S3 checkpoint store's endpoint
    df = sk.read_stream.kinesis(
        args.stream, args.app, SCHEMA, endpoint,
        worker_id=args.worker_id, failover_time=args.failover_time,
        consumer_options={"idle_time": 0.2, "take_interval": 0.5},
    )  # fmt: skip
    writer = df.group_by("k").agg(sk.count().alias("n")).write_stream.output_mode("complete")
    try:
        query = (
            writer.checkpoint(args.checkpoint)
            .memory(f"owner_{args.worker_id}")
            .start(force=args.force)
        )
    except StreamkitError as exc:
        print(f"refused {type(exc).__name__} {exc}", flush=True)
        return 3
    print("started", flush=True)
    while not stop.is_set() and query.is_active:
        stop.wait(0.1)
    query.stop()
    error = query.exception
    if error is not None:
        print(f"failed {type(error).__name__} {error}", flush=True)
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
