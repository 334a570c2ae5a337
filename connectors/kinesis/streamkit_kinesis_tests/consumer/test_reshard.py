"""Consumer test 4: split one shard and merge two others while consuming.

Every record is read, and for each partition key the records written before the reshard
(in the parent shards) are processed before those written after it (in the children):
children are not read until their parents are checkpointed at SHARD_END, and their
leases are created then, not by a periodic shard sync (KCL).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import TYPE_CHECKING

import pytest
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.consumer import ConsumerEvent, ConsumerEventKind, KinesisConsumer
from streamkit_kinesis.testing.streams import fresh_stream, read_stream_blocking
from streamkit_kinesis.types import SHARD_END

from streamkit_kinesis_tests.consumer.consumer_support import (
    Journal,
    RecordingProcessor,
    drop_table,
    fast_config,
    leases,
    produce,
    tips_of,
    wait_caught_up,
    wait_until,
)

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEYS = 30
PER_PHASE = 300


def per_key_order(journal: Journal) -> dict[str, list[int]]:
    """Per partition key, the per-key counters in processing order."""
    out: dict[str, list[int]] = defaultdict(list)
    for r in journal.records:
        key, n = r.data.decode().split(":")
        assert key == r.partition_key
        out[key].append(int(n))
    return dict(out)


@pytest.mark.moto_gap(
    "moto routes writes by hash range over closed shards too, so a split or merged parent "
    "keeps receiving records (and re-receives its own with new sequence numbers); no "
    "ChildShards either"
)
async def test_split_and_merge_while_consuming_keep_per_key_order(
    aws_endpoint: AwsEndpoint, aws_backend: str
) -> None:
    patience = 90 if aws_backend == "localstack" else 15  # moto: expected to fail, fail fast
    async with fresh_stream(aws_endpoint, 3, "reshard") as (stream, admin):
        before = await produce(aws_endpoint, stream, PER_PHASE, keys=KEYS)
        config = fast_config(stream, lease_cleanup_interval=3600.0)  # keep the lineage
        journal = Journal()
        consumer = KinesisConsumer(config, aws_endpoint)
        events: list[ConsumerEvent] = []
        consumer.add_listener(events.append)
        running = asyncio.create_task(consumer.run(lambda: RecordingProcessor(journal)))
        try:
            await wait_until(lambda: len(journal.records) > 0, 30, "consuming to begin")
            split = await admin.split_shard(stream, "shardId-000000000000")
            merged = await admin.merge_shards(
                stream, "shardId-000000000001", "shardId-000000000002"
            )
            after = await produce(aws_endpoint, stream, PER_PHASE, keys=KEYS, start=PER_PHASE)
            total = 2 * PER_PHASE
            await wait_until(lambda: len(journal.records) >= total, patience, f"{total} records")
            truth = await asyncio.to_thread(
                read_stream_blocking, kinesis_client(aws_endpoint), stream
            )
            await wait_caught_up(consumer, journal, tips_of(truth), patience)
            await consumer.stop()
            await running
            table = {
                lease.lease_key: lease for lease in await leases(aws_endpoint, config.app_name)
            }
        finally:
            await consumer.stop()
            await drop_table(aws_endpoint, config.app_name)

    assert len(split) == 2
    assert len(merged) == 1
    assert sorted(journal.payloads()) == sorted(before + after)  # each read once
    assert per_key_order(journal) == {
        f"key-{k}": list(range(2 * PER_PHASE // KEYS)) for k in range(KEYS)
    }
    parents = ["shardId-000000000000", "shardId-000000000001", "shardId-000000000002"]
    assert all(table[p].checkpoint == SHARD_END for p in parents)
    assert all(table[p].lease_owner is None for p in parents)  # finished leases released
    children = {s.shard_id for s in (*split, *merged)}
    assert {k for k, lease in table.items() if lease.parent_shard_ids} == children
    assert set(table[parents[0]].child_shard_ids) == {s.shard_id for s in split}
    # children were leased at their parents' SHARD_END, never by a periodic sync
    synced = [e.detail for e in events if e.kind is ConsumerEventKind.SHARD_SYNCED]
    assert not any(child in detail for child in children for detail in synced)
    created = {e.shard_id: e.detail for e in events if e.kind is ConsumerEventKind.CHILDREN_CREATED}
    assert {child for detail in created.values() for child in children if child in detail} == (
        children
    )
    ended = [shard for call, shard in journal.calls if call == "shard_ended"]
    assert sorted(ended) == parents
    # each child was initialized (started) only after all its parents ended
    for child in children:
        started = journal.calls.index(("initialize", child))
        for parent in table[child].parent_shard_ids:
            assert journal.calls.index(("shard_ended", parent)) < started
