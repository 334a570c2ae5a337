"""Consumer test 6: a worker that lost its lease cannot checkpoint; a loss stops the shard at once.

The lease is "stolen" by a plain conditional take on the real lease table (as another
worker would), while the consumer's processor is in the middle of a batch.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from streamkit_kinesis.consumer import BaseRecordProcessor, KinesisConsumer
from streamkit_kinesis.leases import (
    DynamoDBLeaseStore,
    LeaseConflictError,
    LeaseEvent,
    LeaseEventKind,
    LeaseLostError,
)
from streamkit_kinesis.testing.streams import fresh_stream
from streamkit_kinesis.types import TRIM_HORIZON

from streamkit_kinesis_tests.consumer.consumer_support import (
    drop_table,
    fast_config,
    produce,
    wait_until,
)

if TYPE_CHECKING:
    from streamkit_kinesis.leases import Checkpointer
    from streamkit_kinesis.types import RecordBatch

    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack]

SHARD = "shardId-000000000000"


class PausingProcessor(BaseRecordProcessor):
    """Stops in its first batch until told to go on, then checkpoints (or waits forever)."""

    def __init__(self, checkpoint_after_pause: bool) -> None:
        self.arrived = asyncio.Event()
        self.proceed = asyncio.Event()
        self.checkpoint_after_pause = checkpoint_after_pause
        self.checkpoint_error: BaseException | None = None
        self.cancelled = False
        self.lost: list[str] = []

    async def process_records(self, batch: RecordBatch, checkpointer: Checkpointer) -> None:
        self.arrived.set()
        try:
            await self.proceed.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if self.checkpoint_after_pause:
            try:
                await checkpointer.checkpoint()
            except LeaseLostError as e:
                self.checkpoint_error = e
                raise

    async def lease_lost(self, shard_id: str) -> None:
        self.lost.append(shard_id)


async def steal(endpoint: AwsEndpoint, app: str, attempts: int = 20) -> None:
    """Take SHARD as "intruder". The owner renews every second, so a renewal can land
    between our read and our conditional take: read again and retry, as a stealing
    worker would on its next cycle."""
    store = DynamoDBLeaseStore(endpoint, app)
    for _ in range(attempts):
        lease = await store.get_lease(SHARD)
        assert lease is not None
        assert lease.lease_owner is not None
        try:
            await store.take_lease(lease, "intruder")
            return
        except LeaseConflictError:
            continue
    raise AssertionError(f"the owner renewed between every read and take ({attempts} tries)")


async def test_checkpoint_after_the_lease_was_stolen_raises_and_writes_nothing(
    localstack_endpoint: AwsEndpoint,
) -> None:
    ep = localstack_endpoint
    async with fresh_stream(ep, 1, "lost") as (stream, _):
        await produce(ep, stream, 10, keys=2)
        # No renewal or take cycle can run during the test: the rejected checkpoint is the
        # first write after the steal.
        config = fast_config(stream, failover_time=60.0, renew_interval=20.0, take_interval=60.0)
        processor = PausingProcessor(checkpoint_after_pause=True)
        consumer = KinesisConsumer(config, ep)
        running = asyncio.create_task(consumer.run(lambda: processor))
        try:
            await asyncio.wait_for(processor.arrived.wait(), 30)
            await steal(ep, config.app_name)
            processor.proceed.set()
            await wait_until(lambda: processor.lost == [SHARD], 10, "lease_lost")
            assert isinstance(processor.checkpoint_error, LeaseLostError)
            lease = await DynamoDBLeaseStore(ep, config.app_name).get_lease(SHARD)
            assert lease is not None
            assert lease.lease_owner == "intruder"
            assert lease.checkpoint == TRIM_HORIZON  # nothing written
            assert consumer.held_shard_ids() == frozenset()
            assert consumer.metrics().leases.losses == 1
            assert not running.done()  # a lost lease is not an error of the consumer
            await consumer.stop()
            await running
            after = await DynamoDBLeaseStore(ep, config.app_name).get_lease(SHARD)
            assert after == lease  # our shutdown did not touch the stolen lease
        finally:
            await consumer.stop()
            await drop_table(ep, config.app_name)


async def test_async_for_batch_checkpoint_after_steal_raises(
    localstack_endpoint: AwsEndpoint,
) -> None:
    ep = localstack_endpoint
    async with fresh_stream(ep, 1, "lost") as (stream, _):
        await produce(ep, stream, 10, keys=2)
        config = fast_config(stream, failover_time=60.0, renew_interval=20.0, take_interval=60.0)
        try:
            async with KinesisConsumer(config, ep) as consumer:
                async for batch in consumer:
                    assert batch.shard_id == SHARD
                    await steal(ep, config.app_name)
                    with pytest.raises(LeaseLostError):
                        await batch.checkpoint()
                    break
            lease = await DynamoDBLeaseStore(ep, config.app_name).get_lease(SHARD)
            assert lease is not None
            assert (lease.lease_owner, lease.checkpoint) == ("intruder", TRIM_HORIZON)
        finally:
            await drop_table(ep, config.app_name)


async def test_lease_lost_mid_batch_cancels_processing_at_once(
    localstack_endpoint: AwsEndpoint,
) -> None:
    ep = localstack_endpoint
    async with fresh_stream(ep, 1, "lost") as (stream, _):
        await produce(ep, stream, 10, keys=2)
        config = fast_config(stream, failover_time=3.0, take_interval=60.0)  # renew every 1 s
        processor = PausingProcessor(checkpoint_after_pause=False)  # never finishes its batch
        consumer = KinesisConsumer(config, ep)
        running = asyncio.create_task(consumer.run(lambda: processor))
        try:
            await asyncio.wait_for(processor.arrived.wait(), 30)
            cycles_at_loss: list[int] = []

            def note_loss(event: LeaseEvent) -> None:
                if event.kind is LeaseEventKind.LOST:
                    cycles_at_loss.append(consumer.coordinator.metrics().renew_cycles)

            consumer.coordinator.add_listener(note_loss)
            await steal(ep, config.app_name)
            stolen_after = consumer.coordinator.metrics().renew_cycles
            await wait_until(lambda: processor.lost == [SHARD], 60, "lease_lost")
            # Counted in renewal cycles, not seconds: the cycle in flight during the steal
            # may have renewed before it; the next one noticed (a LOST event fires inside a
            # cycle, before that cycle is counted).
            assert cycles_at_loss, "no LOST event"
            assert cycles_at_loss[0] <= stolen_after + 1, cycles_at_loss
            assert processor.cancelled  # the batch in flight was cancelled, not finished
            lease = await DynamoDBLeaseStore(ep, config.app_name).get_lease(SHARD)
            assert lease is not None
            assert (lease.lease_owner, lease.checkpoint) == ("intruder", TRIM_HORIZON)
            await consumer.stop()
            await running
        finally:
            await consumer.stop()
            await drop_table(ep, config.app_name)
