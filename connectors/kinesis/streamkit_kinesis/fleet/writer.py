"""Puts one source batch's chunks to every exchange partition, in order.

Ordering guarantee (what the aggregation side's dedup map relies on): per exchange shard,
the records of one source shard land in the order they were given, whatever fails and is
retried, because

- a PutRecords call never carries two records for one exchange shard (Kinesis may write
  the second while rejecting the first);
- part ``i + 1`` of a partition is sent only after part ``i`` was acknowledged;
- :meth:`ExchangeWriter.put_batch` returns only when every part is acknowledged, and two
  ``put_batch`` calls for one source shard may not overlap (refused).

Different partitions share calls (up to 500 records / 5 MiB). Throttling, 5xx and
connection failures, of a whole call or of single entries, are retried with backoff for
ever (an outage stalls the source task, never loses or reorders a chunk); any other error
is raised typed. Records are checked against the 1 MiB limit before anything is sent.

Not promised: exactly one copy. A call whose answer was lost (connection cut after Kinesis
wrote it) is sent again, so a part can land twice, right after itself; it carries the same
(source shard, range end, part) and the aggregation side drops it as a duplicate.
"""

from __future__ import annotations

import asyncio
import functools
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from streamkit_kinesis.client import KinesisApi, call_until_done, endpoint_url
from streamkit_kinesis.errors import KinesisError, RecordTooLargeError
from streamkit_kinesis.producer.batching import (
    MAX_BYTES_PER_CALL,
    MAX_RECORD_BYTES,
    MAX_RECORDS_PER_CALL,
)
from streamkit_kinesis.retry import (
    OUTAGE_BACKOFF,
    RETRYABLE_ENTRY_CODES,
    Backoff,
    RetryState,
    Rng,
    Sleep,
    is_throttling,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mypy_boto3_kinesis.type_defs import PutRecordsRequestEntryTypeDef

    from .exchange import ExchangeLayout


class ExchangeRecordTooLargeError(RecordTooLargeError):
    """A chunk part is over the 1 MiB Kinesis record limit; nothing of the batch was sent."""

    def __init__(self, size: int, limit: int, partition: int, part: int, source: str) -> None:
        self.size = size
        self.limit = limit
        self.partition_key = source
        self.partition = partition
        self.part = part
        KinesisError.__init__(
            self,
            f"exchange chunk part {part} for partition {partition} (source shard {source}) is "
            f"{size} bytes with its partition key, over the Kinesis record limit of {limit}; "
            "split chunks into more parts (streamkit.fleet.chunk splits at 900 KiB) before "
            "putting them",
        )


class ExchangePutError(KinesisError):
    """Kinesis refused an exchange record for a reason retrying cannot fix (e.g. KMS access
    denied). Parts before it may be written: stop the source task without checkpointing;
    the pending checkpoint makes the next owner re-emit the batch (duplicates are dropped
    downstream)."""

    def __init__(self, stream: str, partition: int, part: int, code: str, message: str) -> None:
        self.stream = stream
        self.partition = partition
        self.part = part
        self.code = code
        super().__init__(
            f"exchange stream {stream!r} refused part {part} of partition {partition} "
            f"({code}: {message}); fix the stream's permissions or encryption settings, then "
            "restart the worker"
        )


@dataclass(frozen=True)
class WriterMetrics:
    """Counters of an :class:`ExchangeWriter` since it was built."""

    records_sent: int
    """Records acknowledged."""
    bytes_sent: int
    """Data plus partition-key bytes acknowledged."""
    calls: int
    """PutRecords calls answered (retried whole-call failures not included)."""
    entry_retries: int
    """Records sent again after a retryable per-entry failure."""
    throttles: int
    """Entries rejected with a throttling code."""


class ExchangeWriter:
    """Writes chunk parts to the exchange stream of ``layout`` (see module docstring).

    One writer may serve several source tasks at once (one ``put_batch`` in flight per
    source shard). ``sleep`` / ``rng`` / ``backoff`` are injectable for tests.
    """

    def __init__(
        self,
        client: KinesisApi,
        layout: ExchangeLayout,
        *,
        backoff: Backoff = OUTAGE_BACKOFF,
        sleep: Sleep = asyncio.sleep,
        rng: Rng = random.random,
        max_batch_records: int = MAX_RECORDS_PER_CALL,
        max_batch_bytes: int = MAX_BYTES_PER_CALL,
    ) -> None:
        self._client = client
        self.layout = layout
        self._url = endpoint_url(client)
        self._backoff = backoff
        self._sleep = sleep
        self._rng = rng
        self._max_records = min(max_batch_records, MAX_RECORDS_PER_CALL)
        self._max_bytes = min(max_batch_bytes, MAX_BYTES_PER_CALL)
        self._busy: set[str] = set()
        self._counts = dict.fromkeys(
            ("records_sent", "bytes_sent", "calls", "entry_retries", "throttles"), 0
        )

    def metrics(self) -> WriterMetrics:
        """A snapshot of the counters."""
        return WriterMetrics(**self._counts)

    def another(self) -> ExchangeWriter:
        """A writer to the same exchange through the same client, with its own set of puts
        in flight (the right stream of a join: its shard ids repeat the left one's)."""
        return ExchangeWriter(
            self._client, self.layout, backoff=self._backoff, sleep=self._sleep, rng=self._rng,
            max_batch_records=self._max_records, max_batch_bytes=self._max_bytes,
        )  # fmt: skip

    async def put_batch(
        self, parts_by_partition: Sequence[Sequence[bytes]], source_shard: str
    ) -> list[list[str]]:
        """Put ``parts_by_partition[p]`` (parts in order) to partition ``p``'s shard, with
        partition key ``source_shard``; returns the sequence numbers, per partition and part.

        Returns when every part is acknowledged. Raises ValueError when the list does not
        have one entry per partition, :class:`ExchangeRecordTooLargeError` (nothing sent)
        for a part over 1 MiB, :class:`ExchangePutError` for a non-retryable refusal, and
        RuntimeError when another ``put_batch`` for ``source_shard`` is in flight.
        """
        self._check(parts_by_partition, source_shard)
        if source_shard in self._busy:
            raise RuntimeError(
                f"a put_batch for source shard {source_shard} is already in flight; await it "
                "first (chunks of one source shard must reach each exchange shard in order)"
            )
        self._busy.add(source_shard)
        try:
            return await self._put(parts_by_partition, source_shard)
        finally:
            self._busy.discard(source_shard)

    def _check(self, parts_by_partition: Sequence[Sequence[bytes]], source: str) -> None:
        if len(parts_by_partition) != self.layout.partitions:
            raise ValueError(
                f"put_batch got chunks for {len(parts_by_partition)} partitions, the exchange "
                f"{self.layout.stream} has {self.layout.partitions}: send one chunk list per "
                "partition (an empty chunk too: it carries the watermark)"
            )
        if not 1 <= len(source) <= 256:
            raise ValueError(f"source shard id {source!r} is not a valid partition key")
        key_bytes = len(source.encode("utf-8"))
        for p, parts in enumerate(parts_by_partition):
            for i, data in enumerate(parts):
                if len(data) + key_bytes > MAX_RECORD_BYTES:
                    raise ExchangeRecordTooLargeError(
                        len(data) + key_bytes, MAX_RECORD_BYTES, p, i, source
                    )

    def _next_call(self, parts: Sequence[Sequence[bytes]], next_part: list[int]) -> list[int]:
        """Partitions whose next part goes into the next call: one record per exchange
        shard, within the per-call limits."""
        chosen: list[int] = []
        shards: set[str] = set()
        size = 0
        for p, todo in enumerate(parts):
            if next_part[p] >= len(todo) or len(chosen) >= self._max_records:
                continue
            shard = self.layout.shard_for(p)
            record = len(todo[next_part[p]])
            if shard in shards or (chosen and size + record > self._max_bytes):
                continue
            chosen.append(p)
            shards.add(shard)
            size += record
        return chosen

    async def _put(self, parts: Sequence[Sequence[bytes]], source: str) -> list[list[str]]:
        stream = self.layout.stream
        key_bytes = len(source.encode("utf-8"))
        next_part = [0] * len(parts)
        sequence_numbers: list[list[str]] = [[] for _ in parts]
        call_state = RetryState(self._backoff, rng=self._rng)
        entry_state = RetryState(self._backoff, rng=self._rng)
        retried: set[int] = set()
        while chosen := self._next_call(parts, next_part):
            records: list[PutRecordsRequestEntryTypeDef] = [
                {
                    "Data": parts[p][next_part[p]],
                    "PartitionKey": source,
                    "ExplicitHashKey": self.layout.explicit_hash_key(p),
                }
                for p in chosen
            ]
            self._counts["entry_retries"] += sum(1 for p in chosen if p in retried)
            out = await call_until_done(
                functools.partial(self._client.put_records, StreamName=stream, Records=records),
                call_state,
                sleep=self._sleep,
                stream=stream,
                url=self._url,
            )
            self._counts["calls"] += 1
            retried.clear()
            failed_code: str | None = None
            for p, result in zip(chosen, out["Records"], strict=True):
                code = result.get("ErrorCode")
                if not code:
                    sequence_numbers[p].append(result["SequenceNumber"])
                    self._counts["records_sent"] += 1
                    self._counts["bytes_sent"] += len(parts[p][next_part[p]]) + key_bytes
                    next_part[p] += 1
                    continue
                if code not in RETRYABLE_ENTRY_CODES:
                    raise ExchangePutError(
                        stream, p, next_part[p], code, result.get("ErrorMessage", "")
                    )
                self._counts["throttles"] += is_throttling(code)
                retried.add(p)
                failed_code = code
            if failed_code is None:
                entry_state.succeeded()
            else:
                await self._sleep(entry_state.failed(failed_code))
        return sequence_numbers
