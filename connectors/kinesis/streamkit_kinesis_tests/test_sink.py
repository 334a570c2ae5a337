"""The Kinesis sink on LocalStack: a streaming query writes a stream that is read back with
plain boto3; rows without a partition key are dead letters; an unknown stream is named."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import pyarrow as pa
import pytest
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.errors import StreamNotFoundError
from streamkit_kinesis.sink import KinesisSink
from streamkit_kinesis.testing.streams import fresh_stream, read_stream_blocking, unique

import streamkit as sk
from streamkit.streaming.decode import JsonDecoder, Positions, RawRecords
from streamkit.streaming.sources.memory import MemoryStream
from streamkit.testing.events import SCHEMA, make_events
from streamkit.testing.tables import assert_table_equal

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack]

ROW_ORDER = ["event_time", "action", "user_id", "value"]


async def test_query_to_kinesis_read_back(localstack_endpoint: AwsEndpoint) -> None:
    ep = localstack_endpoint
    truth, _ = make_events(300, seed=21)
    keyless = pa.Table.from_pylist(
        [{"event_time": truth["event_time"][0].as_py(), "action": "view", "user_id": None,
          "value": 1}], schema=SCHEMA,
    )  # fmt: skip
    memory = MemoryStream(schema=SCHEMA, max_records_per_batch=100)
    memory.add_rows(pa.concat_tables([truth.slice(0, 150), keyless, truth.slice(150)]))
    async with fresh_stream(ep, 2, "sink") as (stream, _):
        sink = KinesisSink(stream, ep, "user_id", producer_options={"linger_ms": 20})
        q = sk.read_stream.source(memory).write_stream.trigger(available_now=True).to(sink)
        query = q.start()
        assert await asyncio.to_thread(query.await_termination, 90)
        shards = await asyncio.to_thread(read_stream_blocking, kinesis_client(ep), stream)
    assert sink.records_sent == 300
    assert [(d.batch_id, d.row["user_id"]) for d in sink.dead_letters] == [(1, None)]
    assert "partition key 'user_id'" in sink.dead_letters[0].reason
    records = [r for rs in shards.values() for r in rs]
    assert len(records) == 300
    rows = [json.loads(r["Data"]) for r in records]
    assert all(r["PartitionKey"] == row["user_id"] for r, row in zip(records, rows, strict=True))
    decoded = JsonDecoder(SCHEMA).decode(
        RawRecords.from_partition([r["Data"] for r in records], "s", Positions(range(300)))
    )
    assert decoded.dead_letters.num_rows == 0
    assert_table_equal(decoded.rows, truth, sort_by=ROW_ORDER)
    # one key, one shard, in row order
    by_key: dict[str, set[str]] = {}
    for shard, rs in shards.items():
        for r in rs:
            by_key.setdefault(r["PartitionKey"], set()).add(shard)
    assert all(len(s) == 1 for s in by_key.values())


async def test_unknown_stream_is_named(localstack_endpoint: AwsEndpoint) -> None:
    stream = unique("nosuch")
    sink = KinesisSink(stream, localstack_endpoint, "k", producer_options={"max_attempts": 2})
    with pytest.raises(StreamNotFoundError, match=stream):
        await sink.add_batch(0, pa.table({"k": ["a"], "v": [1]}))
    await sink.close()
