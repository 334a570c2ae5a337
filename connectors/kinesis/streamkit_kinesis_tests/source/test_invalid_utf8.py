"""A Kinesis record with invalid UTF-8 in a string field is a dead letter (with its reason,
shard and sequence number), even first in the stream where the schema is inferred; it is
never a group."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.leases import DynamoDBLeaseStore
from streamkit_kinesis.testing.streams import fresh_stream, put_blocking, unique

import streamkit as sk

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack]

FAST = {"idle_time": 0.1, "take_interval": 0.5}
BAD = b'{"page": "vi\xff\xfeew", "n": 0}'
GOOD = [b'{"page": "home", "n": 1}', b'{"page": "home", "n": 2}', b'{"page": "about", "n": 3}']


async def test_invalid_utf8_is_a_dead_letter_with_its_sequence_number(
    localstack_endpoint: AwsEndpoint,
) -> None:
    ep, app, name = localstack_endpoint, unique("app"), unique("kin_utf8").replace("-", "_")
    async with fresh_stream(ep, 1, "utf8") as (stream, _):
        client = kinesis_client(ep)
        seqs = await asyncio.to_thread(put_blocking, client, stream, [BAD, *GOOD])
        shard = client.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
        try:
            df = sk.read_stream.kinesis(stream, app, None, ep, consumer_options=FAST)
            counted = df.group_by("page").agg(sk.count().alias("n"))
            q = (counted.write_stream.output_mode("complete")
                 .trigger(available_now=True).memory(name).start())  # fmt: skip
            assert await asyncio.to_thread(q.await_termination, 90)
        finally:
            await DynamoDBLeaseStore(ep, app).delete_table()
    got = sk.memory_table(name)
    got.validate(full=True)
    assert sorted(got.to_pylist(), key=lambda r: r["page"]) == [
        {"page": "about", "n": 1},
        {"page": "home", "n": 2},
    ]
    assert q.dead_letters is not None
    assert q.dead_letters.select(["raw", "partition", "position", "reason"]).to_pylist() == [
        {
            "raw": BAD,
            "partition": shard,
            "position": seqs[0],
            "reason": "invalid UTF-8: byte 0xff at offset 12",
        }
    ]
