"""Helpers for the consumer tests: a recording processor, producing, lease-table reads."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streamkit.connectors.kinesis.consumer import (
    BaseRecordProcessor,
    ConsumerConfig,
    InitialPosition,
)
from streamkit.connectors.kinesis.leases import DynamoDBLeaseStore, Lease
from streamkit.connectors.kinesis.producer import KinesisProducer

from .kinesis_support import unique

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from streamkit.config import AwsEndpoint
    from streamkit.connectors.kinesis.leases import Checkpointer
    from streamkit.connectors.kinesis.types import ExtendedSequenceNumber, RecordBatch


@dataclass(frozen=True)
class Seen:
    """One record as a processor saw it."""

    shard_id: str
    sequence_number: str
    partition_key: str
    data: bytes


@dataclass
class Journal:
    """Everything the processors of one consumer saw, in processing order."""

    records: list[Seen] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)
    """``(callback, shard_id)`` in call order."""

    def by_shard(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for r in self.records:
            out.setdefault(r.shard_id, []).append(int(r.sequence_number))
        return out

    def payloads(self) -> list[bytes]:
        return [r.data for r in self.records]


class RecordingProcessor(BaseRecordProcessor):
    """Appends every record to a :class:`Journal`; checkpoints after every batch."""

    def __init__(self, journal: Journal, checkpoint_every_batch: bool = True) -> None:
        self.journal = journal
        self.checkpoint_every_batch = checkpoint_every_batch

    async def initialize(self, shard_id: str, start: ExtendedSequenceNumber) -> None:
        self.journal.calls.append(("initialize", shard_id))

    async def process_records(self, batch: RecordBatch, checkpointer: Checkpointer) -> None:
        self.journal.records.extend(
            Seen(batch.shard_id, r.sequence_number, r.partition_key, r.data) for r in batch.records
        )
        if self.checkpoint_every_batch:
            await checkpointer.checkpoint()

    async def lease_lost(self, shard_id: str) -> None:
        self.journal.calls.append(("lease_lost", shard_id))

    async def shard_ended(self, shard_id: str, checkpointer: Checkpointer) -> None:
        self.journal.calls.append(("shard_ended", shard_id))
        await checkpointer.checkpoint()

    async def shutdown_requested(self, shard_id: str, checkpointer: Checkpointer) -> None:
        self.journal.calls.append(("shutdown_requested", shard_id))
        await checkpointer.checkpoint()


def fast_config(stream: str, **overrides: Any) -> ConsumerConfig:
    """A consumer config with short intervals for tests (own app name = own lease table)."""
    values: dict[str, Any] = {
        "app_name": unique("app"),
        "stream": stream,
        "initial_position": InitialPosition.trim_horizon(),
        "failover_time": 3.0,
        "take_interval": 0.5,
        "idle_time": 0.2,
        "parent_poll_interval": 0.5,
        "shard_sync_interval": 5.0,
        "shard_refresh_interval": 2.0,
    }
    values.update(overrides)
    return ConsumerConfig(**values)


def payload(key: str, n: int) -> bytes:
    """``key:n`` — the per-key counter makes order checks easy."""
    return f"{key}:{n}".encode()


async def produce(
    endpoint: AwsEndpoint, stream: str, n: int, *, keys: int = 100, start: int = 0, tag: str = ""
) -> list[bytes]:
    """Write ``n`` records round-robin over ``keys`` partition keys; returns the payloads."""
    names = [f"{tag}key-{k}" for k in range(keys)]
    sent: list[bytes] = []
    async with KinesisProducer(endpoint, stream, linger_ms=20) as producer:
        for i in range(start, start + n):
            key = names[i % keys]
            data = payload(key, i // keys)
            await producer.put(data, key)
            sent.append(data)
    return sent


async def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> float:
    """Poll ``predicate`` until true; returns the seconds it took, fails after ``timeout``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)
    return time.monotonic() - started


async def leases(endpoint: AwsEndpoint, app_name: str) -> list[Lease]:
    """The lease table of ``app_name`` as it is now (plain reads, no consumer involved)."""
    return await DynamoDBLeaseStore(endpoint, app_name).list_leases()


def owners(table: Sequence[Lease]) -> dict[str, int]:
    """Unfinished leases per owner (``-`` for unowned)."""
    counts: dict[str, int] = {}
    for lease in table:
        if not lease.is_finished:
            owner = lease.lease_owner or "-"
            counts[owner] = counts.get(owner, 0) + 1
    return counts


async def drop_table(endpoint: AwsEndpoint, app_name: str) -> None:
    """Delete the lease table of ``app_name``."""
    await DynamoDBLeaseStore(endpoint, app_name).delete_table()
