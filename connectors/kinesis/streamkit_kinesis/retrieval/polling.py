"""Polling retrieval: shard iterator + GetRecords loop (no leases here).

:class:`ShardReader` is the polling :class:`~.fetcher.RecordFetcher`;
:class:`PollingFetchers` builds one per shard (the consumer's default factory).
GetRecords answers are taken raw and parsed into Arrow columns (:mod:`.columnar`; a client
without the hook, e.g. a test wrapper, goes through botocore's parse), then handed on as
columns (:class:`~.record_columns.RecordColumns`: record objects only when read).
Guarantees of :class:`ShardReader`, beyond the fetcher contract:

- Records come in shard order, each once: after an expired iterator the reader re-acquires
  an iterator AFTER the last record it returned (or at its start position when it returned
  none), so nothing is lost or repeated; records an answer repeats (kinesis-mock, see
  ``ColumnarRecords.after``) are dropped. A LATEST start that expires before any record
  came is re-acquired AT_TIMESTAMP of the moment the reader first asked for LATEST, so
  records put since are not lost (a server with whole-second timestamps, like
  kinesis-mock, may then also return records put up to a second before that moment).
- Outages never end a reader: with ``retry_forever`` (the default) every retryable error
  (:func:`~streamkit_kinesis.retry.is_retryable`: unreachable endpoint, cut connection,
  5xx, throttling) of GetShardIterator, GetRecords and ListShards is retried on the same
  position for ever, after a capped, fully jittered exponential delay (reset after a
  success), and expired iterators are re-acquired for ever (backing off from the second
  in a row). :meth:`ShardReader.health` says "backing off" meanwhile, with the streak's
  length and last error. Only non-retryable errors end it, typed: a shard that is gone
  (:class:`~streamkit_kinesis.errors.ShardNotFoundError`), a stream that is gone,
  rejected credentials, an invalid request. ``retry_forever=False`` (one-shot tools)
  gives up on an unreachable endpoint after about a second instead.
- Polling cost as KCL's: after a read that reached the tip (``MillisBehindLatest`` 0 or
  absent, and fewer records than ``limit``; empty or not), the next GetRecords of the
  shard waits until ``idle_time`` (default 1.5 s, KCL 2.x/3.x's
  ``idleMillisBetweenCalls``) has passed since that read returned; time the records spent
  being processed counts toward it. A read that is behind (``MillisBehindLatest`` > 0, or
  a full ``limit``) is followed at once, so a backlog is read at full speed (KCL spaces
  every call by 1.5 s, backlog or not). Kinesis allows 5 reads/s per shard shared by
  every consumer: at the defaults a caught-up reader makes at most 1 / 1.5 s.
- SHARD_END is detected by any of: a null ``NextShardIterator`` (AWS, LocalStack,
  kinesalite); the last record being the closed shard's ``ending_sequence_number``; an
  empty, caught-up read (``MillisBehindLatest`` 0 or absent) of a closed shard. The last
  two make it work on moto, which never returns a null iterator. An ending sequence number
  below the shard's starting one (kinesis-mock's placeholder) is not trusted. While a
  shard believed open reads idle, its description is refreshed at most every
  ``shard_refresh_interval`` seconds, so a shard closed after the reader started is
  noticed too (off by default: AWS, LocalStack and kinesalite end a closed shard with a
  null iterator, and KCL makes no such call; only moto needs it).
- Progress past repeats: kinesis-mock answers every read meant to start after a shard's
  first record numbered like the shard's start (both put in the same second) with that
  record again, and its next iterator is the same position, so ``Limit`` 1 would return
  nothing for ever. An answer made only of repeats and as long as the ``Limit`` asked is
  followed at once by a read of the answer's next iterator with a ``Limit`` larger by the
  number of repeats (up to 10,000), which then holds the records past them; once a
  record comes back the reader asks for ``limit`` again. A batch then holds at most
  ``limit`` records when the server repeats no more than it did. AWS never repeats:
  there the ``Limit`` asked is always ``limit``.
- The tip, for ``available_now``: :attr:`ShardReader.caught_up` is the last read that
  came back empty and caught up (when it was sent, on ``time.monotonic``, and the last
  record returned before it); an answer made only of repeats counts as empty only when it
  holds fewer records than the ``Limit`` asked (else records may follow them);
  :meth:`ShardReader.hurry` makes the next read skip (or cut short) the idle wait, so a
  caller waiting for such a read gets it at once.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, TypeVar

from streamkit_kinesis.client import KinesisApi, call, call_until_done, endpoint_url
from streamkit_kinesis.errors import KinesisError, ShardNotFoundError, ThrottledError, error_code
from streamkit_kinesis.retrieval.columnar import ColumnarRecords, get_records_columnar
from streamkit_kinesis.retrieval.fetcher import ReaderMetrics
from streamkit_kinesis.retrieval.iterators import IteratorStart
from streamkit_kinesis.retrieval.record_columns import RecordColumns
from streamkit_kinesis.retry import (
    OUTAGE_BACKOFF,
    Backoff,
    Health,
    Retrier,
    RetryState,
    Rng,
    Sleep,
    is_throttling,
    is_transient,
)
from streamkit_kinesis.shards import list_shards_blocking
from streamkit_kinesis.types import (
    SHARD_END,
    ExtendedSequenceNumber,
    KinesisRecord,
    RecordBatch,
    ShardInfo,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from mypy_boto3_kinesis.type_defs import GetShardIteratorInputTypeDef

    from streamkit_kinesis.leases.metrics import CallTimings

T = TypeVar("T")

MAX_LIMIT = 10_000
"""The largest ``Limit`` GetRecords accepts."""
MAX_CONSECUTIVE_EXPIRED = 3
MAX_TRANSIENT_ATTEMPTS = 10
IDLE_TIME = 1.5
"""KCL 2.x/3.x ``SimpleRecordsFetcherFactory.idleMillisBetweenCalls`` (1500 ms)."""


@dataclass(frozen=True)
class CaughtUp:
    """A GetRecords that came back empty and caught up (``MillisBehindLatest`` 0 or absent)."""

    sent: float
    """``time.monotonic()`` just before the call was made (the call was sent after it)."""
    last_sequence: str | None
    """The last record the reader had returned before it (None: none)."""


class ShardReader:
    """Reads one shard from a start position to SHARD_END (or forever, if it stays open);
    a :class:`~.fetcher.RecordFetcher`.

    ``start`` is a checkpoint (:class:`ExtendedSequenceNumber`: a sequence number resumes
    AFTER it; TRIM_HORIZON / LATEST sentinels; SHARD_END means already finished), a
    ``datetime`` (AT_TIMESTAMP) or an :class:`IteratorStart` (e.g. AT_SEQUENCE_NUMBER).
    """

    def __init__(
        self,
        client: KinesisApi,
        stream: str,
        shard: ShardInfo,
        start: ExtendedSequenceNumber | datetime | IteratorStart,
        *,
        limit: int = 10_000,
        idle_time: float = IDLE_TIME,
        backoff: Backoff | None = None,
        shard_refresh_interval: float | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: Rng = random.random,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        retry_forever: bool = True,
        timings: CallTimings | None = None,
    ) -> None:
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be in [1, 10000], got {limit}")
        self._client = client
        self._stream = stream
        self._shard = shard
        self._timings = timings
        self._url = endpoint_url(client)
        self._limit = limit
        self._ask = limit  # the next GetRecords' Limit: larger after an answer of repeats
        self._idle_time = idle_time
        self._retrier = Retrier(backoff or OUTAGE_BACKOFF, sleep, rng)
        self._forever = retry_forever and self._retrier.backoff.max_attempts is None
        self._retry = RetryState(self._retrier.backoff, rng=rng, clock=clock)
        self._sleep = sleep
        self._refresh_interval = shard_refresh_interval
        self._clock = clock
        self._wall_clock = wall_clock
        self._ended = isinstance(start, ExtendedSequenceNumber) and start == SHARD_END
        self._resume = None if self._ended else IteratorStart.of(start)
        self._iterator: str | None = None
        self._idle_pending = False
        self._last_read = float("-inf")
        self._last_refresh = float("-inf")
        self._last_sequence: str | None = None
        self._children: tuple[str, ...] = ()
        self._child_shards: tuple[ShardInfo, ...] = ()
        self._records = self._bytes = self._calls = self._throttles = self._recoveries = 0
        self._behind: int | None = None
        self._caught_up: CaughtUp | None = None
        self._wake = asyncio.Event()

    @property
    def caught_up(self) -> CaughtUp | None:
        """The latest read that came back empty and caught up (None: none yet). Every
        record in the shard when that read was sent is at or before its ``last_sequence``."""
        return self._caught_up

    def hurry(self) -> None:
        """Make the next read skip (or cut short) the idle wait (see the module docstring)."""
        self._wake.set()

    @property
    def behind(self) -> bool:
        """Right after :meth:`next_batch` returned a read's batch: whether that read was
        behind the tip (a lag reported, or a full ``limit``), so the next read follows at
        once, without the idle wait. (True before the first read; not meaningful after
        SHARD_END or while a call is in progress.)"""
        return not self._idle_pending

    @property
    def shard(self) -> ShardInfo:
        """The shard, as last described (refreshed when it was found closed)."""
        return self._shard

    @property
    def ended(self) -> bool:
        """True once SHARD_END was reached: every record of the shard was returned."""
        return self._ended

    @property
    def last_sequence_number(self) -> str | None:
        """Sequence number of the last record returned, or None if none yet."""
        return self._last_sequence

    def metrics(self) -> ReaderMetrics:
        """A snapshot of the counters."""
        return ReaderMetrics(
            self._shard.shard_id,
            self._records,
            self._bytes,
            self._calls,
            self._throttles,
            self._recoveries,
            self._behind,
            self._retry.health(),
        )

    def health(self) -> Health:
        """ "reading", or "backing off" with the failures in a row and the last error."""
        return self._retry.health()

    async def close(self) -> None:
        """Forget the shard iterator (polling holds no connection of its own)."""
        self._iterator = None

    def __aiter__(self) -> AsyncIterator[RecordBatch]:
        """Non-empty batches in shard order, then one ``shard_ended`` batch (if it ends)."""
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[RecordBatch]:
        while not self._ended:
            batch = await self.next_batch()
            if batch.records or batch.shard_ended:
                yield batch

    async def next_batch(self) -> RecordBatch:
        """The next batch of records (possibly empty), after one successful GetRecords.

        If the previous call reached the tip, first waits until ``idle_time`` has passed
        since it returned (on the injected ``clock``; see the module docstring). Once
        the shard has ended this returns an empty ``shard_ended`` batch without calling.
        Cancellation-safe: the position only moves when a batch is returned, so after a
        cancelled call the next one reads the same records again (nothing is skipped).
        """
        if self._ended:
            return self._ended_batch(())
        if self._idle_pending:
            self._idle_pending = False
            delay = self._idle_time - (self._clock() - self._last_read)
            if delay > 0 and not self._wake.is_set():
                await self._idle(delay)
        self._wake.clear()
        if self._iterator is None:
            if self._starts_past_end():
                return self._finish(())
            self._iterator = await self._acquire()
        sent = time.monotonic()
        out = await self._get_records()
        return await self._handle(out, sent)

    async def _idle(self, delay: float) -> None:
        """Sleep ``delay`` s, unless :meth:`hurry` is called meanwhile."""
        sleep = asyncio.ensure_future(self._sleep(delay))
        wake = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait([sleep, wake], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleep, wake):
                task.cancel()
            if sleep.done() and not sleep.cancelled():
                sleep.result()

    async def _handle(self, out: ColumnarRecords, sent: float) -> RecordBatch:
        asked, full = self._ask, len(out) >= self._ask
        records = RecordColumns.from_answer(out.after(self._delivered_up_to()))
        if records:
            self._ask = self._limit
        elif full:  # only repeats: records past them need a larger Limit (kinesis-mock)
            self._ask = min(MAX_LIMIT, asked + len(out))
        self._calls += 1
        self._last_read = self._clock()
        self._behind = out.millis_behind_latest
        if records:
            self._records += len(records)
            self._bytes += out.payload_bytes()
            self._last_sequence = records.sequence_number(-1)
            self._resume = IteratorStart.after_sequence(self._last_sequence)
        self._children = out.child_shard_ids
        self._child_shards = out.child_shards
        self._iterator = out.next_iterator or None
        caught_up = not records and not self._behind and not full
        if caught_up:
            self._caught_up = CaughtUp(sent, self._last_sequence)
        if caught_up and not self._shard.is_closed:
            await self._maybe_refresh()
        if self._iterator is None or self._reached_end(records, caught_up):
            return self._finish(records)
        self._idle_pending = not self._behind and not full
        return RecordBatch(self._shard.shard_id, records, self._behind)

    def _delivered_up_to(self) -> str | None:
        """The sequence number every record returned so far is at or before (None: none
        known); records an answer repeats up to it are dropped (see ``ColumnarRecords.after``)."""
        start = self._resume
        if start is not None and start.iterator_type == "AFTER_SEQUENCE_NUMBER":
            return start.sequence_number
        return self._last_sequence

    def _reached_end(self, records: RecordColumns, caught_up: bool) -> bool:
        """End of a closed shard without a null iterator (moto): the last record IS the
        ending sequence number, or a read came back empty and caught up."""
        if not self._shard.is_closed:
            return False
        if records:
            end = self._usable_ending_sequence()
            return end is not None and int(records.sequence_number(-1)) == end
        return caught_up

    def _starts_past_end(self) -> bool:
        """True when resuming AFTER the closed shard's ending sequence number."""
        end, start = self._usable_ending_sequence(), self._resume
        if end is None or start is None or start.iterator_type != "AFTER_SEQUENCE_NUMBER":
            return False
        return start.sequence_number is not None and int(start.sequence_number) == end

    def _usable_ending_sequence(self) -> int | None:
        """The ending sequence number, when it is a real one.

        kinesis-mock (LocalStack) reports 2**63 - 1 for every closed shard, below the
        shard's own starting sequence number: such a value says nothing about where the
        records end, so it is ignored (those servers return a null iterator instead).
        """
        end = self._shard.ending_sequence_number
        if end is None or int(end) < int(self._shard.starting_sequence_number):
            return None
        return int(end)

    def _finish(self, records: Sequence[KinesisRecord]) -> RecordBatch:
        self._ended = True
        self._iterator = None
        return self._ended_batch(records)

    def _ended_batch(self, records: Sequence[KinesisRecord]) -> RecordBatch:
        return RecordBatch(
            self._shard.shard_id,
            records,
            self._behind,
            shard_ended=True,
            child_shard_ids=self._children,
            child_shards=self._child_shards,
        )

    async def _maybe_refresh(self) -> None:
        """Re-describe a shard believed open (at most every ``shard_refresh_interval`` s)."""
        interval = self._refresh_interval
        now = self._clock()
        if interval is None or now - self._last_refresh < interval:
            return
        self._last_refresh = now
        shards = await self._retrying(
            "ListShards", lambda: list_shards_blocking(self._client, self._stream), shard=False
        )
        for info in shards:
            if info.shard_id == self._shard.shard_id:
                self._shard = info

    async def _acquire(self) -> str:
        """A fresh iterator at the resume position (throttling retried)."""
        start = self._resume
        assert start is not None
        if start.iterator_type == "LATEST":
            # If it expires before any record came, AT_TIMESTAMP(now) loses nothing.
            self._resume = IteratorStart.at_timestamp(self._wall_clock())
        request: GetShardIteratorInputTypeDef = {
            "StreamName": self._stream,
            "ShardId": self._shard.shard_id,
            "ShardIteratorType": start.iterator_type,
        }
        if start.sequence_number is not None:
            request["StartingSequenceNumber"] = start.sequence_number
        if start.timestamp is not None:
            request["Timestamp"] = start.timestamp
        out = await self._retrying(
            "GetShardIterator", lambda: self._client.get_shard_iterator(**request)
        )
        return out["ShardIterator"]

    async def _get_records(self) -> ColumnarRecords:
        expired = 0
        while True:
            iterator = self._iterator
            assert iterator is not None
            try:
                return await self._retrying(
                    "GetRecords",
                    partial(get_records_columnar, self._client, iterator, self._ask),
                )
            except Exception as exc:
                if error_code(exc) != "ExpiredIteratorException":
                    raise
                expired += 1
                self._recoveries += 1
                if expired > 1:  # fresh iterators keep expiring: back off, then try again
                    if not self._forever and expired > MAX_CONSECUTIVE_EXPIRED:
                        raise KinesisError(f"shard {self._shard.shard_id}: {_EXPIRING}") from exc
                    await self._sleep(self._retry.failed(f"ExpiredIteratorException: {_EXPIRING}"))
                self._iterator = await self._acquire()

    async def _retrying(self, operation: str, fn: Callable[[], T], *, shard: bool = True) -> T:
        """``fn`` with retryable errors retried: for ever (``retry_forever``, recorded in
        :meth:`health`), else throttling per the backoff and transient errors a few times.
        ``shard``: a missing resource is this shard (else the stream)."""
        shard_id = self._shard.shard_id if shard else None
        fn = self._timed(operation, fn)
        if self._forever:
            try:
                return await call_until_done(
                    fn, self._retry, sleep=self._sleep, stream=self._stream, url=self._url,
                    shard_id=shard_id, on_retry=self._count_throttle,
                )  # fmt: skip
            except ShardNotFoundError:
                await self._check_stream()  # the whole stream gone is StreamNotFoundError
                raise
        attempt = 0
        while True:
            try:
                return await call(fn, stream=self._stream, url=self._url)
            except Exception as exc:
                throttled, transient = is_throttling(exc), is_transient(exc)
                if not (throttled or transient):
                    raise
                attempt += 1
                self._throttles += throttled
                if self._retrier.backoff.exhausted(attempt) or (
                    transient and attempt >= MAX_TRANSIENT_ATTEMPTS
                ):
                    raise ThrottledError(operation, attempt, error_code(exc) or "?") from exc
                await self._retrier.wait(attempt - 1)

    def _timed(self, operation: str, fn: Callable[[], T]) -> Callable[[], T]:
        """``fn`` timed per attempt as the KCL's ``KinesisDataFetcher.<call>`` (when the
        consumer's timings are on)."""
        timings, name = self._timings, KCL_FETCHER_CALLS.get(operation)
        if timings is None or name is None or not timings.enabled:
            return fn
        shard_id = self._shard.shard_id

        def timed() -> T:
            with timings.timed("ProcessTask", name, shard_id):
                return fn()

        return timed

    async def _check_stream(self) -> None:
        """Raise StreamNotFoundError if the stream itself is gone (retrying outages)."""
        await call_until_done(
            lambda: self._client.describe_stream_summary(StreamName=self._stream),
            self._retry, sleep=self._sleep, stream=self._stream, url=self._url,
        )  # fmt: skip

    def _count_throttle(self, exc: BaseException) -> None:
        self._throttles += is_throttling(exc)


