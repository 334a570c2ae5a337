"""Enhanced Fan-Out retrieval: SubscribeToShard event streams behind the fetcher contract.

:class:`FanoutReader` is a :class:`~.fetcher.RecordFetcher` of one shard; it subscribes
through the application's registered stream consumer (:class:`~.registration.StreamConsumer`)
and reads the pushed events (:class:`~.subscription.Subscription`: a thread per
subscription, payloads parsed into Arrow columns, then the same :class:`KinesisRecord`
objects as polling). :class:`FanoutFetchers` is the consumer's factory for
``retrieval="fanout"`` (KPL de-aggregation as with polling). Guarantees, beyond the contract:

- Position: the reader resumes from the ``ContinuationSequenceNumber`` of the last event it
  RETURNED (``AFTER_SEQUENCE_NUMBER``), never from where the subscription started, so a
  re-subscription loses and repeats nothing; events read ahead but not returned are
  dropped with their subscription. A continuation below the shard's start or the last
  record returned (LocalStack reports ``"0"`` for empty events of a TRIM_HORIZON,
  AT_TIMESTAMP or LATEST subscription) is not trusted: the last record returned is used.
  A LATEST start is pinned AT_TIMESTAMP of the moment of the first subscription, so a
  re-subscription before any record came loses none. Records an event repeats (at or
  before the last record returned: LocalStack re-subscribed after a shard's first record
  numbered like the shard's start) are dropped.
- Expiry: AWS ends a subscription after 5 minutes; the reader re-subscribes itself after
  ``lifetime`` (default 290 s, checked as each event arrives) and after any end.
- SHARD_END: from an event with ``ChildShards`` (AWS's last event of a closed shard). A
  server that ends a closed shard's subscription without them (LocalStack 4.9.2: its
  event generator sends ``ChildShards=None`` and then breaks the stream) is covered by a
  probe: after a subscription's stream ended or broke, one GetShardIterator + GetRecords
  (``Limit`` 1) at the resume position (:class:`~.polling.ShardReader`) either finds the
  end (null ``NextShardIterator``, with ``ChildShards``), returns a record (handed on, in
  order), or finds nothing; then the reader subscribes again.
- Faults: a dropped or cut-short stream, ``ResourceInUseException`` while re-subscribing,
  throttling (``LimitExceededException``: SubscribeToShard allows 1 call/s per shard and
  consumer), 5xx and unreachable endpoints are retried for ever with the project's backoff
  (:data:`~streamkit_kinesis.retry.OUTAGE_BACKOFF`, reported by :meth:`FanoutReader.health`).
  A shard that is gone raises :class:`~streamkit_kinesis.errors.ShardNotFoundError`, a
  stream consumer that is gone :class:`~streamkit_kinesis.errors.KinesisError`, other
  non-retryable errors their typed error.
- ``MillisBehindLatest`` is the event's (LocalStack always reports 0).
- The tip, for ``available_now`` (:mod:`streamkit_kinesis.source.tip_watch`): after
  :meth:`FanoutReader.hurry`, while the last event returned was caught up
  (``MillisBehindLatest`` 0 or absent; also before the first event), the reader sends one
  tip probe: GetShardIterator + GetRecords (``Limit`` 1) at the resume position, at once
  (it stops waiting for the next event) and at most once per event returned. A probe that
  comes back empty and caught up sets :attr:`FanoutReader.caught_up` (every record in the
  shard when it was sent is at or before the last record returned: the resume position
  is the continuation of the last event returned, which every earlier record is at or
  before) and returns an empty batch so the watcher sees it; a probe that finds a record
  discards it (the subscription delivers it). Cost: at most one record read twice per
  probe; no probe unless hurried.
- A start AT a checkpoint's record ``S`` (the fan-out factory's, with the checkpoint as
  ``floor``) has nothing past it only if every user record of ``S`` is at or before the
  floor: the probe reads AT ``S`` and reads on while every de-aggregated user record a
  read returns is at or before the floor; only an empty read can find the tip; a record
  with a user record past the floor (a checkpoint inside an aggregate with user records
  unread, or ``S`` trimmed) is something past. Without a floor, an AT start's whole
  record counts as had and the probe reads after it. Cost: one more GetRecords per probe
  until the first event. A server whose AT starts before ``S`` (kinesis-mock 0.4.13, when
  a shard's first record is numbered like the shard's start) costs a read per earlier
  record; one that then repeats a record (the same kinesis-mock case) gives an answer of
  only a repeat, which is not the tip (:class:`~.polling.ShardReader`), so that probe
  finds nothing and the next caught-up event allows another.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from streamkit_kinesis.client import endpoint_url
from streamkit_kinesis.errors import KinesisError, classify, error_message, http_status
from streamkit_kinesis.retrieval.fetcher import ReaderMetrics
from streamkit_kinesis.retrieval.iterators import IteratorStart
from streamkit_kinesis.retrieval.polling import CaughtUp, ShardReader
from streamkit_kinesis.retrieval.record_columns import RecordColumns
from streamkit_kinesis.retrieval.registration import StreamConsumer, code_of, fanout_api
from streamkit_kinesis.retrieval.subscription import Item, StreamBroken, Subscription
from streamkit_kinesis.retry import (
    OUTAGE_BACKOFF,
    Backoff,
    Health,
    RetryState,
    Rng,
    Sleep,
    is_retryable,
    is_throttling,
    is_transient,
)
from streamkit_kinesis.types import SHARD_END, ExtendedSequenceNumber, RecordBatch

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from streamkit_kinesis.client import KinesisApi
    from streamkit_kinesis.kpl import DeaggregatingFetcher
    from streamkit_kinesis.retrieval.columnar import ColumnarRecords
    from streamkit_kinesis.types import KinesisRecord, ShardInfo

SUBSCRIPTION_LIFETIME = 290.0
"""Re-subscribe after this long: 10 s before AWS ends a subscription (5 minutes)."""
RETRY_CODES = frozenset({"ResourceInUseException"})
"""Beyond :func:`~streamkit_kinesis.retry.is_retryable`: a previous subscription of the
shard still open, or the consumer or stream being updated; both pass."""


class FanoutReader:
    """Reads one shard through SubscribeToShard (see the module docstring).

    ``start`` is a checkpoint (a sequence number resumes AFTER it; TRIM_HORIZON / LATEST;
    SHARD_END: already finished), a ``datetime`` (AT_TIMESTAMP) or an
    :class:`IteratorStart`. ``floor``: with a start AT a checkpoint's record, that
    checkpoint (possibly inside a KPL aggregate; the tip probe honours it).
    """

    def __init__(
        self,
        client: KinesisApi,
        stream: str,
        shard: ShardInfo,
        start: ExtendedSequenceNumber | datetime | IteratorStart,
        consumer: StreamConsumer,
        *,
        lifetime: float = SUBSCRIPTION_LIFETIME,
        backoff: Backoff | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: Rng = random.random,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        floor: ExtendedSequenceNumber | None = None,
    ) -> None:
        if lifetime <= 0:
            raise ValueError(f"lifetime must be > 0, got {lifetime}")
        self._floor = floor
        """The checkpoint an AT_SEQUENCE_NUMBER start resumes after (see the docstring)."""
        self._client, self._api = client, fanout_api(client)
        self._stream, self._shard, self._consumer = stream, shard, consumer
        self._lifetime, self._backoff = lifetime, backoff or OUTAGE_BACKOFF
        self._sleep, self._rng, self._clock, self._wall_clock = sleep, rng, clock, wall_clock
        self._retry = RetryState(self._backoff, rng=rng, clock=clock)
        self._url = endpoint_url(client)
        self._ended = isinstance(start, ExtendedSequenceNumber) and start == SHARD_END
        self._resume = None if self._ended else IteratorStart.of(start)
        self._sub: Subscription | None = None
        self._probe_due = False
        self._prober: ShardReader | None = None
        self._last_sequence: str | None = None
        self._children: tuple[str, ...] = ()
        self._child_shards: tuple[ShardInfo, ...] = ()
        self._behind: int | None = None
        self._records = self._bytes = self._events = self._throttles = 0
        self._caught_up: CaughtUp | None = None
        self._hurried = asyncio.Event()
        self._may_probe = True
        """The last event returned (if any) was caught up and no tip probe followed it."""
        self._held: Item | None = None
        """An item taken off the subscription's queue, not returned yet (cancellation)."""
        self.tip_probes = 0
        """Tip probes (GetRecords) sent after :meth:`hurry`."""
        self.subscriptions = 0
        """SubscribeToShard calls made."""
        self.expirations = 0
        """Subscriptions replaced because ``lifetime`` ran out."""
        self.probes = 0
        """End probes (GetRecords) after a subscription ended or broke."""

    @property
    def ended(self) -> bool:
        """True once SHARD_END was reached."""
        return self._ended

    @property
    def caught_up(self) -> CaughtUp | None:
        """The latest tip probe that came back empty and caught up (None: none yet); every
        record in the shard when it was sent is at or before its ``last_sequence``."""
        return self._caught_up

    def hurry(self) -> None:
        """Send a tip probe as soon as the reader is caught up (see the module docstring)."""
        self._hurried.set()

    @property
    def resume_position(self) -> IteratorStart | None:
        """Where the next subscription starts (None once ended)."""
        return self._resume

    def metrics(self) -> ReaderMetrics:
        """Counters; ``get_records_calls`` counts events received."""
        return ReaderMetrics(
            self._shard.shard_id, self._records, self._bytes, self._events, self._throttles,
            0, self._behind, self.health(),
        )  # fmt: skip

    def health(self) -> Health:
        """ "reading", or "backing off" with the failures in a row and the last error (of
        the subscription, or of the end probe while it runs)."""
        own, prober = self._retry.health(), self._prober
        if prober is None:
            return own
        probing = prober.health()
        if not probing.consecutive_errors:
            return own
        errors = own.consecutive_errors + probing.consecutive_errors
        since = own.backing_off_since or probing.backing_off_since
        return replace(probing, consecutive_errors=errors, backing_off_since=since)

    async def close(self) -> None:
        """Close the subscription (its thread ends with the connection)."""
        self._drop_subscription()

    async def next_batch(self) -> RecordBatch:
        """The next event's records (possibly none: a lag update), in shard order.

        Cancellation-safe: an event is taken off the subscription's queue and returned
        without an await in between, so a cancelled call loses nothing.
        """
        while not self._ended:
            if self._probe_due:
                probed = await self._probe()
                self._probe_due = False
                if probed is not None:
                    return probed
                continue
            if self._hurried.is_set() and self._may_probe:
                probed = await self._probe_tip()
                if probed is not None:
                    return probed
                continue
            if self._sub is None:
                await self._subscribe()
            item = await self._next_item()
            if item is None:  # hurried while waiting
                continue
            if item.kind == "event":
                assert item.event is not None
                self._retry.succeeded()
                return self._handle(item.event)
            self._drop_subscription()
            if item.kind == "expired":
                self.expirations += 1
                continue
            if item.kind == "error":
                assert item.error is not None
                await self._failed(item.error)
            # a stream that ended or broke may be a closed shard's end (no ChildShards)
            self._probe_due = item.kind == "end" or isinstance(item.error, StreamBroken)
        return self._ended_batch(())

    async def _next_item(self) -> Item | None:
        """The subscription's next item; None if :meth:`hurry` came first while a tip
        probe may follow. Cancellation-safe: an item taken off the queue is kept for the
        next call."""
        assert self._sub is not None
        if self._held is None and not self._may_probe:
            return await self._sub.queue.get()
        if self._held is None:
            waiter = asyncio.ensure_future(self._sub.queue.get())
            hurried = asyncio.ensure_future(self._hurried.wait())
            try:
                await asyncio.wait((waiter, hurried), return_when=asyncio.FIRST_COMPLETED)
            finally:
                hurried.cancel()
                if not waiter.done():
                    waiter.cancel()  # the queue keeps its item
                elif not waiter.cancelled():
                    self._held = waiter.result()
        item, self._held = self._held, None
        return item

    async def _probe_tip(self) -> RecordBatch | None:
        """One GetRecords (``Limit`` 1) at the resume position: an empty batch when it
        came back empty and caught up (:attr:`caught_up` set), else None."""
        self._hurried.clear()
        self._may_probe = False
        start = self._resume
        if start is None or start.iterator_type == "LATEST":
            return None  # no position to prove anything from
        floor = None
        if start.iterator_type == "AT_SEQUENCE_NUMBER" and start.sequence_number is not None:
            floor = self._floor
            if floor is None or floor.sequence_number != start.sequence_number:
                # a checkpoint start without a floor (an offset includes all of its
                # record): look past it, else every probe finds that record
                floor, start = None, IteratorStart.after_sequence(start.sequence_number)
        self.tip_probes += 1
        reader = self._prober = ShardReader(
            self._client, self._stream, self._shard, start, limit=1, idle_time=0,
            backoff=self._backoff, sleep=self._sleep, rng=self._rng, clock=self._clock,
            wall_clock=self._wall_clock,
        )  # fmt: skip
        try:
            batch = await reader.next_batch()
            while floor is not None and _all_had(batch.records, floor):
                batch = await reader.next_batch()  # had (S, or before it): look past it
        finally:
            self._prober = None
        found = reader.caught_up
        if found is None:
            return None
        self._caught_up = CaughtUp(found.sent, self._last_sequence)
        return RecordBatch(self._shard.shard_id, (), self._behind)

    def _handle(self, event: ColumnarRecords) -> RecordBatch:
        event = event.after(self._last_sequence)  # records a re-subscription repeats
        records = RecordColumns.from_answer(event)
        self._events += 1
        self._behind = event.millis_behind_latest
        self._may_probe = not self._behind
        if records:
            self._records += len(records)
            self._bytes += event.payload_bytes()
            self._last_sequence = records.sequence_number(-1)
        position = self._trusted(event.continuation) or self._last_sequence
        if position is not None:
            self._resume = IteratorStart.after_sequence(position)
        if event.child_shard_ids and event.continuation is None:
            self._children, self._child_shards = event.child_shard_ids, event.child_shards
            return self._finish(records)
        return RecordBatch(self._shard.shard_id, records, self._behind)

    def _trusted(self, continuation: str | None) -> str | None:
        """``continuation`` if it is at or past the shard's start and the last record."""
        if continuation is None:
            return None
        try:
            value = int(continuation)
            floor = int(self._last_sequence or self._shard.starting_sequence_number)
        except ValueError:
            return None
        return continuation if value >= floor and value > 0 else None

    async def _subscribe(self) -> None:
        arn = await self._consumer.arn()
        start = self._resume
        assert start is not None
        if start.iterator_type == "LATEST":  # a later subscription must not skip records
            self._resume = IteratorStart.at_timestamp(self._wall_clock())
        position: dict[str, Any] = {"Type": start.iterator_type}
        if start.sequence_number is not None:
            position["SequenceNumber"] = start.sequence_number
        if start.timestamp is not None:
            position["Timestamp"] = start.timestamp
        self._sub = Subscription(
            self._api, arn, self._shard.shard_id, position, lifetime=self._lifetime,
            clock=self._clock,
        )  # fmt: skip
        self.subscriptions += 1

    async def _failed(self, error: BaseException) -> None:
        """Wait out a retryable failure; raise a non-retryable one, typed."""
        code = code_of(error)
        if isinstance(error, StreamBroken) or is_retryable(error) or code in RETRY_CODES:
            self._throttles += is_throttling(error)
            if is_transient(error) or (http_status(error) or 0) >= 500:
                await self._check_shard()  # LocalStack: a missing shard is a 500
            await self._sleep(self._retry.failed(error))
            return
        if code == "ResourceNotFoundException":
            await self._probe()  # raises ShardNotFoundError / StreamNotFoundError if gone
            raise KinesisError(
                f"SubscribeToShard of {self._shard.shard_id}: {error_message(error)}; the "
                f"stream consumer {self._consumer.name!r} may have been deregistered: "
                "restart the consumer to register it again"
            ) from error
        typed = classify(error, stream=self._stream, url=self._url, shard_id=self._shard.shard_id)
        raise (typed or error) from error

    async def _check_shard(self) -> None:
        """Raise ShardNotFoundError (StreamNotFoundError) if the shard (stream) is gone:
        one GetShardIterator, outages retried."""
        probe = ShardReader(
            self._client, self._stream, self._shard, IteratorStart.latest(), backoff=self._backoff,
            sleep=self._sleep, rng=self._rng, clock=self._clock,
        )  # fmt: skip
        await probe._retrying(
            "GetShardIterator",
            lambda: self._client.get_shard_iterator(
                StreamName=self._stream, ShardId=self._shard.shard_id, ShardIteratorType="LATEST"
            ),
        )

    async def _probe(self) -> RecordBatch | None:
        """One GetRecords at the resume position: the end, records, or None (see above)."""
        assert self._resume is not None
        self.probes += 1
        reader = self._prober = ShardReader(
            self._client, self._stream, self._shard, self._resume, limit=1, idle_time=0,
            backoff=self._backoff, sleep=self._sleep, rng=self._rng, clock=self._clock,
            wall_clock=self._wall_clock,
        )  # fmt: skip
        try:
            batch = await reader.next_batch()
        finally:
            self._prober = None
        if batch.records:
            self._records += len(batch.records)
            self._bytes += sum(len(r.data) for r in batch.records)
            self._last_sequence = batch.records[-1].sequence_number
            self._resume = IteratorStart.after_sequence(self._last_sequence)
        if batch.shard_ended:
            self._children, self._child_shards = batch.child_shard_ids, batch.child_shards
            return self._finish(batch.records)
        return batch if batch.records else None

    def _finish(self, records: Sequence[KinesisRecord]) -> RecordBatch:
        self._ended = True
        self._resume = None
        self._drop_subscription()
        return self._ended_batch(records)

    def _ended_batch(self, records: Sequence[KinesisRecord]) -> RecordBatch:
        return RecordBatch(
            self._shard.shard_id, records, self._behind, shard_ended=True,
            child_shard_ids=self._children, child_shards=self._child_shards,
        )  # fmt: skip

    def _drop_subscription(self) -> None:
        self._held = None
        if self._sub is not None:
            self._sub.close()
            self._sub = None


