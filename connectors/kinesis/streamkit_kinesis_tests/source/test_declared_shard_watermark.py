"""A shard whose first records reach the engine batches after the others' (its first
GetRecords came later) holds the watermark back from the moment it is held (issue 18,
item 5): before, only shards that had delivered a row counted, so ``W`` followed the
three fast shards and the slow shard's first rows were dropped as late.

The backlog is in event-time order within every shard; the slow shard's deliveries are
held back (at the source's buffer) until the query has taken two batches. Expected late
rows come from the records as the server returns them, per shard, in plain Python: a row
is late only if it is more than the delay behind an earlier row of its own shard."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pytest
from streamkit_kinesis.leases import DynamoDBLeaseStore
from streamkit_kinesis.source import KinesisStreamSource
from streamkit_kinesis.testing.streams import fresh_stream, read_shard_blocking, unique

import streamkit as sk

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint
    from streamkit.streaming.contracts import SourceBatch

pytestmark = [pytest.mark.integration, pytest.mark.localstack]

SCHEMA = pa.schema([("id", pa.int64()), ("event_time", pa.timestamp("us", "UTC"))])
OPTIONS = {"idle_time": 0.1, "take_interval": 0.5}
DAY = datetime(2024, 5, 1, tzinfo=UTC)
DELAY = timedelta(minutes=10)
ROWS, SHARDS, PER_BATCH, HELD_BATCHES = 240, 4, 40, 2


def put_backlog(endpoint: AwsEndpoint, stream: str) -> dict[str, list[datetime]]:
    """Row ``i`` (event time DAY + i minutes) to shard ``i % SHARDS``, each shard's rows
    in order; returns each shard's event times in the order the server reads them back."""
    client = endpoint.client("kinesis")
    shards = sorted(client.list_shards(StreamName=stream)["Shards"], key=lambda s: s["ShardId"])
    for k, shard in enumerate(shards):
        entries: list[Any] = [
            {
                "Data": json.dumps({"id": i, "event_time": _iso(DAY + timedelta(minutes=i))}),
                "PartitionKey": "k",
                "ExplicitHashKey": shard["HashKeyRange"]["StartingHashKey"],
            }
            for i in range(k, ROWS, SHARDS)
        ]
        assert client.put_records(StreamName=stream, Records=entries)["FailedRecordCount"] == 0
    return {
        s["ShardId"]: [
            DAY + timedelta(minutes=json.loads(r["Data"])["id"])
            for r in read_shard_blocking(client, stream, s["ShardId"])
        ]
        for s in shards
    }


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def late_within_shards(times: dict[str, list[datetime]]) -> int:
    """Rows more than DELAY behind an earlier row of the same shard."""
    late = 0
    for series in times.values():
        top: datetime | None = None
        for t in series:
            late += top is not None and t < top - DELAY
            top = t if top is None else max(top, t)
    return late


async def test_a_shard_delivering_batches_late_loses_no_rows(
    localstack_endpoint: AwsEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    ep, app, name = localstack_endpoint, unique("app"), unique("pwm_k")
    async with fresh_stream(ep, SHARDS, "pwmk") as (stream, _):
        times = await asyncio.to_thread(put_backlog, ep, stream)
        assert sum(map(len, times.values())) == ROWS
        expected_late = late_within_shards(times)
        expected = Counter(t.replace(minute=0) for s in times.values() for t in s)
        slow = sorted(times)[-1]
        source = KinesisStreamSource(
            stream, app, ep, schema=SCHEMA, max_records_per_batch=PER_BATCH,
            consumer_options=OPTIONS,
        )  # fmt: skip
        released = asyncio.Event()
        batches: list[set[str]] = []
        accept, next_batch = source._buffers.accept, source.next_batch

        async def slow_accept(shard_id: str, records: Any, lag: int | None) -> int:
            if shard_id == slow:  # its first GetRecords "comes later"
                await released.wait()
            return await accept(shard_id, records, lag)

        async def counted(max_wait: float) -> SourceBatch | None:
            batch = await next_batch(max_wait)
            if batch is not None and batch.row_partitions is not None:
                batches.append(set(batch.row_partitions.cast(pa.string()).to_pylist()))
                if len(batches) >= HELD_BATCHES:
                    released.set()
            return batch

        monkeypatch.setattr(source._buffers, "accept", slow_accept)
        monkeypatch.setattr(source, "next_batch", counted)
        df = sk.read_stream.source(source).with_watermark("event_time", "10 minutes")
        counts = df.group_by(sk.window("event_time", "1 hour")).agg(sk.count().alias("n"))
        writer = counts.write_stream.output_mode("update").trigger(available_now=True)
        try:
            q = writer.memory(name).start()
            assert await asyncio.to_thread(q.await_termination, 180)
        finally:
            await DynamoDBLeaseStore(ep, app).delete_table()
    first_slow = next(i for i, parts in enumerate(batches) if slow in parts)
    assert first_slow >= HELD_BATCHES, "the slow shard's first rows came batches later"
    late = q.late_rows.num_rows if q.late_rows is not None else 0
    assert expected_late == 0
    assert late == expected_late
    result = {r["window"]["start"]: r["n"] for r in sk.memory_table(name).to_pylist()}
    assert result == dict(expected)
