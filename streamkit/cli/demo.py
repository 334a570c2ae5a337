"""``streamkit demo``: the whole pipeline live on one machine.

Starts an embedded endpoint (moto's in-process server) unless one is given, creates a
stream, runs a clickstream producer and a streaming query (KCL-style consumer, event counts
per action per 1-minute window, update mode, memory sink) concurrently, shows them live,
and after ``duration`` or on a stop request (Ctrl-C, SIGTERM: see
:mod:`streamkit.cli.stop_signals`) stops everything in order: producer (flushed), query
(caught up with what was produced, then stopped; leases released), endpoint. The result
goes to ``<output>/window_counts.parquet`` (written whole or not at all). A stop requested
during start-up skips the steps not yet begun.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.live import Live
from streamkit_kinesis import KinesisProducer, StreamAdmin
from streamkit_kinesis.leases import DynamoDBLeaseStore

import streamkit as sk
from streamkit.cli._common import CliError, console, embedded_moto, endpoint_of, is_tty, run_async
from streamkit.cli.clickstream import SCHEMA, Clickstream
from streamkit.cli.demo_view import Snapshot, Summary, counted, plain_line, render

if TYPE_CHECKING:
    from streamkit.cli.stop_signals import StopRequest
    from streamkit.config import AwsEndpoint
    from streamkit.streaming.query import StreamingQuery


@dataclass(frozen=True)
class DemoOptions:
    """The demo's settings (the command's options)."""

    duration: float = 60.0
    """Seconds the producer runs (Ctrl-C stops earlier)."""
    endpoint: str | None = None
    """Endpoint URL; None starts moto's server in-process."""
    rate: int = 200
    """Events per second."""
    shards: int = 4
    """Shards of the demo stream."""
    output: Path = Path("out/demo-results")
    """Directory of the Parquet result."""
    interval: float = 3.0
    """Seconds between plain progress lines (no terminal)."""


class ProducerThread(threading.Thread):
    """Puts clickstream events at ``rate`` per second until :meth:`finish`; then flushes.

    ``produced`` counts events put; after :meth:`finish`, ``sent`` is what Kinesis
    acknowledged (at-least-once; a give-up is re-raised by :meth:`finish`)."""

    def __init__(self, endpoint: AwsEndpoint, stream: str, rate: int, seed: int = 0) -> None:
        super().__init__(name="demo-producer", daemon=True)
        self._endpoint, self._stream, self._rate = endpoint, stream, rate
        self._gen = Clickstream(seed)
        self._stop_flag = threading.Event()
        self.produced = 0
        self.sent = 0
        self.started_at = time.monotonic()
        self.seconds = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # re-raised by finish()
            self.error = e

    async def _main(self) -> None:
        async with KinesisProducer(self._endpoint, self._stream, linger_ms=100) as producer:
            self.started_at = start = time.monotonic()
            while not self._stop_flag.is_set():
                due = int(self._rate * (time.monotonic() - start)) - self.produced
                if due > 0:
                    for data, key in self._gen.batch(due).records:
                        await producer.put(data, key)
                    self.produced += due
                await asyncio.sleep(0.05)
            self.seconds = time.monotonic() - start
            await producer.flush()
        self.sent = producer.metrics().records_sent

    def finish(self) -> None:
        """Stop producing, wait for the flush; raise the producer's error if any."""
        self._stop_flag.set()
        self.join(60)
        if self.error is not None:
            raise self.error


def _query(endpoint: AwsEndpoint, stream: str, app: str, name: str) -> StreamingQuery:
    events = sk.read_stream.kinesis(
        stream, app, schema=SCHEMA, endpoint=endpoint, worker_id=f"demo-{os.getpid()}",
        consumer_options={"idle_time": 0.2, "take_interval": 2.0},
    )  # fmt: skip
    counts = (
        events.with_watermark("event_time", "30 seconds")
        .group_by(sk.window("event_time", "1 minute"), "action")
        .agg(sk.count().alias("events"), sk.sum("value").alias("value"))
    )
    return (
        counts.write_stream.output_mode("update")
        .trigger(processing_time="1 second")
        .query_name(name)
        .memory(name)
        .start()
    )


