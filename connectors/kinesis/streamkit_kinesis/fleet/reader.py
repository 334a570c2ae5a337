"""Exchange reads back into chunk bytes, in shard order, with their sequence numbers.

Thin on purpose: the aggregation task (fleet-runtime) reads its exchange shard through the
consumer's fetcher and decodes chunks itself (``streamkit.fleet.chunk``); this module only
turns a read (a consumer :class:`~streamkit_kinesis.types.RecordBatch` or a raw GetRecords
answer) into :class:`ExchangeRecord` s and checks what the dedup map relies on: sequence
numbers strictly increase, and no record is a KPL sub-record (exchange records are never
aggregated).
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from streamkit_kinesis.client import KinesisApi, call, endpoint_url
from streamkit_kinesis.errors import KinesisError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from mypy_boto3_kinesis.type_defs import GetRecordsOutputTypeDef, GetShardIteratorInputTypeDef

    from streamkit_kinesis.types import RecordBatch


class ExchangeOrderError(KinesisError):
    """An exchange read is out of order or carries aggregated records: not written by the
    exchange writer (another producer writes to the exchange stream?)."""


@dataclass(frozen=True)
class ExchangeRecord:
    """One exchange record: one chunk part."""

    sequence_number: str
    """Its sequence number in the exchange shard (decimal string)."""
    source_shard: str
    """The partition key: the source shard whose batch it belongs to."""
    data: bytes
    """The chunk bytes (an Arrow IPC stream, see ``streamkit.fleet.chunk``)."""


def _checked(records: Iterable[ExchangeRecord], after: str | None) -> list[ExchangeRecord]:
    out = list(records)
    previous = None if after is None else int(after)
    for r in out:
        current = int(r.sequence_number)
        if previous is not None and current <= previous:
            raise ExchangeOrderError(
                f"exchange record {r.sequence_number} does not follow {previous}; "
                "records must be read in shard order"
            )
        previous = current
    return out


def from_batch(batch: RecordBatch, after: str | None = None) -> list[ExchangeRecord]:
    """The records of a consumer batch of an exchange shard, in order (``after``: the
    sequence number read before, to check continuity across batches)."""
    aggregated = [r.sequence_number for r in batch.records if r.sub_sequence_number]
    if aggregated:
        raise ExchangeOrderError(
            f"exchange shard {batch.shard_id} holds KPL-aggregated records ({aggregated[0]}); "
            "only the fleet's exchange writer may write to the exchange stream"
        )
    return _checked(
        (ExchangeRecord(r.sequence_number, r.partition_key, r.data) for r in batch.records),
        after,
    )


def from_get_records(
    answer: GetRecordsOutputTypeDef, after: str | None = None
) -> list[ExchangeRecord]:
    """The records of a plain boto3 GetRecords answer, in order."""
    records = []
    for r in answer["Records"]:
        data = r["Data"]
        if not isinstance(data, bytes):
            raise ExchangeOrderError(
                f"GetRecords returned non-bytes data for {r['SequenceNumber']}"
            )
        records.append(ExchangeRecord(r["SequenceNumber"], r["PartitionKey"], data))
    return _checked(records, after)


async def read_exchange_shard(
    client: KinesisApi,
    stream: str,
    shard_id: str,
    after: str | None = None,
    *,
    max_calls: int = 1000,
) -> list[ExchangeRecord]:
    """Every record of one exchange shard after ``after`` (default: from the oldest), read
    with GetRecords until caught up (an empty answer at the tip). For tests, tools and
    recovery checks; connection failures fail fast as every ``call``."""
    url = endpoint_url(client)
    request: GetShardIteratorInputTypeDef = {
        "StreamName": stream,
        "ShardId": shard_id,
        "ShardIteratorType": "TRIM_HORIZON",
    }
    if after is not None:
        request["ShardIteratorType"] = "AFTER_SEQUENCE_NUMBER"
        request["StartingSequenceNumber"] = after
    got = await call(lambda: client.get_shard_iterator(**request), stream=stream, url=url)
    iterator: str | None = got["ShardIterator"]
    out: list[ExchangeRecord] = []
    last = after
    for _ in range(max_calls):
        if iterator is None:
            return out
        answer = await call(
            functools.partial(client.get_records, ShardIterator=iterator, Limit=10_000),
            stream=stream,
            url=url,
        )
        answered = from_get_records(answer)
        # a server may repeat records already read (kinesis-mock: ``ColumnarRecords.after``)
        records = _checked(
            (r for r in answered if last is None or int(r.sequence_number) > int(last)), last
        )
        out.extend(records)
        if records:
            last = records[-1].sequence_number
        if not records and (answered or not answer.get("MillisBehindLatest")):
            return out
        iterator = answer.get("NextShardIterator")
        await asyncio.sleep(0)
    raise ExchangeOrderError(f"exchange shard {shard_id} not caught up after {max_calls} reads")