def _all_had(records: Sequence[KinesisRecord], floor: ExtendedSequenceNumber) -> bool:
    """True when ``records`` (a read AT ``floor``'s record) are not empty and every user
    record of them is at or before ``floor`` (sub-sequence numbers after de-aggregation;
    kinesis-mock's AT_SEQUENCE_NUMBER may start at the record before it)."""
    from streamkit_kinesis.kpl.deaggregate import deaggregate

    key = (floor.as_int(), floor.sub_sequence_number)
    users = deaggregate(records)
    return bool(users) and all(
        (int(u.sequence_number), u.sub_sequence_number) <= key for u in users
    )


@dataclass(frozen=True)
class FanoutFetchers:
    """A :class:`~.fetcher.FetcherFactory` for ``retrieval="fanout"``: one
    :class:`FanoutReader` per shard through ``consumer``, de-aggregating KPL records (a
    checkpoint inside an aggregated record is read AT its record and filtered, as with
    :class:`~streamkit_kinesis.kpl.KplFetchers`)."""

    client: KinesisApi
    """The blocking Kinesis client (SubscribeToShard, and the end probes)."""
    stream: str
    """The stream the shards belong to."""
    consumer: StreamConsumer
    """The registered stream consumer every subscription goes through."""
    lifetime: float = SUBSCRIPTION_LIFETIME
    """Re-subscribe after this long (seconds)."""
    clock: Callable[[], float] = time.monotonic
    """Monotonic clock of the lifetime and the backoff bookkeeping."""

    def __call__(
        self, shard: ShardInfo, start: ExtendedSequenceNumber | datetime
    ) -> DeaggregatingFetcher:
        """A de-aggregating fan-out reader of ``shard`` from ``start``."""
        from streamkit_kinesis.kpl import DeaggregatingFetcher

        floor: ExtendedSequenceNumber | None = None
        begin: ExtendedSequenceNumber | datetime | IteratorStart = start
        if isinstance(start, ExtendedSequenceNumber) and not start.is_sentinel:
            floor, begin = start, IteratorStart.at_sequence(start.sequence_number)
        reader = FanoutReader(
            self.client, self.stream, shard, begin, self.consumer, lifetime=self.lifetime,
            clock=self.clock, floor=floor,
        )  # fmt: skip
        return DeaggregatingFetcher(reader, floor)
