"""An aiohttp service that runs a windowed Kinesis query inside its own event loop.

Run: ``python examples/async_service.py --endpoint http://localhost:4566 --stream clicks
[--port 8080]`` (endpoint defaults to ``$STREAMKIT_AWS_ENDPOINT``; the stream is created
when missing). ``GET /counts`` answers the live events per action per 1-minute window,
``GET /progress`` the last micro-batch's progress. The query shares the service's loop:
``micro_batches()`` hands each batch's changed windows to :meth:`CountsService.consume`,
and the next batch is asked for (committing this one) only once they are applied; the
engine's own work runs in worker threads, so requests are answered while a batch runs.
SIGTERM or Ctrl-C stops it cleanly: the owner and shard leases are released, and a batch
not yet applied is delivered again, with the same id, to the next run.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import uuid
from typing import Any

from aiohttp import web
from clickstream_producer import ensure_stream

import streamkit as sk
from streamkit.cli.clickstream import SCHEMA
from streamkit.config import AwsEndpoint
from streamkit.streaming.micro_batches import MicroBatches


def windowed_counts(df: sk.DataFrame) -> sk.DataFrame:
    """Events per action per 1-minute window."""
    return df.group_by(sk.window("event_time", "1 minute"), "action").agg(
        sk.count().alias("events")
    )


class CountsService:
    """The query's live result, kept by window and action, served over HTTP."""

    def __init__(self, batches: MicroBatches) -> None:
        self.batches = batches
        self.counts: dict[tuple[str, str], int] = {}

    async def consume(self) -> None:
        """Apply each batch's changed windows (update mode): replacing a window's count
        is idempotent, so a batch delivered again after a restart counts once."""
        async with self.batches:
            async for batch in self.batches:
                for row in batch.table.to_pylist():
                    key = (row["window"]["start"].isoformat(), row["action"])
                    self.counts[key] = row["events"]

    async def get_counts(self, request: web.Request) -> web.Response:
        rows = [
            {"window_start": start, "action": action, "events": n}
            for (start, action), n in sorted(self.counts.items())
        ]
        return web.json_response(rows)

    async def get_progress(self, request: web.Request) -> web.Response:
        last = self.batches.query.last_progress
        body: dict[str, Any] | None = None
        if last is not None:
            watermark = last.watermark.isoformat() if last.watermark else None
            body = {
                "batch_id": last.batch_id, "num_input_rows": last.num_input_rows,
                "output_rows": last.output_rows, "state_rows": last.state_rows,
                "watermark": watermark,
            }  # fmt: skip
        return web.json_response(body)


def build(endpoint: AwsEndpoint, stream: str, app_name: str) -> CountsService:
    source = sk.read_stream.kinesis(
        stream, app_name, schema=SCHEMA, endpoint=endpoint,
        consumer_options={"idle_time": 0.1, "take_interval": 0.5},
    )  # fmt: skip
    writer = windowed_counts(source).write_stream.output_mode("update")
    return CountsService(writer.micro_batches())


async def serve(endpoint: AwsEndpoint, stream: str, app_name: str, port: int) -> None:
    """Serve until SIGTERM / SIGINT, or until the query fails (then raise its error)."""
    await ensure_stream(endpoint, stream, shards=2)
    service = build(endpoint, stream, app_name)
    app = web.Application()
    app.router.add_get("/counts", service.get_counts)
    app.router.add_get("/progress", service.get_progress)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    query = asyncio.create_task(service.consume())
    host, bound = runner.addresses[0][:2]
    print(f"serving http://{host}:{bound} (GET /counts, GET /progress)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({query, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await service.batches.aclose()  # stops the query; leases released
        stopping.cancel()
        await runner.cleanup()
    await query  # re-raises the query's error, if that is what ended the service
    print("stopped", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", help="AWS endpoint URL [$STREAMKIT_AWS_ENDPOINT]")
    parser.add_argument("--stream", default="clicks")
    parser.add_argument("--app-name", default=f"async-service-{uuid.uuid4().hex[:8]}")
    parser.add_argument("--port", type=int, default=8080, help="0: any free port")
    args = parser.parse_args(argv)
    endpoint = AwsEndpoint.from_env(args.endpoint)
    asyncio.run(serve(endpoint, args.stream, args.app_name, args.port))


if __name__ == "__main__":
    main()
