"""Each row of a Kinesis micro-batch names the shard its record was put to (the engine's
per-partition watermarks rely on it); ground truth is PutRecord's own answer."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING

import pyarrow as pa
import pytest
from streamkit_kinesis.leases import DynamoDBLeaseStore
from streamkit_kinesis.source import KinesisStreamSource
from streamkit_kinesis.testing.streams import fresh_stream, unique

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack]

SCHEMA = pa.schema([("id", pa.int64())])
OPTIONS = {"idle_time": 0.1, "take_interval": 0.5, "max_records": 40}


def put_all(endpoint: AwsEndpoint, stream: str, n: int) -> tuple[dict[int, str], dict[str, int]]:
    """Put ``n`` JSON records (and a bad one after every 50th) one PutRecord each: the
    shard of each id, and the number of bad records per shard, as the server answered."""
    client = endpoint.client("kinesis")
    shard_of: dict[int, str] = {}
    bad: dict[str, int] = {}
    for i in range(n):
        answer = client.put_record(
            StreamName=stream, Data=json.dumps({"id": i}).encode(), PartitionKey=f"key-{i}"
        )
        shard_of[i] = answer["ShardId"]
        if i % 50 == 0:
            answer = client.put_record(StreamName=stream, Data=b"{not json", PartitionKey=f"b{i}")
            bad[answer["ShardId"]] = bad.get(answer["ShardId"], 0) + 1
    return shard_of, bad


async def test_every_row_names_the_shard_its_record_was_put_to(
    localstack_endpoint: AwsEndpoint,
) -> None:
    ep = localstack_endpoint
    app = unique("app")
    async with fresh_stream(ep, 3, "rowpart") as (stream, _):
        shard_of, bad = await asyncio.to_thread(put_all, ep, stream, 600)
        assert len(set(shard_of.values())) == 3, "the keys spread over every shard"
        source = KinesisStreamSource(
            stream, app, ep, schema=SCHEMA, max_records_per_batch=90, consumer_options=OPTIONS
        )
        seen: dict[int, str] = {}
        dead: dict[str, int] = {}
        batches = 0
        try:
            await source.open(None)
            deadline = time.monotonic() + 120
            while len(seen) < len(shard_of) or sum(dead.values()) < sum(bad.values()):
                assert time.monotonic() < deadline, f"{len(seen)} rows, {dead} dead so far"
                batch = await source.next_batch(0.5)
                if batch is None:
                    continue
                batches += 1
                assert batch.row_partitions is not None
                assert len(batch.row_partitions) == batch.rows.num_rows
                names = batch.row_partitions.cast(pa.string()).to_pylist()
                for row_id, shard in zip(batch.rows.column("id").to_pylist(), names, strict=True):
                    assert row_id not in seen
                    seen[row_id] = shard
                for shard in batch.dead_letters.column("partition").to_pylist():
                    dead[shard] = dead.get(shard, 0) + 1
                await source.commit(batch.end_offsets)
        finally:
            await source.close()
            await DynamoDBLeaseStore(ep, app).delete_table()
    assert seen == shard_of
    assert dead == bad
    assert batches > 1
