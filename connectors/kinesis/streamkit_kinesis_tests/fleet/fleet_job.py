"""The job file of the fleet integration tests (``test_fleet_*.py``), run by each worker
process with ``STREAMKIT_FLEET=1`` (what ``streamkit worker`` sets) and
``STREAMKIT_WORKER_ID``.

Query (``--query windowed``, the default): per (1-minute window of ``event_time``,
``action``): count, value sum and value average, watermark ``--delay`` behind, in ``--mode``
(append default), into Parquet at ``--out`` with the checkpoint root ``--checkpoint``; fleet
options ``exchange_shards=4``, ``idle_timeout=--idle``. ``--query stateless``: the rows
with ``value > 20`` (:func:`stateless`; no exchange), in append mode; ``--query dedup``:
``drop_duplicates()`` over every column, watermark ``--delay`` behind, in append mode (rows
routed by the whole row through the exchange); ``--query dedup_within``:
``drop_duplicates_within_watermark(["user_id"])``, watermark ``--delay`` behind, in append
mode (rows routed by ``user_id``); ``--query joined``: the stream left-joined on ``action``
with the static Parquet table ``--static`` (``action``, ``kind``, ``weight``), then per
(1-minute window, ``kind``): count, value sum and sum of ``value * weight``, watermark
``--delay`` behind (:func:`joined`); ``--query joined_stateless``: the rows with
``value > 20`` inner-joined with it (no exchange); ``--query chained``: a chain,
``drop_duplicates()`` over every column, then the left join with ``--static``, then per
(1-minute window, ``user_id``, ``kind``): count, value sum and sum of ``value * weight``,
watermark ``--delay`` behind (:func:`chained`; rows routed by ``user_id``, the one
``drop_duplicates`` key the aggregation groups by); ``--query stream_left`` /
``stream_right`` / ``stream_full`` / ``stream_inner_counted``: the stream joined with a
second stream ``--right-stream`` (same schema, columns renamed ``ruser``, ``rtime``,
``rvalue``) on ``user_id`` and ``event_time <= rtime <= event_time + 1 minute``, both
watermarks ``--delay`` behind: a left, right or full outer join's rows, or an inner
join's rows counted per (1-minute window, ``user_id``) (:func:`stream_joined`; rows
routed by ``user_id``); ``--query stream_left_distinct``: the left join's rows as the left
row's columns and ``hit`` (it met a right row), ``drop_duplicates`` on the left row's
columns (:func:`stream_distinct`). ``--failover`` sets the consumers'
``failover_time`` (default 6 s; a refused claim fails the worker after twice that). Prints
``started`` once the member runs and ``stopped`` at a clean exit (SIGTERM: graceful stop).
SIGUSR1 dumps every thread's stack to stderr (the harness does it when a worker does not
stop in time, then shows the log).
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import os
import signal
import sys
from datetime import timedelta
from typing import Any

import streamkit as sk
from streamkit.config import AwsEndpoint
from streamkit.testing.events import SCHEMA


def windowed(df: sk.DataFrame, delay: str) -> sk.DataFrame:
    """count, sum and avg of ``value`` per (1-minute window, action)."""
    marked = df.with_watermark("event_time", delay)
    return marked.group_by(sk.window("event_time", "1 minute"), "action").agg(
        sk.count().alias("n"), sk.sum("value").alias("total"), sk.avg("value").alias("mean")
    )


def stateless(df: sk.DataFrame) -> sk.DataFrame:
    """The rows with ``value > 20``, every column (a plan without an exchange)."""
    return df.filter(sk.col("value") > 20).select("event_time", "action", "user_id", "value")


def deduplicated(df: sk.DataFrame, delay: str) -> sk.DataFrame:
    """The first row of each distinct row (every column, event time included)."""
    return df.with_watermark("event_time", delay).drop_duplicates()


def deduplicated_within(df: sk.DataFrame, delay: str) -> sk.DataFrame:
    """The first row of each ``user_id``, its later rows dropped until the watermark passes
    the first row's event time plus ``delay``."""
    return df.with_watermark("event_time", delay).drop_duplicates_within_watermark(["user_id"])


