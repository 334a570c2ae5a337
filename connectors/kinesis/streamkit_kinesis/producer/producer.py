"""Async Kinesis producer: buffered ``put``, PutRecords batching, retry of failed entries only.

Delivery: at least once per record accepted by :meth:`KinesisProducer.put`, unless it is
reported in a :class:`PutRecordsFailedError` (bounded retries used up, or a non-retryable
per-record error; later records of its key are still sent).

Ordering: with ``preserve_key_order=True`` (default) records of one partition key are
written in the order they were put, across retries: one PutRecords call is in flight at a
time, it carries at most one record per key, and a failed record is re-queued at the
front, ahead of its key's later records (see :mod:`.batching`). With ``False`` a call
takes records in buffer order (fewer, fuller calls when there are few keys), and a retried
record may land after a later record of its key.

Aggregation (``aggregate=True``, off by default): user records are packed into KPL
aggregated records (:mod:`.aggregation`), so that small records are not capped at 1,000
per second per shard. Delivery stays at least once per user record, and per-key order
with ``preserve_key_order`` (a call then carries at most one Kinesis record per shard, so
at most one holding a given key). What changes: an aggregate is retried or given up on as
a whole (each of its user records is counted, and reported, on its own); and after a
reshard, an aggregate that landed on a shard whose range does not hold all its user
records is re-sent (re-aggregated with the refreshed shard map), so readers that keep such
records (streamkit's consumer does) see those user records twice; the KCL, which drops
them, sees them once, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from typing import TYPE_CHECKING

from streamkit_kinesis.client import KinesisApi, call, endpoint_url, kinesis_client
from streamkit_kinesis.errors import (
    FailedRecord,
    PutRecordsFailedError,
    RecordTooLargeError,
    error_code,
)
from streamkit_kinesis.producer.aggregation import (
    DEFAULT_AGGREGATE_BYTES,
    Aggregate,
    ShardMap,
    misrouted,
    per_user_record,
    take_aggregates,
)
from streamkit_kinesis.producer.batching import (
    MAX_BYTES_PER_CALL,
    MAX_RECORD_BYTES,
    MAX_RECORDS_PER_CALL,
    Entry,
    as_failure,
    settle,
    take_batch,
)
from streamkit_kinesis.producer.records import ProducerMetrics, record_size, validate
from streamkit_kinesis.retry import (
    THROTTLING_CODES,
    Backoff,
    Retrier,
    Rng,
    Sleep,
    is_throttling,
    is_transient,
)
from streamkit_kinesis.shards import list_shards_blocking

if TYPE_CHECKING:
    from collections.abc import Callable

    from mypy_boto3_kinesis.type_defs import (
        PutRecordsRequestEntryTypeDef,
        PutRecordsResultEntryTypeDef,
    )

    from streamkit.config import AwsEndpoint


__all__ = ["KinesisProducer", "ProducerMetrics", "record_size", "validate"]


class KinesisProducer:
    """Buffers records and writes them with PutRecords (<= 500 records, <= 5 MiB per call).

    A batch is sent when it is full, when its oldest record has waited ``linger_ms``, or on
    :meth:`flush`. Use ``async with`` (or :meth:`close`) to flush and stop. Errors of the
    background sender (unreachable endpoint, missing stream, records given up on) are
    raised by the next :meth:`put` or :meth:`flush`. ``aggregate=True`` packs records into
    KPL aggregated records of at most ``max_aggregate_bytes`` (see the module docstring).
    """

    def __init__(
        self,
        endpoint: AwsEndpoint | None,
        stream: str,
        *,
        client: KinesisApi | None = None,
        linger_ms: float = 50.0,
        max_attempts: int = 8,
        backoff: Backoff | None = None,
        preserve_key_order: bool = True,
        max_buffered_records: int = 100_000,
        max_batch_records: int = MAX_RECORDS_PER_CALL,
        max_batch_bytes: int = MAX_BYTES_PER_CALL,
        max_record_bytes: int = MAX_RECORD_BYTES,
        aggregate: bool = False,
        max_aggregate_bytes: int = DEFAULT_AGGREGATE_BYTES,
        sleep: Sleep = asyncio.sleep,
        rng: Rng = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if client is None:
            if endpoint is None:
                raise ValueError("KinesisProducer needs an endpoint or a client")
            client = kinesis_client(endpoint)
        self._client = client
        self._stream = stream
        self._url = (endpoint.url if endpoint else None) or endpoint_url(client)
        self._linger = linger_ms / 1000.0
        self._max_attempts = max_attempts
        self._retrier = Retrier(backoff or Backoff(base=0.1, cap=2.0), sleep, rng)
        self._one_per_key = preserve_key_order
        self._max_buffered = max_buffered_records
        self._max_records = min(max_batch_records, MAX_RECORDS_PER_CALL)
        self._max_bytes = min(max_batch_bytes, MAX_BYTES_PER_CALL)
        self._max_record = max_record_bytes
        self._clock = clock
        self._aggregate = aggregate
        self._max_aggregate = min(max_aggregate_bytes, max_record_bytes, MAX_RECORD_BYTES)
        self._shards: ShardMap | None = None
        self._refresh_failures = 0
        self._refresh_error: tuple[str, str] = ("", "")
        self._buffer: deque[Entry] = deque()
        self._buffered_bytes = 0
        self._inflight = False
        self._flushers = 0
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self._failures: list[FailedRecord] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._space = asyncio.Event()
        self._space.set()
        counters = "records_put records_sent bytes_sent calls retries throttles kinesis_records"
        self._counts = dict.fromkeys((*counters.split(), "shard_map_refreshes"), 0)
        self._records_failed = 0

    @property
    def stream(self) -> str:
        """Name of the stream written to."""
        return self._stream

    def metrics(self) -> ProducerMetrics:
        """A snapshot of the counters."""
        return ProducerMetrics(
            **self._counts, records_failed=self._records_failed, buffered=len(self._buffer)
        )

    async def put(
        self, data: bytes, partition_key: str, explicit_hash_key: str | None = None
    ) -> None:
        """Buffer one record; returns at once unless the buffer is full (back-pressure).

        Raises :class:`RecordTooLargeError` / :class:`InvalidRecordError` for a record
        Kinesis would reject (nothing is sent), and any pending sender error.
        """
        self._raise_pending()
        size = record_size(data, partition_key)
        if size > self._max_record:
            raise RecordTooLargeError(size, self._max_record, partition_key)
        validate(partition_key, explicit_hash_key)
        if self._closing:
            raise RuntimeError("KinesisProducer is closed")
        while len(self._buffer) >= self._max_buffered:
            self._space.clear()
            self._wake.set()
            await self._space.wait()
            self._raise_pending()
        task = self._task
        if task is None or task.done():
            self._ensure_started()
        buffer = self._buffer
        was_empty = not buffer
        buffer.append(Entry(data, partition_key, explicit_hash_key, size, self._clock()))
        self._buffered_bytes += size
        self._counts["records_put"] += 1
        if was_empty:
            self._idle.clear()
            self._wake.set()
        elif self._batch_ready():
            self._wake.set()

    async def flush(self) -> None:
        """Wait until every buffered record is written or given up on.

        Raises :class:`PutRecordsFailedError` listing the records given up on since the
        last report, or the sender's error.
        """
        if self._buffer or self._inflight:
            self._raise_pending()
            self._flushers += 1
            self._wake.set()
            try:
                await self._idle.wait()
            finally:
                self._flushers -= 1
        self._raise_pending()

    async def close(self) -> None:
        """Flush, then stop the background sender. Idempotent."""
        try:
            await self.flush()
        finally:
            self._closing = True
            self._wake.set()
            task, self._task = self._task, None
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)

    async def __aenter__(self) -> KinesisProducer:
        self._ensure_started()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _raise_pending(self) -> None:
        if self._error is not None:
            raise self._error
        if self._failures:
            failures, self._failures = self._failures, []
            raise PutRecordsFailedError(self._stream, failures)

    def _ensure_started(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def _batch_ready(self) -> bool:
        if len(self._buffer) >= self._max_buffered:
            return True
        if self._aggregate:
            return self._buffered_bytes >= self._call_bytes()
        return len(self._buffer) >= self._max_records or self._buffered_bytes >= self._max_bytes

    def _call_bytes(self) -> int:
        """User bytes that fill an aggregated call (one aggregate per shard with
        ``preserve_key_order``, else the call's byte limit)."""
        if not self._one_per_key:
            return self._max_bytes
        shards = len(self._shards.shard_ids) if self._shards is not None else 1
        return min(self._max_bytes, max(1, shards) * self._max_aggregate)

    async def _run(self) -> None:
        try:
            while await self._wait_for_batch():
                self._inflight = True
                try:
                    await (self._send_aggregated() if self._aggregate else self._send_next())
                finally:
                    self._inflight = False
                    self._after_call()
        except Exception as exc:  # stored, raised by the next put() / flush()
            self._error = exc
        finally:
            self._idle.set()
            self._space.set()

    async def _wait_for_batch(self) -> bool:
        """Wait until a call should be made; False when closing with nothing left."""
        while True:
            if not self._buffer:
                if self._closing:
                    return False
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._batch_ready() or self._flushers or self._closing:
                return True
            remaining = self._buffer[0].enqueued_at + self._linger - self._clock()
            if remaining <= 0:
                return True
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), remaining)

    def _after_call(self) -> None:
        if len(self._buffer) < self._max_buffered:
            self._space.set()
        if not self._buffer:
            self._idle.set()

    async def _send_next(self) -> None:
        """One PutRecords call for the next batch of records, each sent as itself."""
        batch = take_batch(
            self._buffer,
            max_records=self._max_records,
            max_bytes=self._max_bytes,
            one_per_key=self._one_per_key,
        )
        self._buffered_bytes -= sum(e.size for e in batch)
        records = [_entry(e.data, e.partition_key, e.explicit_hash_key) for e in batch]
        await self._send(batch, records)

    async def _send_aggregated(self) -> None:
        """One PutRecords call for the next user records, aggregated by shard."""
        if self._shards is None and not await self._try_refresh_shards(first=True):
            return  # ListShards throttled or unreachable: nothing taken, tried again
        assert self._shards is not None
        aggs = take_aggregates(
            self._buffer,
            self._shards,
            max_aggregate_bytes=self._max_aggregate,
            max_records=self._max_records,
            max_bytes=self._max_bytes,
            one_per_shard=self._one_per_key,
        )
        batch = [e for a in aggs for e in a.entries]
        self._buffered_bytes -= sum(e.size for e in batch)
        records = [_entry(a.data, a.partition_key, a.explicit_hash_key) for a in aggs]
        await self._send(batch, records, aggs)

    async def _refresh_shards(self) -> None:
        """Load the open shards' hash key ranges (ListShards)."""
        shards = await call(
            lambda: list_shards_blocking(self._client, self._stream, open_only=True),
            stream=self._stream,
            url=self._url,
        )
        self._shards = ShardMap.of(shards)
        self._counts["shard_map_refreshes"] += 1

    async def _try_refresh_shards(self, *, first: bool = False) -> bool:
        """:meth:`_refresh_shards`; False (the old map kept, after a backoff) when ListShards
        failed. The first load raises a non-transient error (misconfiguration: nothing has
        been taken from the buffer), and a transient one after ``max_attempts`` tries in a
        row, as a call would; a later refresh, made after a call already wrote its records,
        never raises, so that call's user records are still settled."""
        try:
            await self._refresh_shards()
        except Exception as exc:
            transient = is_throttling(exc) or is_transient(exc)
            if first and (not transient or self._refresh_failures + 1 >= self._max_attempts):
                self._refresh_failures = 0
                raise
            self._refresh_failures += 1
            self._refresh_error = (error_code(exc) or type(exc).__name__, str(exc))
            await self._retrier.wait(min(self._refresh_failures, self._max_attempts) - 1)
            return False
        self._refresh_failures = 0
        return True

    async def _send(
        self,
        batch: list[Entry],
        records: list[PutRecordsRequestEntryTypeDef],
        aggs: list[Aggregate] | None = None,
    ) -> None:
        """One PutRecords call of ``records`` carrying the user records ``batch`` (one
        each, or as packed in ``aggs``); failed entries go back to the buffer's front."""
        self._counts["calls"] += 1
        self._counts["retries"] += sum(1 for e in batch if e.attempts)
        try:
            out = await call(
                lambda: self._client.put_records(StreamName=self._stream, Records=records),
                stream=self._stream,
                url=self._url,
            )
        except Exception as exc:
            if not (is_throttling(exc) or is_transient(exc)):
                self._requeue(batch)
                raise
            await self._call_failed(batch, exc)
            return
        results = out["Records"]
        self._counts["kinesis_records"] += sum(1 for r in results if not r.get("ErrorCode"))
        if aggs is not None:
            batch, results = await self._per_user_record(aggs, results)
        result = settle(
            batch,
            results,
            max_attempts=self._max_attempts,
            throttling_codes=THROTTLING_CODES,
        )
        self._counts["records_sent"] += len(result.succeeded)
        self._counts["bytes_sent"] += sum(e.size for e in result.succeeded)
        self._counts["throttles"] += result.throttled
        self._give_up(result.failed)
        if result.retry:
            self._requeue(list(result.retry))
            await self._retrier.wait(max(e.attempts for e in result.retry) - 1)

    async def _per_user_record(
        self, aggs: list[Aggregate], results: list[PutRecordsResultEntryTypeDef]
    ) -> tuple[list[Entry], list[PutRecordsResultEntryTypeDef]]:
        """Each user record with its aggregate's result, minus the user records of
        aggregates that landed on a shard not holding them all (stale shard map): those
        count an attempt and are re-queued at the front, to be re-aggregated with the
        refreshed map (given up on, as written but misrouted, once attempts run out)."""
        wrong = misrouted(aggs, results)
        if wrong:
            reason = "aggregate written to a shard not holding it"
            if await self._try_refresh_shards():
                assert self._shards is not None
                shards = self._shards
                wrong = [i for i in wrong if not shards.holds(
                    results[i]["ShardId"], [e.hash_key for e in aggs[i].entries])]  # fmt: skip
            else:  # the old map kept: every misrouted aggregate is re-sent (attempts bounded)
                reason += f"; the shard map could not be refreshed: {self._refresh_error}"
            resend = [e for i in wrong for e in aggs[i].entries]
            for e in resend:
                e.attempts += 1
                e.last_error = ("WrongShard", reason)
            self._give_up([as_failure(e) for e in resend if e.attempts >= self._max_attempts])
            self._requeue([e for e in resend if e.attempts < self._max_attempts])
        return per_user_record(aggs, results, set(wrong))

    async def _call_failed(self, batch: list[Entry], exc: Exception) -> None:
        """A whole call was throttled or hit a transient error: every entry failed once."""
        code = error_code(exc) or type(exc).__name__
        self._counts["throttles"] += is_throttling(exc)
        retry: list[Entry] = []
        for e in batch:
            e.attempts += 1
            e.last_error = (code, str(exc))
            if e.attempts < self._max_attempts:
                retry.append(e)
            else:
                self._give_up([as_failure(e)])
        self._requeue(retry)
        if retry:
            await self._retrier.wait(max(e.attempts for e in retry) - 1)

    def _requeue(self, entries: list[Entry]) -> None:
        self._buffer.extendleft(reversed(entries))
        self._buffered_bytes += sum(e.size for e in entries)

    def _give_up(self, failed: tuple[FailedRecord, ...] | list[FailedRecord]) -> None:
        self._failures.extend(failed)
        self._records_failed += len(failed)


def _entry(
    data: bytes, partition_key: str, explicit_hash_key: str | None
) -> PutRecordsRequestEntryTypeDef:
    """One PutRecords request entry (a user record, or an aggregate of them)."""
    entry: PutRecordsRequestEntryTypeDef = {"Data": data, "PartitionKey": partition_key}
    if explicit_hash_key is not None:
        entry["ExplicitHashKey"] = explicit_hash_key
    return entry
