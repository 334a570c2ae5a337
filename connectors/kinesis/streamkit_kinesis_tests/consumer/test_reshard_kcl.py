"""Resharding as KCL does it (issue 12 item 3), on LocalStack (moto does not reshard; see
test_reshard.py's moto_gap).

Ground truth is the list of records this test put, per partition key in put order; every
key has a fixed explicit hash key, so each reshard moves some keys to new shards.
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import pytest
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.consumer import ConsumerEvent, ConsumerEventKind, KinesisConsumer
from streamkit_kinesis.consumer.config import InitialPosition
from streamkit_kinesis.leases import DynamoDBLeaseStore, Lease
from streamkit_kinesis.producer.producer import KinesisProducer
from streamkit_kinesis.shards import MAX_HASH_KEY
from streamkit_kinesis.testing.streams import fresh_stream, read_stream_blocking, unique
from streamkit_kinesis.types import TRIM_HORIZON, ExtendedSequenceNumber

from streamkit_kinesis_tests.consumer.consumer_support import (
    Journal,
    RecordingProcessor,
    WorkerProcess,
    drop_table,
    fast_config,
    poll_table,
    tips_of,
    wait_caught_up,
    wait_until,
)

if TYPE_CHECKING:
    from pathlib import Path

    from streamkit_kinesis.admin import StreamAdmin
    from streamkit_kinesis.types import ShardInfo

    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack, pytest.mark.slow]

KEYS = 64
"""Partition keys, each pinned to a hash key spread evenly over the hash space."""


class Feed:
    """Puts ``key-k:n`` records with key k at hash key ``k * 2**128 / KEYS``; remembers them."""

    def __init__(self, endpoint: AwsEndpoint, stream: str) -> None:
        self.endpoint = endpoint
        self.stream = stream
        self.sent: dict[str, list[int]] = defaultdict(list)

    async def put(self, rounds: int = 2) -> None:
        async with KinesisProducer(self.endpoint, self.stream, linger_ms=20) as producer:
            for _ in range(rounds):
                for k in range(KEYS):
                    key = f"key-{k}"
                    n = len(self.sent[key])
                    hash_key = str(k * ((MAX_HASH_KEY + 1) // KEYS))
                    await producer.put(f"{key}:{n}".encode(), key, explicit_hash_key=hash_key)
                    self.sent[key].append(n)

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.sent.values())


def per_key(payloads: list[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for p in payloads:
        key, n = p.split(":")
        out[key].append(int(n))
    return dict(out)


async def open_shards(admin: StreamAdmin, stream: str) -> list[ShardInfo]:
    return [s for s in await admin.list_shards(stream) if not s.is_closed]


async def test_split_then_split_a_child_before_any_sync_with_latest_loses_nothing(
    localstack_endpoint: AwsEndpoint,
) -> None:
    """Two reshards before the next shard sync, initial position LATEST: the grandchildren
    start at TRIM_HORIZON (the old sync gave them LATEST and lost their records)."""
    endpoint = localstack_endpoint
    async with fresh_stream(endpoint, 1, "resplit") as (stream, admin):
        config = fast_config(
            stream,
            initial_position=InitialPosition.latest(),
            shard_sync_interval=3600.0,  # no periodic sync: only the one at start
            lease_cleanup_interval=3600.0,
            failover_time=10.0,
        )
        journal = Journal()
        consumer = KinesisConsumer(config, endpoint)
        running = asyncio.create_task(consumer.run(lambda: RecordingProcessor(journal)))
        root = "shardId-000000000000"
        try:
            # LATEST: the iterator exists once the first GetRecords came back
            await wait_until(
                lambda: (
                    root in consumer.held_shard_ids()
                    and consumer.metrics().shard(root).get_records_calls >= 1
                ),
                60,
                "the root shard to be read at LATEST",
            )
            feed = Feed(endpoint, stream)
            await feed.put()
            children = await admin.split_shard(stream, root)
            await feed.put()
            first = min(children, key=lambda s: s.hash_key_range.starting_hash_key)
            grandchildren = await admin.split_shard(stream, first.shard_id)
            await feed.put()
            await wait_until(lambda: len(journal.records) >= feed.total, 120, "every record")
            truth = await asyncio.to_thread(read_stream_blocking, kinesis_client(endpoint), stream)
            await wait_caught_up(consumer, journal, tips_of(truth), 120)
            syncs = consumer.metrics().shard_syncs
            await consumer.stop()
            await running
        finally:
            await consumer.stop()
            await drop_table(endpoint, config.app_name)

    assert len(children) == 2
    assert len(grandchildren) == 2
    assert syncs == 1  # the children and grandchildren were leased at their parents' end
    assert per_key([r.data.decode() for r in journal.records]) == dict(feed.sent)
    read_from = {shard for call, shard in journal.calls if call == "initialize"}
    assert {s.shard_id for s in grandchildren} <= read_from


async def test_five_split_merge_rounds_leave_only_the_open_shards_in_the_lease_table(
    localstack_endpoint: AwsEndpoint,
) -> None:
    """Lease cleanup: after five reshards (split, merge, split, merge, split) of a
    2-shard stream (10 shards ever), the table holds the 3 open shards' leases only."""
    endpoint = localstack_endpoint
    async with fresh_stream(endpoint, 2, "rounds") as (stream, admin):
        config = fast_config(stream, lease_cleanup_interval=0.5, failover_time=10.0)
        journal = Journal()
        events: list[ConsumerEvent] = []
        consumer = KinesisConsumer(config, endpoint)
        consumer.add_listener(events.append)
        running = asyncio.create_task(consumer.run(lambda: RecordingProcessor(journal)))
        feed = Feed(endpoint, stream)
        try:
            await feed.put()
            for round_ in range(5):
                shards = sorted(
                    await open_shards(admin, stream),
                    key=lambda s: s.hash_key_range.starting_hash_key,
                )
                if round_ % 2 == 0:
                    widest = max(
                        shards,
                        key=lambda s: (
                            s.hash_key_range.ending_hash_key - s.hash_key_range.starting_hash_key
                        ),
                    )
                    await admin.split_shard(stream, widest.shard_id)
                else:
                    await admin.merge_shards(stream, shards[0].shard_id, shards[1].shard_id)
                await feed.put()
                await wait_until(
                    lambda: len(journal.records) >= feed.total, 120, f"round {round_} records"
                )
            final = {s.shard_id for s in await open_shards(admin, stream)}
            ever = {s.shard_id for s in await admin.list_shards(stream)}
            truth = await asyncio.to_thread(read_stream_blocking, kinesis_client(endpoint), stream)
            await wait_caught_up(consumer, journal, tips_of(truth), 120)
            table, _ = await poll_table(
                endpoint,
                config.app_name,
                lambda t: {lease.lease_key for lease in t} == final,
                60,
                f"the lease table to hold only the open shards {sorted(final)}",
            )
            await consumer.stop()
            await running
        finally:
            await consumer.stop()
            await drop_table(endpoint, config.app_name)

    assert len(ever) == 10
    assert len(final) == 3
    assert len(table) == 3
    assert per_key([r.data.decode() for r in journal.records]) == dict(feed.sent)
    cleaned = [e.detail for e in events if e.kind is ConsumerEventKind.LEASES_CLEANED]
    deleted = {k for d in cleaned for k in re.findall(r"shardId-\d+", d.split("garbage=")[0])}
    assert deleted == ever - final  # every one by the finished-parent rule, none as garbage