def joined(df: sk.DataFrame, delay: str, static: str) -> sk.DataFrame:
    """The stream left-joined with the static table on ``action``, aggregated per
    (1-minute window, ``kind``, a column of the static table)."""
    table = sk.read.parquet(static)
    marked = df.with_watermark("event_time", delay).join(table, on="action", how="left")
    weighted = marked.with_column("vw", sk.col("value") * sk.col("weight"))
    return weighted.group_by(sk.window("event_time", "1 minute"), "kind").agg(
        sk.count().alias("n"), sk.sum("value").alias("total"), sk.sum("vw").alias("weighted")
    )


def chained(df: sk.DataFrame, delay: str, static: str) -> sk.DataFrame:
    """A chain: the distinct rows, left-joined with the static table on ``action``, then
    aggregated per (1-minute window, ``user_id``, ``kind``)."""
    distinct = df.with_watermark("event_time", delay).drop_duplicates()
    joined = distinct.join(sk.read.parquet(static), on="action", how="left")
    weighted = joined.with_column("vw", sk.col("value") * sk.col("weight"))
    return weighted.group_by(sk.window("event_time", "1 minute"), "user_id", "kind").agg(
        sk.count().alias("n"), sk.sum("value").alias("total"), sk.sum("vw").alias("weighted")
    )


def stream_joined(
    df: sk.DataFrame, other: sk.DataFrame, delay: str, how: str, counted: bool
) -> sk.DataFrame:
    """``df`` joined with the second stream ``other`` on ``user_id`` and a one-minute
    event-time range; ``counted``: the joined rows counted, with the sum of ``rvalue``,
    per (1-minute window of ``event_time``, ``user_id``)."""
    left = df.with_watermark("event_time", delay)
    right = other.select(
        sk.col("user_id").alias("ruser"), sk.col("event_time").alias("rtime"),
        sk.col("value").alias("rvalue"),
    ).with_watermark("rtime", delay)  # fmt: skip
    on = (
        (sk.col("user_id") == sk.col("ruser"))
        & (sk.col("rtime") >= sk.col("event_time"))
        & (sk.col("rtime") <= sk.col("event_time") + timedelta(minutes=1))
    )
    out = left.join(right, on, how)
    if not counted:
        return out
    return out.group_by(sk.window("event_time", "1 minute"), "user_id").agg(
        sk.count().alias("n"), sk.sum("rvalue").alias("total")
    )


def stream_distinct(df: sk.DataFrame, other: sk.DataFrame, delay: str) -> sk.DataFrame:
    """The left join of :func:`stream_joined`: per left row, its columns and ``hit`` (it
    met a right row), the first row of each (``drop_duplicates`` on the four columns: a
    key leaves the state once the join's output watermark passes its ``event_time``)."""
    out = stream_joined(df, other, delay, "left", False)
    hit = sk.col("rtime").is_not_null().alias("hit")
    marked = out.select("event_time", "action", "user_id", "value", hit)
    return marked.drop_duplicates(["event_time", "action", "user_id", "value"])


def joined_stateless(df: sk.DataFrame, static: str) -> sk.DataFrame:
    """The rows with ``value > 20`` inner-joined with the static table on ``action``."""
    kept = df.filter(sk.col("value") > 20).join(sk.read.parquet(static), on="action")
    return kept.select("event_time", "action", "user_id", "value", "kind", "weight")


def _dump_on_sigusr1(member: Any) -> None:
    """SIGUSR1: every thread's stack (faulthandler), then every asyncio task's stack on the
    member's event loop, to stderr."""

    def dump_tasks() -> None:
        for task in asyncio.all_tasks():
            print(f"--- task {task.get_name()}", file=sys.stderr)
            awaited: Any = task.get_coro()
            while awaited is not None:
                frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
                if frame is None:
                    print(f"    awaits {awaited!r}"[:300], file=sys.stderr)
                    break
                code = frame.f_code
                print(f"    {code.co_filename}:{frame.f_lineno} {code.co_name}", file=sys.stderr)
                inner = getattr(awaited, "cr_await", None)
                awaited = inner if inner is not None else getattr(awaited, "gi_yieldfrom", None)
        sys.stderr.flush()

    def handler(signum: int, frame: object) -> None:
        faulthandler.dump_traceback(all_threads=True)
        loop = member._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(dump_tasks)

    signal.signal(signal.SIGUSR1, handler)


