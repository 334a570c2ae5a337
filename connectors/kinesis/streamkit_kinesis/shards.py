"""ListShards, paged, with server-side filters used only as an optimisation.

Some servers ignore ``ShardFilter`` / ``ExclusiveStartShardId`` (moto, kinesalite), so every
filter asked of the server is applied again to the result here: the answer is the same
whether or not the server honoured it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .types import HashKeyRange, ShardInfo

if TYPE_CHECKING:
    from mypy_boto3_kinesis.type_defs import ListShardsInputTypeDef, ShardTypeDef

    from .client import KinesisApi

MAX_HASH_KEY = 2**128 - 1
"""Highest hash key of a Kinesis stream."""


def shard_info(shard: ShardTypeDef) -> ShardInfo:
    """A :class:`ShardInfo` from one ListShards entry."""
    parents = tuple(
        p for p in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId")) if p
    )
    seq = shard["SequenceNumberRange"]
    keys = shard["HashKeyRange"]
    return ShardInfo(
        shard_id=shard["ShardId"],
        parent_shard_ids=parents,
        hash_key_range=HashKeyRange(int(keys["StartingHashKey"]), int(keys["EndingHashKey"])),
        starting_sequence_number=seq["StartingSequenceNumber"],
        ending_sequence_number=seq.get("EndingSequenceNumber"),
    )


def list_shards_blocking(
    client: KinesisApi,
    stream: str,
    *,
    open_only: bool = False,
    after_shard_id: str | None = None,
    page_size: int | None = None,
) -> list[ShardInfo]:
    """Every shard of ``stream`` (sorted by shard id), following ``NextToken`` pages.

    ``open_only`` keeps only shards that accept writes (sent as ``ShardFilter AT_LATEST``);
    ``after_shard_id`` keeps shards whose id sorts after it (sent as
    ``ExclusiveStartShardId``). Both are re-applied locally. Blocking: run it in a thread.
    """
    request: ListShardsInputTypeDef = {"StreamName": stream}
    if page_size is not None:
        request["MaxResults"] = page_size
    if open_only:
        request["ShardFilter"] = {"Type": "AT_LATEST"}
    elif after_shard_id is not None:
        request["ExclusiveStartShardId"] = after_shard_id
    found: dict[str, ShardInfo] = {}
    while True:
        page = client.list_shards(**request)
        for raw in page.get("Shards", []):
            info = shard_info(raw)
            found[info.shard_id] = info
        token = page.get("NextToken")
        if not token or not page.get("Shards"):
            break
        # AWS forbids StreamName (and the filters) together with NextToken.
        request = {"NextToken": token}
        if page_size is not None:
            request["MaxResults"] = page_size
    shards = sorted(found.values(), key=lambda s: s.shard_id)
    if open_only:
        shards = [s for s in shards if not s.is_closed]
    if after_shard_id is not None:
        shards = [s for s in shards if s.shard_id > after_shard_id]
    return shards


def split_point(shard: ShardInfo) -> int:
    """The hash key that splits ``shard`` into two halves (first key of the upper half)."""
    low, high = shard.hash_key_range.starting_hash_key, shard.hash_key_range.ending_hash_key
    if high - low < 1:
        raise ValueError(f"shard {shard.shard_id} covers a single hash key; it cannot be split")
    return low + (high - low + 1) // 2


def are_adjacent(a: ShardInfo, b: ShardInfo) -> bool:
    """True when the hash ranges of ``a`` and ``b`` touch (in either order)."""
    ra, rb = a.hash_key_range, b.hash_key_range
    return ra.ending_hash_key + 1 == rb.starting_hash_key or (
        rb.ending_hash_key + 1 == ra.starting_hash_key
    )