async def test_max_leases_two_with_four_blocked_children_reads_everything(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    """A table as an eager shard sync leaves it (2 parents, 4 children created at once),
    two worker processes with max_leases=2: blocked children never fill the 4 slots, the
    parents are read first, then every child. Nothing lost, no deadlock."""
    endpoint = localstack_endpoint
    app = unique("blocked")
    workers: list[WorkerProcess] = []
    async with fresh_stream(endpoint, 2, "blocked") as (stream, admin):
        feed = Feed(endpoint, stream)
        await feed.put()
        for parent in ("shardId-000000000000", "shardId-000000000001"):
            await admin.split_shard(stream, parent)
        await feed.put()
        shards = await admin.list_shards(stream)
        store = DynamoDBLeaseStore(endpoint, app)
        await store.create_table_if_not_exists()
        for info in shards:
            await store.create_lease_if_not_exists(Lease.for_shard(info, TRIM_HORIZON))
        try:
            workers = [
                WorkerProcess(endpoint, stream, app, f"w{i}", tmp_path, max_leases=2, failover=10.0)
                for i in range(2)
            ]
            expected = {f"{key}:{n}" for key, ns in feed.sent.items() for n in ns}
            await wait_until(
                lambda: (
                    {str(r["data"]) for w in workers for r in w.records()} >= expected
                    or any(w.proc.poll() is not None for w in workers)
                ),
                150,
                f"{feed.total} records read by two workers",
            )
            assert all(w.proc.poll() is None for w in workers), [w.log() for w in workers]
            for w in workers:
                w.proc.terminate()
            for w in workers:
                assert await w.wait_exit(60) == 0, w.log()
        finally:
            for w in workers:
                w.close()
            await drop_table(endpoint, app)

    children = {s.shard_id: s for s in shards if s.parent_shard_ids}
    assert len(children) == 4
    records = [r for w in workers for r in w.records()]
    assert per_key_in_time_order(records) == dict(feed.sent)
    ended = {e["shard"]: e["t"] for w in workers for e in w.events("shard_ended")}
    for w in workers:
        assert max(e.get("held", 0) for e in w.events()) <= 2  # max_leases
        for gained in w.events("lease_gained"):
            child = children.get(gained["shard"])
            if child is None:
                continue
            # a child is taken only once its parent was read to the end: it took no slot
            # while blocked
            parent = child.parent_shard_ids[0]
            assert parent in ended, f"{child.shard_id} taken, parent {parent} never ended"
            assert gained["t"] > ended[parent], f"{child.shard_id} taken while blocked"


def per_key_in_time_order(records: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Per key, counters in first-processing order across both processes (wall-clock ``t``
    of each logged record; one machine). A record processed again after a lease moved
    between the workers (at least once: the batch after the last checkpoint) counts once."""
    ordered = sorted(records, key=lambda r: float(r["t"]))
    first = dict.fromkeys((str(r["shard"]), str(r["seq"]), str(r["data"])) for r in ordered)
    return per_key([data for _, _, data in first])


async def test_children_come_from_list_shards_when_the_read_names_none(
    localstack_endpoint: AwsEndpoint,
) -> None:
    """SHARD_END without ``ChildShards`` (moto, older servers): the children are found in
    ListShards. A merge child waits while its other parent has no lease (KCL's rule)."""
    endpoint = localstack_endpoint
    async with fresh_stream(endpoint, 3, "nochild") as (stream, admin):
        config = fast_config(stream)
        consumer = KinesisConsumer(config, endpoint)  # not started: its host is driven here
        store = consumer.store
        await store.create_table_if_not_exists()
        try:
            s0, s1, s2 = (f"shardId-00000000000{i}" for i in range(3))
            split = await admin.split_shard(stream, s0)
            merged = await admin.merge_shards(stream, s1, s2)
            reading = ExtendedSequenceNumber("1")
            for key in (s0, s1):
                await store.create_lease_if_not_exists(Lease(key, checkpoint=reading))

            await consumer.shards.shard_ending(s0, ())
            await consumer.shards.shard_ending(s1, ())
            after_first = {x.lease_key: x for x in await store.list_leases()}
            await store.create_lease_if_not_exists(Lease(s2, checkpoint=reading))
            await consumer.shards.shard_ending(s2, ())
            after_second = {x.lease_key: x for x in await store.list_leases()}
        finally:
            await drop_table(endpoint, config.app_name)

    kids = sorted(s.shard_id for s in split)
    (m,) = (s.shard_id for s in merged)
    assert set(after_first) == {s0, s1, *kids}  # m deferred: s2 had no lease
    assert after_first[s0].child_shard_ids == tuple(kids)
    assert {after_first[k].checkpoint for k in kids} == {TRIM_HORIZON}
    assert after_first[kids[0]].parent_shard_ids == (s0,)
    assert set(after_second) == {s0, s1, s2, m, *kids}
    assert after_second[m].parent_shard_ids == (s1, s2)
    assert after_second[m].checkpoint == TRIM_HORIZON