def _log_tasks() -> None:
    """``STREAMKIT_FLEET_LOG=info``: the fleet's task claims, losses and refusals at INFO,
    with time and worker id, to stderr (the fleet's log) for a test's failure output."""
    if os.environ.get("STREAMKIT_FLEET_LOG") != "info":
        return
    worker = os.environ.get("STREAMKIT_WORKER_ID", "?")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s {worker} %(name)s: %(message)s"))
    for name in ("streamkit.fleet", "streamkit_kinesis.fleet", "streamkit_kinesis.consumer"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)


def _log_events() -> None:
    """``STREAMKIT_FLEET_EVENTS=<dir>``: every consumer event of this worker (each take cycle
    of each lease table...) to ``<dir>/<worker id>.log``, one line each, the event's Unix
    time first (:data:`streamkit_kinesis.fleet.worker.events_log`'s message after it)."""
    folder = os.environ.get("STREAMKIT_FLEET_EVENTS")
    if not folder:
        return
    worker = os.environ.get("STREAMKIT_WORKER_ID", "worker")
    os.makedirs(folder, exist_ok=True)
    handler = logging.FileHandler(os.path.join(folder, f"{worker}.log"))
    handler.setFormatter(logging.Formatter("%(created).3f %(message)s"))
    logger = logging.getLogger("streamkit_kinesis.fleet.events")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    for name in ("endpoint", "stream", "app", "checkpoint", "out"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--mode", choices=("append", "update"), default="append")
    p.add_argument("--delay", default="1 hour")
    p.add_argument("--idle", default="60 seconds")
    p.add_argument("--static", default="")
    p.add_argument("--right-stream", default="")
    names = ("windowed", "stateless", "dedup", "dedup_within", "joined", "joined_stateless",
             "chained", "stream_left", "stream_right", "stream_full",
             "stream_inner_counted", "stream_left_distinct")  # fmt: skip
    p.add_argument("--query", choices=names, default="windowed")
    p.add_argument("--failover", type=float, default=6.0)
    p.add_argument("--max-records", type=int, default=10_000, help="GetRecords Limit")
    args = p.parse_args(argv)
    _log_tasks()
    _log_events()
    options = {
        "failover_time": args.failover,
        "consumer_options": {
            "idle_time": 0.2, "take_interval": 1.0, "max_records": args.max_records,
            # $STREAMKIT_TEST_GATHER: this worker's gather_records (1: a batch per read)
            "gather_records": int(os.environ.get("STREAMKIT_TEST_GATHER", "0")),
        },
    }  # fmt: skip
    endpoint = AwsEndpoint.local(args.endpoint)
    df = sk.read_stream.kinesis(args.stream, args.app, SCHEMA, endpoint, **options)

    def other() -> sk.DataFrame:  # (its own app name is not the fleet's: it uses <app>-right)
        return sk.read_stream.kinesis(args.right_stream, f"{args.app}-r", SCHEMA, endpoint,
                                      **options)  # fmt: skip

    queries = {"windowed": lambda: windowed(df, args.delay), "stateless": lambda: stateless(df),
               "dedup": lambda: deduplicated(df, args.delay),
               "dedup_within": lambda: deduplicated_within(df, args.delay),
               "joined": lambda: joined(df, args.delay, args.static),
               "joined_stateless": lambda: joined_stateless(df, args.static),
               "chained": lambda: chained(df, args.delay, args.static),
               "stream_left": lambda: stream_joined(df, other(), args.delay, "left", False),
               "stream_right": lambda: stream_joined(df, other(), args.delay, "right", False),
               "stream_full": lambda: stream_joined(df, other(), args.delay, "full", False),
               "stream_inner_counted": lambda: stream_joined(df, other(), args.delay, "inner",
                                                             True),
               "stream_left_distinct": lambda: stream_distinct(df, other(),
                                                               args.delay)}  # fmt: skip
    query = queries[args.query]()
    member = (
        query.write_stream.output_mode(args.mode)
        .fleet(exchange_shards=4, idle_timeout=args.idle)
        .trigger(processing_time=0.5)
        .checkpoint(args.checkpoint)
        .parquet(args.out)
        .start()
    )
    _dump_on_sigusr1(member)
    print("started", flush=True)
    member.await_termination()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
