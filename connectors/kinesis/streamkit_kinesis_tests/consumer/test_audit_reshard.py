"""No periodic ListShards (issue 12 item 10, KCL 2.x's lease recovery auditor), on LocalStack.

ListShards requests are counted on the consumer's real boto3 client (botocore's
``before-send``, so retries count too). Resharding (split, merge, UpdateShardCount) while
consuming: the children come from the ``ChildShards`` of the parents' last GetRecords,
are read after their parents (per partition key order), and no ListShards is sent after
start, while the leader audits the lease table many times. A lease deleted from the table
(a hole in the hash ranges) is healed by one shard sync, only after the same hole was seen
``audit_confidence`` audits in a row.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.consumer import ConsumerEvent, ConsumerEventKind, KinesisConsumer
from streamkit_kinesis.leases import DynamoDBLeaseStore
from streamkit_kinesis.testing.streams import fresh_stream, read_stream_blocking

from streamkit_kinesis_tests.consumer.consumer_support import (
    Journal,
    RecordingProcessor,
    drop_table,
    fast_config,
    produce,
    tips_of,
    wait_caught_up,
    wait_until,
)
from streamkit_kinesis_tests.consumer.test_reshard import per_key_order

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack, pytest.mark.slow]

KEYS = 20
PER_PHASE = 200
AUDIT = 0.5
SETTINGS: dict[str, Any] = {
    "shard_sync_interval": AUDIT, "take_interval": 0.25, "shard_refresh_interval": None,
    "lease_cleanup_interval": 3600.0,
}  # fmt: skip


class ListShardsCounter:
    """ListShards requests sent by one client (botocore ``before-send``)."""

    def __init__(self, consumer: KinesisConsumer) -> None:
        self.calls = 0
        client: Any = consumer.client
        client.meta.events.register("before-send.kinesis.ListShards", self)

    def __call__(self, **_: Any) -> None:
        self.calls += 1


def audited(events: list[ConsumerEvent]) -> list[str]:
    return [e.detail for e in events if e.kind is ConsumerEventKind.LEASES_AUDITED]


async def test_split_merge_and_update_shard_count_need_no_list_shards(
    localstack_endpoint: AwsEndpoint,
) -> None:
    ep = localstack_endpoint
    async with fresh_stream(ep, 2, "audit") as (stream, admin):
        written = await produce(ep, stream, PER_PHASE, keys=KEYS)
        config = fast_config(stream, **SETTINGS)
        journal = Journal()
        consumer = KinesisConsumer(config, ep)
        events: list[ConsumerEvent] = []
        consumer.add_listener(events.append)
        counter = ListShardsCounter(consumer)
        running = asyncio.create_task(consumer.run(lambda: RecordingProcessor(journal)))
        try:
            await wait_until(lambda: len(journal.records) > 0, 60, "consuming to begin")
            at_start = counter.calls
            await admin.split_shard(stream, "shardId-000000000000")
            written += await produce(ep, stream, PER_PHASE, keys=KEYS, start=PER_PHASE)
            shards = [s for s in await admin.list_shards(stream) if not s.is_closed]
            a, b = sorted(shards, key=lambda s: s.hash_key_range.starting_hash_key)[:2]
            await admin.merge_shards(stream, a.shard_id, b.shard_id)
            written += await produce(ep, stream, PER_PHASE, keys=KEYS, start=2 * PER_PHASE)
            await admin.update_shard_count(stream, 4)
            written += await produce(ep, stream, PER_PHASE, keys=KEYS, start=3 * PER_PHASE)
            total = len(written)
            await wait_until(lambda: len(journal.records) >= total, 180, f"{total} records")
            truth = await asyncio.to_thread(read_stream_blocking, kinesis_client(ep), stream)
            await wait_caught_up(consumer, journal, tips_of(truth), 120)
            # Under load the catch-up can be quicker than ten audit periods: the claim is
            # "no ListShards while the leader keeps auditing", so let it audit ten times.
            await wait_until(lambda: len(audited(events)) >= 10, 120, "ten audits")
            audits_seen = audited(events)
            list_calls = counter.calls - at_start
        finally:
            await consumer.stop()
            await running
            await drop_table(ep, config.app_name)

    assert sorted(journal.payloads()) == sorted(written)  # each read once
    assert per_key_order(journal) == {
        f"key-{k}": list(range(4 * PER_PHASE // KEYS)) for k in range(KEYS)
    }
    assert len(audits_seen) >= 10, audits_seen
    assert list_calls == 0, f"{list_calls} ListShards while resharding; audits: {audits_seen}"
    children = {e.shard_id for e in events if e.kind is ConsumerEventKind.CHILDREN_CREATED}
    assert len(children) >= 3  # the split parent, the merge parents, the scaled shards


async def test_a_deleted_lease_is_healed_after_three_audits_by_one_sync(
    localstack_endpoint: AwsEndpoint,
) -> None:
    ep = localstack_endpoint
    async with fresh_stream(ep, 3, "hole") as (stream, _):
        config = fast_config(stream, **SETTINGS)
        consumer = KinesisConsumer(config, ep)
        events: list[ConsumerEvent] = []
        consumer.add_listener(events.append)
        counter = ListShardsCounter(consumer)
        journal = Journal()
        running = asyncio.create_task(consumer.run(lambda: RecordingProcessor(journal)))
        try:
            await wait_until(lambda: len(consumer.held_shard_ids()) == 3, 60, "3 leases")
            await wait_until(lambda: "complete" in audited(events), 30, "a clean audit")
            before_calls, mark = counter.calls, len(events)
            victim = "shardId-000000000001"
            await DynamoDBLeaseStore(ep, config.app_name).delete_lease(victim)

            def healed() -> bool:
                return victim in consumer.held_shard_ids() and any(
                    e.kind is ConsumerEventKind.SHARD_SYNCED for e in events[mark:]
                )

            await wait_until(healed, 60, "the lease re-created and held")
            after = events[mark:]
            written = await produce(ep, stream, 60, keys=6)
            await wait_until(
                lambda: set(written) <= set(journal.payloads()), 60, "records after the heal"
            )
            list_calls = counter.calls - before_calls
        finally:
            await consumer.stop()
            await running
            await drop_table(ep, config.app_name)

    kinds = [e.kind for e in after]
    synced = kinds.index(ConsumerEventKind.SHARD_SYNCED)
    holes = [e.detail for e in after[:synced] if e.kind is ConsumerEventKind.LEASES_AUDITED]
    assert [d.rsplit("(", 1)[1] for d in holes[-3:]] == ["seen 1x)", "seen 2x)", "seen 3x)"], holes
    assert list_calls == 1  # the one sync; audits themselves never list
