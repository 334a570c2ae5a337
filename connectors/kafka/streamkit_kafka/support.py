"""Small helpers shared by the Kafka source and sink: partition ids, bounded start."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaConnectionError

from .errors import BrokerUnreachableError

T = TypeVar("T")

Sleep = Callable[[float], Awaitable[None]]


def partition_id(topic: str, partition: int) -> str:
    """The offsets key of a partition: ``"topic-partition"`` (like Kafka's own naming)."""
    return f"{topic}-{partition}"


def topic_partition(pid: str) -> TopicPartition:
    """Inverse of :func:`partition_id` (topic names may contain ``-``)."""
    topic, _, number = pid.rpartition("-")
    if not topic or not number.isdigit():
        raise ValueError(f"not a 'topic-partition' id: {pid!r}")
    return TopicPartition(topic, int(number))


async def start_client(
    make: Callable[[], T],
    bootstrap: str,
    *,
    attempts: int = 3,
    backoff: float = 0.5,
    sleep: Sleep = asyncio.sleep,
) -> T:
    """A started aiokafka client (consumer, producer or admin) from ``make()``; a fresh
    client per attempt, ``attempts`` attempts with doubling ``backoff`` between them, then
    :class:`BrokerUnreachableError`."""
    cause = ""
    for attempt in range(1, attempts + 1):
        client: Any = make()
        try:
            await client.start()
        except (KafkaConnectionError, OSError) as exc:
            cause = str(exc) or type(exc).__name__
            with contextlib.suppress(Exception):
                await (client.close() if hasattr(client, "close") else client.stop())
            if attempt < attempts:
                await sleep(backoff * 2 ** (attempt - 1))
            continue
        return client  # type: ignore[no-any-return]
    raise BrokerUnreachableError(bootstrap, attempts, cause)


async def known_partitions(
    consumer: AIOKafkaConsumer, topics: list[str], wait: float
) -> list[TopicPartition]:
    """The partitions of ``topics`` in the cluster metadata, asking again for up to
    ``wait`` s while none is known (a topic created a moment ago may not be there yet)."""
    deadline = time.monotonic() + wait
    while True:
        # A fresh metadata snapshot: ``consumer.topics()`` fetches one but leaves the
        # consumer's cached metadata (what ``partitions_for_topic`` reads) as it was.
        cluster = await consumer._client.fetch_all_metadata()
        tps = [TopicPartition(t, p) for t in topics
               for p in sorted(cluster.partitions_for_topic(t) or ())]  # fmt: skip
        if tps or time.monotonic() >= deadline:
            return tps
        await asyncio.sleep(0.1)


def sample_values(
    bootstrap: str, topics: list[str], limit: int = 200, wait: float = 5.0
) -> list[bytes]:
    """Up to ``limit`` record values from the start of ``topics`` (no group, nothing
    committed), for schema inference. Blocking: runs its own event loop in a thread, so
    it may be called from inside a running loop."""
    from concurrent.futures import ThreadPoolExecutor

    from aiokafka import AIOKafkaConsumer

    async def sample() -> list[bytes]:
        consumer = await start_client(
            lambda: AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False),
            bootstrap,
        )
        try:
            tps = await known_partitions(consumer, topics, wait)
            if not tps:
                return []
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            data = await consumer.getmany(timeout_ms=int(wait * 1000), max_records=limit)
            return [r.value for rs in data.values() for r in rs if r.value]
        finally:
            await consumer.stop()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, sample()).result()
