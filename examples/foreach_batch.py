"""``foreach_batch``: hand each micro-batch of a Kinesis stream to your own function.

Run: ``python examples/foreach_batch.py --endpoint http://localhost:4566 [--count 1000]``
(endpoint defaults to ``$STREAMKIT_AWS_ENDPOINT``). Produces a clickstream to a fresh
stream, then runs a query whose sink is :class:`BatchCounter.write`: it receives every
micro-batch as a DataFrame with its ``batch_id``. Keyed by ``batch_id`` the function is
idempotent, so a batch re-run after a crash replaces its earlier contribution
(exactly-once); the lease checkpoints advance only after the function returned.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from collections import Counter

from clickstream_producer import ensure_stream, events, produce

import streamkit as sk
from streamkit.cli.clickstream import SCHEMA
from streamkit.config import AwsEndpoint


class BatchCounter:
    """A user sink: counts per action, kept per batch id (idempotent on re-runs)."""

    def __init__(self) -> None:
        self.batches: dict[int, Counter[str]] = {}

    def write(self, df: sk.DataFrame, batch_id: int) -> None:
        counts = df.group_by("action").agg(sk.count().alias("n")).to_arrow().to_pylist()
        self.batches[batch_id] = Counter({row["action"]: row["n"] for row in counts})
        print(f"batch {batch_id}: {sum(self.batches[batch_id].values())} events")

    def total(self) -> Counter[str]:
        return sum(self.batches.values(), Counter())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", help="AWS endpoint URL [$STREAMKIT_AWS_ENDPOINT]")
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args(argv)
    endpoint = AwsEndpoint.from_env(args.endpoint)
    stream = f"foreach-{uuid.uuid4().hex[:8]}"
    asyncio.run(ensure_stream(endpoint, stream, shards=2))
    sent = asyncio.run(produce(endpoint, stream, events(args.count)[1]))
    print(f"produced {sent} events to {stream}")
    sink = BatchCounter()
    source = sk.read_stream.kinesis(
        stream, f"app-{stream}", schema=SCHEMA, endpoint=endpoint,
        max_records_per_batch=250, consumer_options={"idle_time": 0.1, "take_interval": 0.5},
    )  # fmt: skip
    query = source.write_stream.trigger(available_now=True).foreach_batch(sink.write).start()
    if not query.await_termination(120):
        query.stop()
        raise TimeoutError("the stream did not drain within 120 s")
    total = sink.total()
    print("per action: " + ", ".join(f"{a}={n}" for a, n in sorted(total.items())))
    print(f"total {sum(total.values())} events in {len(sink.batches)} batches")


if __name__ == "__main__":
    main()
