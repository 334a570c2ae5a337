"""A split under the per-partition watermark: the parent's SHARD_END must not let W jump
past rows its children have not delivered yet (issue 18, item 5).

The children are declared to the watermark only once leased (after their parent is
done), and a child read to its tip with no record does not hold W. Had the parent stopped
holding W at SHARD_END, the sibling shard's rows far ahead would set W, and the children's
first rows, just after the parent's last ones, would be dropped as late. Event times are
in order within every shard, so the expected late rows are 0 (derived from the records
put: no row is more than the delay behind an earlier row of its own shard or its parent).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pytest
from streamkit_kinesis.leases import DynamoDBLeaseStore
from streamkit_kinesis.source import KinesisStreamSource
from streamkit_kinesis.testing.streams import fresh_stream, unique

import streamkit as sk

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack]

SCHEMA = pa.schema([("id", pa.int64()), ("event_time", pa.timestamp("us", "UTC"))])
DAY = datetime(2024, 5, 1, tzinfo=UTC)
OPTIONS = {"idle_time": 0.1, "take_interval": 0.5, "parent_poll_interval": 0.5,
           "shard_sync_interval": 1.0}  # fmt: skip


def put(endpoint: AwsEndpoint, stream: str, hash_key: str, minutes: range) -> list[datetime]:
    """One record per minute of ``minutes`` (event time DAY + m), in order, to the shard
    owning ``hash_key``; returns their event times."""
    client = endpoint.client("kinesis")
    entries: list[Any] = [
        {"Data": json.dumps({"id": m, "event_time": _iso(DAY + timedelta(minutes=m))}),
         "PartitionKey": "k", "ExplicitHashKey": hash_key}
        for m in minutes
    ]  # fmt: skip
    assert client.put_records(StreamName=stream, Records=entries)["FailedRecordCount"] == 0
    return [DAY + timedelta(minutes=m) for m in minutes]


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def wait_for(what: str, check: Any, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def test_a_split_parent_holds_the_watermark_for_its_children(
    localstack_endpoint: AwsEndpoint,
) -> None:
    ep, app, name = localstack_endpoint, unique("app"), unique("pwm_split")
    async with fresh_stream(ep, 2, "pwmsplit") as (stream, admin):
        shards = sorted(await admin.list_shards(stream), key=lambda s: s.shard_id)
        parent, sibling = shards[0], shards[1]
        low = str(parent.hash_key_range.starting_hash_key)
        high = str(sibling.hash_key_range.starting_hash_key)
        times = put(ep, stream, low, range(0, 20)) + put(ep, stream, high, range(0, 20))
        source = KinesisStreamSource(
            stream, app, ep, schema=SCHEMA, max_records_per_batch=20, consumer_options=OPTIONS
        )
        df = sk.read_stream.source(source).with_watermark("event_time", "10 minutes")
        counts = df.group_by(sk.window("event_time", "1 hour")).agg(sk.count().alias("n"))
        writer = (
            counts.write_stream.output_mode("update")
            .trigger(processing_time=0.1)
            .watermark_policy("min", idle_timeout="10 minutes")
        )
        store = DynamoDBLeaseStore(ep, app)
        query = writer.memory(name).start()
        try:
            await asyncio.to_thread(query.process_all_available, 120)
            children = await admin.split_shard(stream, parent.shard_id)
            assert len(children) == 2
            # The sibling runs far ahead: alone it would put W at 290 minutes.
            times += put(ep, stream, high, range(20, 300))

            async def parent_done_children_held() -> bool:
                leases = {x.lease_key: x for x in await store.list_leases()}
                kids = [leases.get(c.shard_id) for c in children]
                return leases[parent.shard_id].is_finished and all(
                    k is not None and k.lease_owner is not None for k in kids
                )

            await wait_for("the parent's SHARD_END and both children held",
                           parent_done_children_held)  # fmt: skip
            await asyncio.to_thread(query.process_all_available, 120)
            kids = {c.shard_id for c in children}

            async def children_at_their_tips() -> bool:
                """A batch ran with both children read to their (empty) tips: had the
                parent stopped holding W, W would have jumped by the end of that batch."""
                return any(
                    {x.partition for x in p.partitions if x.lag_ms == 0} >= kids
                    for p in query.recent_progress
                )

            await wait_for("a batch with both children read to their tips", children_at_their_tips)
            # The children's first rows follow the parent's last (19 minutes).
            times += put(ep, stream, low, range(20, 40))
            total = len(times)

            rows: dict[int, int] = {}  # per batch id (recent_progress keeps the last 100)

            async def all_read() -> bool:
                rows.update((p.batch_id, p.num_input_rows) for p in query.recent_progress)
                return sum(rows.values()) >= total

            await wait_for("every record read", all_read)
            await asyncio.to_thread(query.process_all_available, 120)
        finally:
            await asyncio.to_thread(query.stop)
            await store.delete_table()
    late = query.late_rows.num_rows if query.late_rows is not None else 0
    assert late == 0, "a child's rows were dropped as late after its parent's SHARD_END"
    expected = Counter(t.replace(minute=0) for t in times)
    result = {r["window"]["start"]: r["n"] for r in sk.memory_table(name).to_pylist()}
    assert result == dict(expected)
