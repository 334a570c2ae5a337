"""Small helpers shared by the Kafka source and sink: partition ids, bounded start."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiokafka import TopicPartition
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
