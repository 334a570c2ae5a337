"""Schema inference of the stream source: a few of the oldest records, read with plain
blocking calls."""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamkit.errors import SchemaError
from streamkit.streaming.decode import JsonDecoder
from streamkit_kinesis.shards import list_shards_blocking

if TYPE_CHECKING:
    from collections.abc import Iterable

    import pyarrow as pa

    from streamkit.config import AwsEndpoint
    from streamkit.streaming.decode import Decoder
    from streamkit_kinesis.client import KinesisApi
    from streamkit_kinesis.types import ShardInfo


def stream_schema(decoder: Decoder, endpoint: AwsEndpoint, stream: str) -> pa.Schema:
    """``decoder``'s schema; for a JSON decoder without one, inferred (once, blocking)
    from up to 200 of the oldest records in the stream. :class:`SchemaError` if none."""
    schema = decoder.schema
    if schema is None and isinstance(decoder, JsonDecoder):
        client = endpoint.client("kinesis")
        shards = list_shards_blocking(client, stream)
        schema = decoder.infer_schema(sample_payloads(client, stream, shards))
    if schema is None:
        raise SchemaError(
            f"cannot infer a schema: stream {stream!r} has no valid JSON record yet; "
            "pass schema=..."
        )
    return schema


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
