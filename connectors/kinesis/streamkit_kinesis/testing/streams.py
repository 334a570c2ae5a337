"""Helpers shared by the Kinesis producer / admin / reader integration tests.

Reading back uses plain boto3 calls (no streamkit code), so a producer test does not trust
the reader it is meant to feed.
"""

from __future__ import annotations

import uuid
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from streamkit_kinesis.admin import StreamAdmin

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from mypy_boto3_kinesis.type_defs import RecordTypeDef

    from streamkit.config import AwsEndpoint
    from streamkit_kinesis.client import KinesisApi


def unique(prefix: str) -> str:
    """A stream name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@asynccontextmanager
async def fresh_stream(
    endpoint: AwsEndpoint, shards: int, prefix: str = "t"
) -> AsyncIterator[tuple[str, StreamAdmin]]:
    """A new ACTIVE stream of ``shards`` shards, deleted afterwards (without waiting)."""
    admin = StreamAdmin(endpoint, poll_interval=0.1)
    name = unique(prefix)
    await admin.create_stream(name, shards)
    try:
        yield name, admin
    finally:
        await admin.delete_stream(name, wait=False)
        admin.close()


def read_shard_blocking(
    client: KinesisApi, stream: str, shard_id: str, max_calls: int = 1000
) -> list[RecordTypeDef]:
    """Every record of one shard from TRIM_HORIZON, with plain GetRecords calls, until an
    empty caught-up read (or a null iterator).

    kinesis-mock 0.4.13 (LocalStack 4.9) may answer the iterator after a shard's first
    record with that record again, for ever (it numbers it like the shard's start when
    both fall in the same second): records at or before the last one read are dropped,
    and an answer made only of them counts as the tip."""
    it: str | None = client.get_shard_iterator(
        StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    out: list[RecordTypeDef] = []
    for _ in range(max_calls):
        if it is None:
            return out
        resp = client.get_records(ShardIterator=it, Limit=10_000)
        last = int(out[-1]["SequenceNumber"]) if out else -1
        new = [r for r in resp["Records"] if int(r["SequenceNumber"]) > last]
        out.extend(new)
        repeated = bool(resp["Records"])
        if not new and (repeated or not resp.get("MillisBehindLatest")):
            return out
        it = resp.get("NextShardIterator")
    raise AssertionError(f"shard {shard_id} did not reach its tip in {max_calls} calls")


def read_stream_blocking(client: KinesisApi, stream: str) -> dict[str, list[RecordTypeDef]]:
    """Every record of every shard of ``stream``, by shard id (plain boto3)."""
    shards = client.list_shards(StreamName=stream)["Shards"]
    return {s["ShardId"]: read_shard_blocking(client, stream, s["ShardId"]) for s in shards}


def put_blocking(
    client: KinesisApi, stream: str, payloads: list[bytes], key: str = "k"
) -> list[str]:
    """Write ``payloads`` with plain PutRecords calls (one key: one shard, in order);
    returns their sequence numbers."""
    seqs: list[str] = []
    for start in range(0, len(payloads), 500):
        chunk = payloads[start : start + 500]
        out = client.put_records(
            StreamName=stream, Records=[{"Data": d, "PartitionKey": key} for d in chunk]
        )
        assert out["FailedRecordCount"] == 0
        seqs.extend(r["SequenceNumber"] for r in out["Records"])
    return seqs