def _watch(
    opts: DemoOptions, producer: ProducerThread, query: StreamingQuery, title: str,
    stop: StopRequest,
) -> None:  # fmt: skip
    """Show progress until ``duration`` passed or a stop is requested."""

    def snap() -> Snapshot:
        if query.exception is not None or producer.error is not None:
            raise query.exception or producer.error  # type: ignore[misc]
        table = sk.memory_table(query.name) if query.last_progress else None
        elapsed = time.monotonic() - producer.started_at
        return Snapshot(elapsed, opts.duration, producer.produced, table, query.recent_progress)

    deadline = producer.started_at + opts.duration
    if is_tty():
        with Live(render(snap(), title), console=console, refresh_per_second=4) as live:
            while time.monotonic() < deadline and not stop.wait(0.5):
                live.update(render(snap(), title))
        return
    next_line = time.monotonic()
    while time.monotonic() < deadline and not stop.is_set():
        if time.monotonic() >= next_line:
            console.print(plain_line(snap()), soft_wrap=True)
            next_line += opts.interval
        stop.wait(0.2)


def _write(result: pa.Table, output: Path) -> Path:
    """Write the result atomically: readers see the whole file or none."""
    output.mkdir(parents=True, exist_ok=True)
    path = output / "window_counts.parquet"
    part = output / ".window_counts.parquet.part"
    window = result["window"].combine_chunks()
    flat = pa.table(
        {
            "window_start": window.field("start"),
            "window_end": window.field("end"),
            "action": result["action"],
            "events": result["events"],
            "value": result["value"],
        }
    ).sort_by([("window_start", "ascending"), ("action", "ascending")])
    pq.write_table(flat, part)
    os.replace(part, path)
    return path


def _stop(producer: ProducerThread, query: StreamingQuery) -> None:
    """Producer first (flushed), then let the query catch up and stop it."""
    try:
        producer.finish()
    finally:
        if query.is_active:
            with contextlib.suppress(TimeoutError):
                query.process_all_available(timeout=30)
        query.stop()
    query.await_termination(5)


def run_demo(opts: DemoOptions, stop: StopRequest) -> Summary | None:
    """Run the demo (see the module docstring) and return its summary; None when a stop
    was requested before any event was produced (nothing is written then)."""
    with ExitStack() as stack:
        if opts.endpoint:
            endpoint, where = endpoint_of(opts.endpoint), opts.endpoint
        else:
            endpoint = stack.enter_context(embedded_moto())
            where = f"embedded moto at {endpoint.url}"
        tag = uuid.uuid4().hex[:6]
        stream, app, name = f"clickstream-demo-{tag}", f"demo-app-{tag}", f"demo_{tag}"
        console.print(
            f"streamkit demo: stream {stream} ({opts.shards} shards) on {where}", soft_wrap=True
        )
        if stop.is_set():
            return None
        run_async(_create(endpoint, stream, opts.shards))
        if opts.endpoint:
            stack.callback(lambda: run_async(_cleanup(endpoint, stream, app)))
        if stop.is_set():
            return None
        query = _query(endpoint, stream, app, name)
        producer = ProducerThread(endpoint, stream, opts.rate)
        producer.start()
        try:
            _watch(opts, producer, query, f"{stream} · {opts.shards} shards", stop)
        finally:
            console.print("stopping: producer, then query (catching up) ...")
            _stop(producer, query)
        if stop.is_set():
            console.print(f"{stop.word}: stopped cleanly")
            if producer.sent == 0:
                return None
        return _summarize(endpoint, app, producer, query, opts.output)


def _summarize(
    endpoint: AwsEndpoint, app: str, producer: ProducerThread, query: StreamingQuery, out: Path
) -> Summary:
    leases = run_async(DynamoDBLeaseStore(endpoint, app).list_leases())
    result = sk.memory_table(query.name) if query.last_progress else SCHEMA.empty_table()
    if "window" not in result.column_names:
        raise CliError(
            "the query read nothing from the stream",
            "check that the producer could write (--rate > 0) and the endpoint is healthy",
        )
    late = query.late_rows
    dead = query.dead_letters
    path = _write(result, out)
    return Summary(
        produced=producer.sent,
        counted=counted(result),
        windows=len(pc.unique(result["window"].combine_chunks().field("start"))),
        rows=result.num_rows,
        seconds=producer.seconds,
        late=late.num_rows if late is not None else 0,
        dead_letters=dead.num_rows if dead is not None else 0,
        leases_released=sum(1 for lease in leases if lease.lease_owner is None),
        leases=len(leases),
        output=path,
    )


async def _create(endpoint: AwsEndpoint, stream: str, shards: int) -> None:
    async with StreamAdmin(endpoint) as admin:
        await admin.create_stream(stream, shards)


async def _cleanup(endpoint: AwsEndpoint, stream: str, app: str) -> None:
    """Delete the demo's stream and lease table (on an external endpoint)."""
    async with StreamAdmin(endpoint) as admin:
        await admin.delete_stream(stream, wait=False)
    await DynamoDBLeaseStore(endpoint, app).delete_table()
