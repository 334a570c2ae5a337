"""The ``async for batch in consumer`` form: ordering, when checkpoints happen, restarts."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from streamkit_kinesis.consumer import ConsumedBatch, ConsumerState, KinesisConsumer
from streamkit_kinesis.testing.streams import fresh_stream
from streamkit_kinesis.types import TRIM_HORIZON

from streamkit_kinesis_tests.consumer.consumer_support import (
    drop_table,
    fast_config,
    leases,
    produce,
)

if TYPE_CHECKING:
    from streamkit_kinesis.consumer import ConsumerConfig

    from streamkit.config import AwsEndpoint

pytestmark = pytest.mark.integration


async def consume(
    config: ConsumerConfig,
    endpoint: AwsEndpoint,
    n: int,
    *,
    auto_checkpoint: bool = True,
    checkpoint_last: bool = True,
) -> list[ConsumedBatch]:
    """Iterate until ``n`` records came; optionally checkpoint the last batch explicitly."""
    got: list[ConsumedBatch] = []

    async def run() -> None:
        async with KinesisConsumer(config, endpoint) as consumer:
            async for batch in consumer.batches(auto_checkpoint=auto_checkpoint):
                got.append(batch)
                if sum(len(b.records) for b in got) >= n:
                    if checkpoint_last:
                        await batch.checkpoint()
                    break

    await asyncio.wait_for(run(), 60)
    return got


async def test_batches_in_shard_order_checkpointed_and_resumed_after_restart(
    aws_endpoint: AwsEndpoint,
) -> None:
    ep = aws_endpoint
    async with fresh_stream(ep, 3, "iter") as (stream, _):
        first = await produce(ep, stream, 300, keys=30)
        config = fast_config(stream, max_records=25)
        try:
            batches = await consume(config, ep, 300)
            records = [r for b in batches for r in b.records]
            assert sorted(r.data for r in records) == sorted(first)
            for shard in {b.shard_id for b in batches}:
                seqs = [int(r.sequence_number) for b in batches if b.shard_id == shard
                        for r in b.records]  # fmt: skip
                assert seqs == sorted(seqs)
            last = {b.shard_id: b.last_sequence_number for b in batches}
            table = await leases(ep, config.app_name)
            # every batch was acknowledged (asked past) or checkpointed explicitly
            assert {x.lease_key: x.checkpoint.sequence_number for x in table} == last
            assert all(x.lease_owner is None for x in table)  # released on exit

            second = await produce(ep, stream, 30, keys=30, start=300)
            again = await consume(config, ep, 30)  # same app: resumes after the checkpoints
            assert sorted(r.data for b in again for r in b.records) == sorted(second)
        finally:
            await drop_table(ep, config.app_name)


async def test_without_auto_checkpoint_only_explicit_checkpoints_are_written(
    aws_endpoint: AwsEndpoint,
) -> None:
    ep = aws_endpoint
    async with fresh_stream(ep, 1, "iter") as (stream, _):
        sent = await produce(ep, stream, 100, keys=5)
        config = fast_config(stream, max_records=10)
        try:
            batches = await consume(config, ep, 100, auto_checkpoint=False, checkpoint_last=False)
            assert len(batches) == 10
            [lease] = await leases(ep, config.app_name)
            assert lease.checkpoint == TRIM_HORIZON  # nothing was checkpointed
            again = await consume(config, ep, 100)  # so everything comes again
            assert sorted(r.data for b in again for r in b.records) == sorted(sent)
        finally:
            await drop_table(ep, config.app_name)


async def test_stop_inside_the_loop_ends_it_without_checkpointing_the_open_batch(
    aws_endpoint: AwsEndpoint,
) -> None:
    ep = aws_endpoint
    async with fresh_stream(ep, 1, "iter") as (stream, _):
        await produce(ep, stream, 30, keys=3)
        config = fast_config(stream, max_records=10)
        seen: list[ConsumedBatch] = []
        try:
            consumer = KinesisConsumer(config, ep)
            await consumer.start()
            async for batch in consumer:
                seen.append(batch)
                if len(seen) == 2:
                    await asyncio.wait_for(consumer.stop(), 10)  # no deadlock with the loop
            assert consumer.state is ConsumerState.STOPPED
            assert len(seen) == 2  # the loop ended after stop()
            [lease] = await leases(ep, config.app_name)
            # batch 1 was acknowledged by asking for batch 2; batch 2 was not
            assert lease.checkpoint.sequence_number == seen[0].last_sequence_number
            assert lease.lease_owner is None
        finally:
            await drop_table(ep, config.app_name)
