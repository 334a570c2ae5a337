"""A held lease is read or released, and a graceful stop ends, whatever happened to the
shard's task (the fleet's SIGTERM hang and "lease held and renewed but never read").

1. A take that outlasts ``failover_time`` (a loaded machine: the write queued behind other
   work) hands back a lease that is stale on arrival: the consumer's own event emission
   re-entered the held view, which reported the lease lost before its task existed. The
   task then read for ever without its lease (every checkpoint refused), and when the lease
   was taken again the new task waited for the old one for ever: nothing checkpointed, and
   a graceful stop waited on it for ever. Here the consumer's clock jumps past
   ``failover_time`` during its first take, on a real lease table.
2. A shard task that ends without a callback (here: cancelled from outside) while its lease
   stays held must not leave the lease renewed and unread: the take cycle's watchdog
   releases it and the next take cycle starts it afresh.

Every record must end up checkpointed by a task that holds its lease, and ``stop()``
must return with the lease released.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.consumer import (
    BaseRecordProcessor,
    ConsumerEvent,
    ConsumerEventKind,
    KinesisConsumer,
)
from streamkit_kinesis.leases import DynamoDBLeaseStore, Lease, LeaseLostError
from streamkit_kinesis.testing.streams import fresh_stream

from streamkit_kinesis_tests.consumer.consumer_support import (
    drop_table,
    fast_config,
    leases,
    produce,
    wait_until,
)

if TYPE_CHECKING:
    from streamkit_kinesis.leases import Checkpointer
    from streamkit_kinesis.types import RecordBatch

    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack]

FAILOVER = 4.0
"""The stale lease is taken again this long after the stale take: time enough for a task
started on it to read (and be refused)."""
STOP_DEADLINE = 60.0
"""Generous: a stop takes well under a second here; the bug never returned."""


class JumpingClock:
    """``time.monotonic`` plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


class SlowFirstTake(DynamoDBLeaseStore):
    """The real lease table; its first take "takes" longer than ``failover_time``: the
    consumer's clock jumps past it while the write is in flight."""

    def __init__(self, endpoint: AwsEndpoint, table: str, clock: JumpingClock) -> None:
        super().__init__(endpoint, table)
        self.clock = clock
        self.slow_takes = 1

    async def take_lease(self, lease: Lease, owner: str) -> Lease:
        taken = await super().take_lease(lease, owner)
        if self.slow_takes:
            self.slow_takes -= 1
            self.clock.offset += FAILOVER + 1.0
        return taken


class Recorder(BaseRecordProcessor):
    """Checkpoints every batch; after a refused checkpoint (recorded) it does nothing more,
    as the fleet's source task does ("the next owner takes over")."""

    def __init__(self, refused: list[str], read: list[str]) -> None:
        self.refused, self.read = refused, read
        self.lost = False

    async def process_records(self, batch: RecordBatch, checkpointer: Checkpointer) -> None:
        if self.lost:
            return
        self.read.extend(r.sequence_number for r in batch.records)
        try:
            await checkpointer.checkpoint()
        except LeaseLostError as e:
            self.refused.append(str(e))
            self.lost = True


def checkpoint_of(table: list[Lease]) -> int:
    cp = table[0].checkpoint
    return -1 if cp.is_sentinel else cp.as_int()


async def last_sequence(endpoint: AwsEndpoint, stream: str) -> int:
    def read() -> int:
        client = kinesis_client(endpoint)
        shard = client.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
        it = client.get_shard_iterator(
            StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        last = -1
        while True:
            out = client.get_records(ShardIterator=it, Limit=10_000)
            if out["Records"]:
                last = int(out["Records"][-1]["SequenceNumber"])
            if not out["Records"] or not out.get("NextShardIterator"):
                return last
            it = out["NextShardIterator"]

    return await asyncio.to_thread(read)


async def wait_checkpointed(endpoint: AwsEndpoint, app: str, seq: int, what: str) -> None:
    deadline = time.monotonic() + 120.0
    while checkpoint_of(await leases(endpoint, app)) < seq:
        assert time.monotonic() < deadline, f"timed out after 120s waiting for {what}"
        await asyncio.sleep(0.2)


async def stop_and_check_released(consumer: KinesisConsumer, endpoint: AwsEndpoint) -> None:
    try:
        await asyncio.wait_for(consumer.stop(), STOP_DEADLINE)
    except TimeoutError:
        pytest.fail(f"stop() did not return within {STOP_DEADLINE}s")
    table = await leases(endpoint, consumer.config.app_name)
    assert [x.lease_owner for x in table] == [None]


async def test_a_take_that_outlasts_failover_time_is_read_by_a_holder_and_stops(
    localstack_endpoint: AwsEndpoint,
) -> None:
    ep = localstack_endpoint
    async with fresh_stream(ep, 1, "stale") as (stream, _):
        await produce(ep, stream, 50)
        seq = await last_sequence(ep, stream)
        clock = JumpingClock()
        config = fast_config(stream, failover_time=FAILOVER, shutdown_grace=2.0)
        store = SlowFirstTake(ep, config.app_name, clock)
        refused: list[str] = []
        read: list[str] = []
        consumer = KinesisConsumer(config, ep, lease_store=store, clock=clock)
        try:
            await consumer.start(lambda: Recorder(refused, read))
            await wait_checkpointed(ep, config.app_name, seq, "every record checkpointed")
            assert store.slow_takes == 0  # the stale take did happen
            assert refused == []  # no task read without holding the lease
            await stop_and_check_released(consumer, ep)
        finally:
            with_timeout = asyncio.wait_for(consumer.stop(), 5.0)
            await asyncio.gather(with_timeout, return_exceptions=True)
            await drop_table(ep, config.app_name)


async def test_a_held_lease_whose_task_ended_silently_is_released_and_read_again(
    localstack_endpoint: AwsEndpoint,
) -> None:
    ep = localstack_endpoint
    async with fresh_stream(ep, 1, "orphan") as (stream, _):
        await produce(ep, stream, 20)
        seq = await last_sequence(ep, stream)
        # a long failover time: the lease is not lost by slow renewals on a loaded machine
        # (a loss would re-take it without the watchdog)
        config = fast_config(stream, failover_time=10.0, shutdown_grace=2.0)
        refused: list[str] = []
        read: list[str] = []
        consumer = KinesisConsumer(config, ep)
        released: list[str | None] = []

        def on_event(event: ConsumerEvent) -> None:
            if event.kind is ConsumerEventKind.LEASE_RELEASED:
                released.append(event.shard_id)

        consumer.add_listener(on_event)
        try:
            await consumer.start(lambda: Recorder(refused, read))
            await wait_checkpointed(ep, config.app_name, seq, "the first records checkpointed")
            (task,) = consumer._tasks.values()
            task.task.cancel()  # ends without any callback; the lease stays held
            await wait_until(task.task.done, 10.0, "the task cancelled")
            await produce(ep, stream, 20, start=20)
            seq = await last_sequence(ep, stream)
            await wait_checkpointed(ep, config.app_name, seq, "the later records checkpointed")
            assert released == [task.shard_id]  # by the watchdog, not at stop
            assert refused == []
            await stop_and_check_released(consumer, ep)
        finally:
            with_timeout = asyncio.wait_for(consumer.stop(), 5.0)
            await asyncio.gather(with_timeout, return_exceptions=True)
            await drop_table(ep, config.app_name)
