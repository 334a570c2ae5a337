"""Produce a synthetic clickstream to a Kinesis stream (created if it does not exist).

Run: ``python examples/clickstream_producer.py --endpoint http://localhost:4566
--stream clicks --count 1000``; the endpoint defaults to ``$STREAMKIT_AWS_ENDPOINT``.
Records are JSON events ``{event_time, action, user_id, value}`` keyed by user, sent
through :class:`KinesisProducer` (batched PutRecords, failed entries retried): at least
once each, in order per user.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
from collections.abc import Callable

import pyarrow as pa
from streamkit_kinesis import KinesisProducer, StreamAdmin
from streamkit_kinesis.errors import StreamNotFoundError

from streamkit.cli.clickstream import Clickstream
from streamkit.config import AwsEndpoint

START = 1_704_067_200.0  # 2024-01-01T00:00:00Z: fixed event times make runs reproducible


def stepping_clock(start: float = START, step: float = 20.0) -> Callable[[], float]:
    """A clock advancing ``step`` seconds per call: each generated batch is later."""
    ticks = itertools.count()
    return lambda: start + step * next(ticks)


def events(count: int, seed: int = 7, batch: int = 100) -> tuple[pa.Table, list[tuple[bytes, str]]]:
    """``count`` seeded events spread over time, as rows and as Kinesis records."""
    gen = Clickstream(seed, jitter=10.0, clock=stepping_clock())
    parts = [gen.batch(min(batch, count - i)) for i in range(0, count, batch)]
    table = pa.concat_tables([p.table for p in parts])
    return table, [r for p in parts for r in p.records]


async def ensure_stream(endpoint: AwsEndpoint, stream: str, shards: int) -> None:
    """Create ``stream`` with ``shards`` shards unless it exists; wait until ACTIVE."""
    async with StreamAdmin(endpoint) as admin:
        try:
            await admin.wait_active(stream)
        except StreamNotFoundError:
            await admin.create_stream(stream, shards)


async def produce(endpoint: AwsEndpoint, stream: str, records: list[tuple[bytes, str]]) -> int:
    """Put every record and flush; returns the number acknowledged."""
    async with KinesisProducer(endpoint, stream) as producer:
        for data, key in records:
            await producer.put(data, key)
        await producer.flush()
        return producer.metrics().records_sent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", help="AWS endpoint URL [$STREAMKIT_AWS_ENDPOINT]")
    parser.add_argument("--stream", default="clicks")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    endpoint = AwsEndpoint.from_env(args.endpoint)
    _, records = events(args.count, args.seed)
    asyncio.run(ensure_stream(endpoint, args.stream, args.shards))
    sent = asyncio.run(produce(endpoint, args.stream, records))
    print(f"sent {sent} records to {args.stream} at {endpoint.url}")


if __name__ == "__main__":
    main()
