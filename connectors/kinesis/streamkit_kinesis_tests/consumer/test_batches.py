"""The async-for channel over a real Checkpointer and the in-memory lease store."""

from __future__ import annotations

import asyncio

import pytest
from streamkit_kinesis.consumer.batches import BatchChannel
from streamkit_kinesis.leases import Checkpointer, HeldLeases, InMemoryLeaseStore, Lease
from streamkit_kinesis.types import TRIM_HORIZON, KinesisRecord, RecordBatch


def batch(shard: str, *seqs: int) -> RecordBatch:
    return RecordBatch(shard, tuple(KinesisRecord(b"x", "k", str(s)) for s in seqs))


async def held_checkpointer(shard: str = "s-0") -> tuple[Checkpointer, InMemoryLeaseStore]:
    store = InMemoryLeaseStore()
    await store.create_table_if_not_exists()
    lease = await store.take_lease(await store.create_lease_if_not_exists(Lease(shard)), "me")
    held = HeldLeases()
    held.gained(lease)
    return Checkpointer(store, held, shard), store


async def never_stopped() -> None:
    await asyncio.sleep(0)


async def checkpoint_of(store: InMemoryLeaseStore, shard: str = "s-0") -> str:
    lease = await store.get_lease(shard)
    assert lease is not None
    return lease.checkpoint.sequence_number


async def test_a_batch_is_checkpointed_when_the_next_one_is_requested() -> None:
    checkpointer, store = await held_checkpointer()
    channel = BatchChannel()
    first = asyncio.create_task(channel.deliver(batch("s-0", 1, 2), checkpointer))
    got = await channel.next(never_stopped)
    assert got is not None
    assert [r.sequence_number for r in got.records] == ["1", "2"]
    await asyncio.sleep(0.01)
    assert not first.done()  # the shard waits while the caller handles the batch
    assert await checkpoint_of(store) == TRIM_HORIZON.sequence_number
    second = asyncio.create_task(channel.deliver(batch("s-0", 3), checkpointer))
    assert await channel.next(never_stopped) is not None  # acknowledges the first
    await first
    assert await checkpoint_of(store) == "2"
    channel.close()
    await second
    assert await checkpoint_of(store) == "2"  # the open batch is not checkpointed on close


async def test_without_auto_checkpoint_acknowledging_writes_nothing() -> None:
    checkpointer, store = await held_checkpointer()
    channel = BatchChannel()
    channel.auto_checkpoint = False
    first = asyncio.create_task(channel.deliver(batch("s-0", 5), checkpointer))
    got = await channel.next(never_stopped)
    assert got is not None
    channel.close()
    await first
    assert await checkpoint_of(store) == TRIM_HORIZON.sequence_number
    await got.checkpoint()  # explicit checkpoints still work while the lease is held
    assert await checkpoint_of(store) == "5"


async def test_close_releases_queued_batches_and_ends_iteration() -> None:
    checkpointer, store = await held_checkpointer()
    channel = BatchChannel()
    waiting = [asyncio.create_task(channel.deliver(batch("s-0", n), checkpointer)) for n in (1, 2)]
    await asyncio.sleep(0)
    stopped = asyncio.Event()
    channel.close()
    stopped.set()
    await asyncio.gather(*waiting)  # both shard tasks may go on
    assert await channel.next(stopped.wait) is None
    assert await checkpoint_of(store) == TRIM_HORIZON.sequence_number


async def test_a_batch_of_a_lost_shard_is_never_yielded() -> None:
    checkpointer, _ = await held_checkpointer()
    channel = BatchChannel()
    lost = asyncio.create_task(channel.deliver(batch("s-0", 1), checkpointer))
    await asyncio.sleep(0)
    lost.cancel()  # the shard task was cancelled: lease lost
    with pytest.raises(asyncio.CancelledError):
        await lost
    other, _ = await held_checkpointer("s-1")
    kept = asyncio.create_task(channel.deliver(batch("s-1", 7), other))
    got = await channel.next(never_stopped)
    assert got is not None
    assert got.shard_id == "s-1"
    channel.close()
    await kept