KCL_FETCHER_CALLS = {
    "GetRecords": "KinesisDataFetcher.getRecords",
    "GetShardIterator": "KinesisDataFetcher.getShardIterator",
}
"""The KCL's metric prefix of each timed call (under ``Operation=ProcessTask, ShardId``)."""

_EXPIRING = (
    "fresh shard iterators keep expiring; check the clock of this machine against the endpoint's"
)


@dataclass(frozen=True)
class PollingFetchers:
    """A :class:`~.fetcher.FetcherFactory`: one :class:`ShardReader` per shard, all with
    these settings (the consumer's default, built from its ``ConsumerConfig``)."""

    client: KinesisApi
    """The blocking Kinesis client every reader calls."""
    stream: str
    """The stream the shards belong to."""
    limit: int = 10_000
    """``Limit`` of each GetRecords call."""
    idle_time: float = IDLE_TIME
    """Least time between a read that reached the tip and the next one."""
    shard_refresh_interval: float | None = None
    """How often an idle reader re-describes its shard (None: never)."""
    clock: Callable[[], float] = time.monotonic
    """Monotonic clock for the idle wait and the refresh interval."""
    timings: CallTimings | None = None
    """Where each GetRecords / GetShardIterator attempt is timed (the consumer's)."""

    def __call__(self, shard: ShardInfo, start: ExtendedSequenceNumber | datetime) -> ShardReader:
        """A reader of ``shard`` from ``start`` (see :class:`ShardReader`)."""
        return ShardReader(
            self.client,
            self.stream,
            shard,
            start,
            limit=self.limit,
            idle_time=self.idle_time,
            shard_refresh_interval=self.shard_refresh_interval,
            clock=self.clock,
            timings=self.timings,
        )
