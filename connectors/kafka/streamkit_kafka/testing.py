"""Helpers for tests and examples against a real broker: topics, producing, reading back."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamkit_kafka.support import known_partitions


def unique(prefix: str) -> str:
    """A fresh name (topic, group) for one test."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def create_topic(bootstrap: str, topic: str, partitions: int = 1) -> None:
    """Create ``topic`` with ``partitions`` partitions (replication factor 1)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, replication_factor=1)])
    finally:
        await admin.close()


async def produce(
    bootstrap: str,
    topic: str,
    values: Sequence[bytes],
    *,
    partitions: int = 1,
    keys: Sequence[bytes] | None = None,
) -> None:
    """Send ``values`` round-robin over ``partitions`` (value ``i`` to partition
    ``i % partitions``), in order per partition, and wait for every acknowledgement."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, v, key=keys[i] if keys else None, partition=i % partitions)
            for i, v in enumerate(values)
        ]
        await producer.flush()
        for future in futures:
            await future
    finally:
        await producer.stop()


async def read_all(
    bootstrap: str, topic: str, expected: int, timeout: float = 20.0
) -> list[tuple[int, int, bytes | None, bytes | None]]:
    """``(partition, offset, key, value)`` of the first ``expected`` records of ``topic``
    (all partitions, from the beginning, no group)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await known_partitions(consumer, [topic], timeout)
        assert tps, f"topic {topic!r} has no partitions after {timeout} s"
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[tuple[int, int, bytes | None, bytes | None]] = []
        deadline = time.monotonic() + timeout
        while len(out) < expected and time.monotonic() < deadline:
            data = await consumer.getmany(timeout_ms=500)
            for tp, records in data.items():
                out += [(tp.partition, r.offset, r.key, r.value) for r in records]
        return out
    finally:
        await consumer.stop()
