"""A few records to infer a schema from, read with plain blocking calls."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from streamkit_kinesis.client import KinesisApi
    from streamkit_kinesis.types import ShardInfo


def sample_payloads(
    client: KinesisApi, stream: str, shards: Iterable[ShardInfo], limit: int = 200
) -> list[bytes]:
    """Up to ``limit`` payloads from the oldest records of the shards (blocking calls)."""
    out: list[bytes] = []
    for shard in shards:
        iterator: str | None = client.get_shard_iterator(
            StreamName=stream, ShardId=shard.shard_id, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        for _ in range(5):
            if iterator is None or len(out) >= limit:
                break
            page = client.get_records(ShardIterator=iterator, Limit=limit - len(out))
            out.extend(r["Data"] for r in page["Records"])
            if page["Records"] or not page.get("MillisBehindLatest"):
                break
            iterator = page.get("NextShardIterator")
        if len(out) >= limit:
            break
    return out
