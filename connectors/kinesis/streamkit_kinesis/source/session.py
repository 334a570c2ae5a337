"""One open..close of the stream source: its clients, its consumer, and how it starts.

:func:`build_consumer` wires the consumer the source reads through (its own Kinesis
client and DynamoDB lease store, readers of ``config.retrieval``, polling or Enhanced
Fan-Out, tracked for health, KPL de-aggregation); :func:`start_consumer` aligns the lease
table with the query's offsets (:mod:`.alignment`), starts the consumer and waits for its
first take cycle, so every free lease is held when the source's ``open`` returns.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from streamkit_kinesis.client import kinesis_client, parse_timestamp
from streamkit_kinesis.consumer import ConsumerEvent, ConsumerEventKind, KinesisConsumer
from streamkit_kinesis.leases import DynamoDBLeaseStore
from streamkit_kinesis.leases.metrics import CallTimings
from streamkit_kinesis.source.alignment import Alignment, align_leases
from streamkit_kinesis.source.health import TrackedFetchers
from streamkit_kinesis.source.tasks import first_of

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from streamkit.config import AwsEndpoint
    from streamkit_kinesis.client import KinesisApi
    from streamkit_kinesis.consumer import ConsumerConfig
    from streamkit_kinesis.consumer.processor import ProcessorFactory
    from streamkit_kinesis.source.tip_watch import TipWatches


@dataclass(frozen=True)
class ConsumerParts:
    """What one session of the source runs."""

    consumer: KinesisConsumer
    client: KinesisApi
    """The consumer's Kinesis client (closed by the source at ``close``)."""
    readers: TrackedFetchers
    """The consumer's fetcher factory, remembering each shard's reader (health)."""
    store: DynamoDBLeaseStore


def build_consumer(
    config: ConsumerConfig,
    endpoint: AwsEndpoint,
    lease_endpoint: AwsEndpoint,
    clock: Callable[[], float],
    watches: TipWatches | None = None,
) -> ConsumerParts:
    """A consumer for ``config`` (not started), with clients of its own; its readers
    (polling or Enhanced Fan-Out) report to ``watches`` (:mod:`.tip_watch`)."""
    store = DynamoDBLeaseStore(
        lease_endpoint, config.app_name, call_timeout=config.lease_call_timeout
    )
    client = kinesis_client(endpoint, timestamp_parser=parse_timestamp)
    timings = CallTimings()
    readers = TrackedFetchers(config.fetchers(client, clock, timings), watches)
    consumer = KinesisConsumer(
        config, endpoint, kinesis=client, lease_store=store, clock=clock,
        fetcher_factory=readers, call_timings=timings,
    )  # fmt: skip
    return ConsumerParts(consumer, client, readers, store)


async def start_consumer(
    parts: ConsumerParts,
    offsets: Mapping[str, str],
    processors: ProcessorFactory,
    clock: Callable[[], float],
    started: Callable[[], None],
) -> Alignment:
    """Create the lease table if absent, align it with ``offsets``, start the consumer,
    call ``started()``, and wait (up to ``take_interval + 30`` s) for its first take cycle.
    Returns what the alignment changed. Raises what the consumer raises if it stops
    first."""
    consumer, store, config = parts.consumer, parts.store, parts.consumer.config
    first_cycle = asyncio.Event()

    def on_event(event: ConsumerEvent) -> None:
        if event.kind is ConsumerEventKind.TAKE_CYCLE:
            first_cycle.set()

    await store.create_table_if_not_exists()
    shards = await consumer.shards.list_shards()
    alignment = await align_leases(
        store, shards, offsets, config.worker_id,
        failover_time=config.failover_time, clock=clock,
    )  # fmt: skip
    consumer.add_listener(on_event)
    await consumer.start(processors, listed=shards)
    started()
    wait = config.effective_take_interval + 30.0
    await asyncio.wait_for(first_of(first_cycle.wait(), consumer.join()), wait)
    return alignment
