"""Enhanced Fan-Out reader on LocalStack (issue 15, item 2): the stream consumer is
registered once and reused, re-subscriptions (lifetime expiry, a cut connection, injected
faults) resume from the last continuation with nothing lost or repeated, and a split shard
ends with its children. The expected records are what plain GetRecords reads."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import cast

import pytest
from streamkit_kinesis.client import KinesisApi, kinesis_client
from streamkit_kinesis.errors import ShardNotFoundError
from streamkit_kinesis.kpl import KplFetchers
from streamkit_kinesis.retrieval.fanout import FanoutFetchers, FanoutReader
from streamkit_kinesis.retrieval.iterators import IteratorStart
from streamkit_kinesis.retrieval.polling import PollingFetchers
from streamkit_kinesis.retrieval.registration import StreamConsumer
from streamkit_kinesis.retry import Backoff
from streamkit_kinesis.shards import shard_info
from streamkit_kinesis.testing.faults import ExceptionThrowingKinesisClient, InjectedError
from streamkit_kinesis.testing.streams import fresh_stream, put_blocking, read_shard_blocking
from streamkit_kinesis.types import TRIM_HORIZON, ExtendedSequenceNumber, KinesisRecord, ShardInfo

from streamkit.config import AwsEndpoint
from streamkit.testing.proxy import TcpProxy
from streamkit_kinesis_tests.retrieval.early_servers import EarlyAt, Repeating, ResubscribesAt
from streamkit_kinesis_tests.test_kpl import aggregated, sub_record

pytestmark = pytest.mark.integration

FAST = Backoff(base=0.05, cap=0.5, max_attempts=None)


def payloads(n: int, prefix: str) -> list[bytes]:
    return [f"{prefix}{i}".encode() for i in range(n)]


async def read_until(
    reader: FanoutReader, n: int, out: list[KinesisRecord], deadline: float = 60.0
) -> None:
    """Read until ``out`` holds ``n`` records; fail (not hang) after ``deadline`` seconds."""

    async def loop() -> None:
        while len(out) < n:
            out.extend((await reader.next_batch()).records)

    await asyncio.wait_for(loop(), deadline)


async def read_past_expiry(
    reader: FanoutReader, expirations: int, out: list[KinesisRecord], deadline: float = 60.0
) -> None:
    """Keep reading (an expiry is counted when the reader takes it from its subscription)
    until ``expirations`` subscriptions ran out; fail (not hang) after ``deadline`` s."""

    async def loop() -> None:
        while reader.expirations < expirations:
            out.extend((await reader.next_batch()).records)

    await asyncio.wait_for(loop(), deadline)


async def wait_for(predicate: object, what: str, deadline: float = 60.0) -> None:
    assert callable(predicate)
    end = time.monotonic() + deadline
    while not predicate():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def assert_once_in_order(got: list[KinesisRecord], expected: list[bytes]) -> None:
    assert [r.data for r in got] == expected
    seqs = [int(r.sequence_number) for r in got]
    assert seqs == sorted(set(seqs))


async def only_shard(client: KinesisApi, stream: str) -> ShardInfo:
    listed = await asyncio.to_thread(client.list_shards, StreamName=stream)
    return shard_info(listed["Shards"][0])


async def test_consumer_is_registered_once_reused_and_deregistered_only_on_request(
    localstack_endpoint: AwsEndpoint,
) -> None:
    async with fresh_stream(localstack_endpoint, 1, "efo") as (stream, _):
        client = kinesis_client(localstack_endpoint)
        first, second = StreamConsumer(client, stream, "app"), StreamConsumer(client, stream, "app")
        arns = await asyncio.gather(first.arn(), first.arn(), second.arn())
        assert len(set(arns)) == 1
        assert first.registrations + second.registrations == 1  # one created, one reused
        summary = await asyncio.to_thread(client.describe_stream_summary, StreamName=stream)
        stream_arn = summary["StreamDescriptionSummary"]["StreamARN"]
        lister = client.list_stream_consumers  # type: ignore[attr-defined]
        listed = await asyncio.to_thread(lister, StreamARN=stream_arn)
        assert [c["ConsumerName"] for c in listed["Consumers"]] == ["app"]
        assert await first.deregister() is True
        assert await first.deregister() is False  # none left


async def test_resubscribes_at_expiry_from_the_continuation(
    localstack_endpoint: AwsEndpoint,
) -> None:
    """A 1 s lifetime (instead of 290 s): the shard is first empty (LocalStack's empty
    events then carry continuation "0"), then records come in three rounds; every
    subscription after the first starts after the last record returned."""
    async with fresh_stream(localstack_endpoint, 1, "efo") as (stream, _):
        client = kinesis_client(localstack_endpoint, read_timeout=10.0)
        shard = await only_shard(client, stream)
        consumer = StreamConsumer(client, stream, "app")
        reader = FanoutReader(client, stream, shard, TRIM_HORIZON, consumer, lifetime=1.0)
        got: list[KinesisRecord] = []
        try:
            first = await reader.next_batch()  # empty shard: an empty event
            assert not first.records
            expected: list[bytes] = []
            for round_ in range(3):
                batch = payloads(20, f"r{round_}-")
                await asyncio.to_thread(put_blocking, client, stream, batch)
                expected += batch
                await read_until(reader, len(expected), got)
                await read_past_expiry(reader, round_ + 1, got)
        finally:
            await reader.close()
        assert_once_in_order(got, expected)
        assert reader.subscriptions >= 4
        truth = await asyncio.to_thread(read_shard_blocking, client, stream, shard.shard_id)
        assert [r["SequenceNumber"] for r in truth] == [r.sequence_number for r in got]


async def test_a_resubscription_that_repeats_the_last_record_delivers_it_once(
    localstack_endpoint: AwsEndpoint,
) -> None:
    """Every re-subscription (1 s lifetime) starts AT the last record returned instead of
    after it, so its first event repeats that record: the reader drops it."""
    async with fresh_stream(localstack_endpoint, 1, "efo") as (stream, _):
        real = kinesis_client(localstack_endpoint, read_timeout=10.0)
        shard = await only_shard(real, stream)
        client = ResubscribesAt(real)
        api = cast("KinesisApi", client)
        reader = FanoutReader(
            api, stream, shard, TRIM_HORIZON, StreamConsumer(api, stream, "app"), lifetime=1.0
        )
        got: list[KinesisRecord] = []
        expected: list[bytes] = []
        try:
            for round_ in range(2):
                batch = payloads(5, f"r{round_}-")
                await asyncio.to_thread(put_blocking, real, stream, batch)
                expected += batch
                await read_until(reader, len(expected), got)
                await read_past_expiry(reader, round_ + 1, got)
            await asyncio.to_thread(put_blocking, real, stream, [b"last"])
            await read_until(reader, len(expected) + 1, got)
        finally:
            await reader.close()
        assert client.rewritten >= 2
        assert_once_in_order(got, [*expected, b"last"])


async def test_cut_connection_resumes_from_the_last_continuation(
    localstack_endpoint: AwsEndpoint,
) -> None:
    async with fresh_stream(localstack_endpoint, 1, "efo") as (stream, _):
        direct = kinesis_client(localstack_endpoint)
        shard = await only_shard(direct, stream)
        with TcpProxy.to_url(str(localstack_endpoint.url)) as proxy:
            proxied = replace(localstack_endpoint, url=proxy.url)
            client = kinesis_client(proxied, connect_timeout=1.0, read_timeout=5.0)
            consumer = StreamConsumer(client, stream, "app")
            reader = FanoutReader(client, stream, shard, TRIM_HORIZON, consumer, backoff=FAST)
            got: list[KinesisRecord] = []
            try:
                await asyncio.to_thread(put_blocking, direct, stream, payloads(50, "a"))
                await read_until(reader, 50, got)
                subscriptions = reader.subscriptions
                proxy.cut()
                await asyncio.to_thread(put_blocking, direct, stream, payloads(50, "b"))
                reading = asyncio.create_task(read_until(reader, 100, got))
                await wait_for(
                    lambda: reading.done() or reader.health().consecutive_errors >= 2,
                    "2 failed tries",
                )
                assert not reading.done()
                assert reader.health().state == "backing off"
                proxy.restore()
                await asyncio.wait_for(reading, 60)
                await asyncio.to_thread(put_blocking, direct, stream, payloads(10, "c"))
                await asyncio.wait_for(read_until(reader, 110, got), 60)
            finally:
                await reader.close()
        assert_once_in_order(got, payloads(50, "a") + payloads(50, "b") + payloads(10, "c"))
        assert reader.subscriptions > subscriptions
        assert reader.health().state == "reading"


async def test_transient_subscribe_faults_are_retried_and_a_missing_shard_is_typed(
    localstack_endpoint: AwsEndpoint,
) -> None:
    """ResourceInUse (a previous subscription still open), LimitExceeded (1 call/s) and
    InternalFailure on SubscribeToShard are retried; a shard that is gone is not."""
    async with fresh_stream(localstack_endpoint, 1, "efo") as (stream, _):
        real = kinesis_client(localstack_endpoint)
        shard = await only_shard(real, stream)
        await asyncio.to_thread(put_blocking, real, stream, payloads(30, "r"))
        client = ExceptionThrowingKinesisClient(
            real,
            [
                InjectedError("subscribe_to_shard", "ResourceInUseException", frozenset({1})),
                InjectedError("subscribe_to_shard", "LimitExceededException", frozenset({2, 3})),
                InjectedError("subscribe_to_shard", "InternalFailure", frozenset({4})),
            ],
        )
        consumer = StreamConsumer(client, stream, "app")
        reader = FanoutReader(client, stream, shard, TRIM_HORIZON, consumer, backoff=FAST)
        got: list[KinesisRecord] = []
        try:
            await asyncio.wait_for(read_until(reader, 30, got), 60)
        finally:
            await reader.close()
        assert_once_in_order(got, payloads(30, "r"))
        assert client.calls["subscribe_to_shard"] == 5
        assert reader.metrics().throttles == 2
        ghost = replace(shard, shard_id="shardId-000000000042")
        lost = FanoutReader(real, stream, ghost, TRIM_HORIZON, consumer, backoff=FAST)
        with pytest.raises(ShardNotFoundError) as info:
            await asyncio.wait_for(lost.next_batch(), 60)
        await lost.close()
        assert "shardId-000000000042" in str(info.value)


async def test_split_during_a_subscription_ends_the_parent_with_its_children(
    localstack_endpoint: AwsEndpoint,
) -> None:
    """LocalStack sends no ChildShards in events (its generator passes ChildShards=None and
    breaks the stream at the end of a closed shard); the end probe finds them."""
    async with fresh_stream(localstack_endpoint, 1, "efo") as (stream, admin):
        client = kinesis_client(localstack_endpoint)
        shard = await only_shard(client, stream)
        consumer = StreamConsumer(client, stream, "app")
        reader = FanoutReader(client, stream, shard, TRIM_HORIZON, consumer, backoff=FAST)
        got: list[KinesisRecord] = []
        try:
            await asyncio.to_thread(put_blocking, client, stream, payloads(40, "p"))
            await read_until(reader, 40, got)
            children = await admin.split_shard(stream, shard.shard_id)
            last = None
            deadline = time.monotonic() + 90
            while last is None or not last.shard_ended:
                assert time.monotonic() < deadline, "the parent never reached SHARD_END"
                last = await asyncio.wait_for(reader.next_batch(), 90)
                got.extend(last.records)
        finally:
            await reader.close()
        assert_once_in_order(got, payloads(40, "p"))
        assert sorted(last.child_shard_ids) == sorted(c.shard_id for c in children)
        assert reader.ended
        again = await reader.next_batch()
        assert again.shard_ended
        assert not again.records


async def test_a_checkpoint_start_resumes_after_it(localstack_endpoint: AwsEndpoint) -> None:
    async with fresh_stream(localstack_endpoint, 1, "efo") as (stream, _):
        client = kinesis_client(localstack_endpoint)
        shard = await only_shard(client, stream)
        seqs = await asyncio.to_thread(put_blocking, client, stream, payloads(20, "s"))
        consumer = StreamConsumer(client, stream, "app")
        start = ExtendedSequenceNumber(seqs[11])
        reader = FanoutReader(client, stream, shard, start, consumer)
        got: list[KinesisRecord] = []
        try:
            await asyncio.wait_for(read_until(reader, 8, got), 60)
        finally:
            await reader.close()
        assert_once_in_order(got, payloads(20, "s")[12:])


async def test_a_hurried_reader_probes_the_tip_and_a_cancelled_wait_loses_nothing(
    localstack_endpoint: AwsEndpoint,
) -> None:
    """After reading a shard's records, :meth:`FanoutReader.hurry` makes the reader send a
    tip probe at once: it comes back empty, so ``caught_up`` is a read sent after the
    hurry whose last record is the last one put (from the put answers). With a record put
    after the last one returned, the probe finds it and sets nothing. A ``next_batch``
    cancelled while waiting for an event or a hurry loses no record."""
    async with fresh_stream(localstack_endpoint, 1, "efotip") as (stream, _):
        client = kinesis_client(localstack_endpoint)
        shard = await only_shard(client, stream)
        consumer = StreamConsumer(client, stream, "app")
        reader = FanoutReader(client, stream, shard, TRIM_HORIZON, consumer)
        got: list[KinesisRecord] = []
        try:
            first = await asyncio.to_thread(put_blocking, client, stream, payloads(30, "a"))
            await read_until(reader, 30, got)
            waiting = asyncio.create_task(reader.next_batch())  # waits for an event or a hurry
            await asyncio.sleep(0.3)
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)
            if not waiting.cancelled():  # an empty event came first
                assert not waiting.result().records
            sent_after = time.monotonic()
            reader.hurry()
            await wait_until_caught_up(reader)
            found = reader.caught_up
            assert found is not None
            assert found.sent > sent_after
            assert found.last_sequence == first[-1]
            await asyncio.to_thread(put_blocking, client, stream, payloads(5, "b"))
            await read_until(reader, 35, got)  # the last event returned was caught up
            probes = reader.tip_probes
            last = await asyncio.to_thread(put_blocking, client, stream, payloads(1, "c"))
            reader.hurry()
            await read_until(reader, 36, got)
            assert reader.tip_probes == probes + 1
            assert reader.caught_up == found  # the probe found the record: nothing new
        finally:
            await reader.close()
        assert_once_in_order(got, payloads(30, "a") + payloads(5, "b") + payloads(1, "c"))
        assert got[-1].sequence_number == last[-1]


async def wait_until_caught_up(reader: FanoutReader, deadline: float = 30.0) -> None:
    async def loop() -> None:
        while reader.caught_up is None:
            assert not (await reader.next_batch()).records

    await asyncio.wait_for(loop(), deadline)


async def test_a_probe_from_a_checkpoint_start_looks_past_the_checkpoint(
    localstack_endpoint: AwsEndpoint,
) -> None:
    """A reader started at its checkpoint (AT_SEQUENCE_NUMBER, as the fan-out factory
    starts one) on a shard with nothing after it: the first tip probe, sent before any
    event, comes back empty (it looks past the checkpoint's record, which the query has)."""
    async with fresh_stream(localstack_endpoint, 1, "efo") as (stream, _):
        client = kinesis_client(localstack_endpoint)
        shard = await only_shard(client, stream)
        seqs = await asyncio.to_thread(put_blocking, client, stream, payloads(5, "s"))
        consumer = StreamConsumer(client, stream, "app")
        reader = FanoutReader(client, stream, shard, IteratorStart.at_sequence(seqs[-1]), consumer)
        try:
            reader.hurry()
            batch = await asyncio.wait_for(reader.next_batch(), 60)
        finally:
            await reader.close()
        assert not batch.records
        assert reader.tip_probes == 1
        assert reader.caught_up is not None
        assert reader.subscriptions == 0


CHECKPOINTS = pytest.mark.parametrize(
    ("aggregate", "sub", "unread"),
    [
        (True, 0, [1, 2, 3, 4]),  # inside the aggregate: its later user records are unread
        (True, 4, []),  # at its last user record: the whole aggregate is had
        (False, 0, []),  # a plain record
    ],
)


async def put_checkpointed(client: KinesisApi, stream: str, aggregate: bool) -> list[str]:
    """Put two pads, ``before`` and the checkpoint's record S (last); their sequence numbers.

    Two pads: kinesis-mock 0.4.13 numbers a shard's first record like the shard's start
    when both fall in the same second, and then answers the iterator after that record
    with the record again (and AT the second record with the first); the records a test
    reads AT (``before``, S) are never first or second, so no answer depends on timing."""
    data = aggregated(["p"], [], [sub_record(0, bytes([i])) for i in range(5)])
    records = [b"pad0", b"pad1", b"before", data if aggregate else b"plain"]
    return await asyncio.to_thread(put_blocking, client, stream, records)


async def probe_from(
    client: KinesisApi, stream: str, shard: ShardInfo, checkpoint: ExtendedSequenceNumber
) -> tuple[list[KinesisRecord], FanoutReader]:
    """A fan-out fetcher from ``checkpoint``, hurried until it returned records or found the
    tip: the user records it returned, and its reader."""
    fetcher = FanoutFetchers(client, stream, StreamConsumer(client, stream, "app"))(
        shard, checkpoint
    )
    reader = fetcher._inner
    assert isinstance(reader, FanoutReader)
    got: list[KinesisRecord] = []

    async def until_records_or_the_tip() -> None:
        while not got and reader.caught_up is None:  # an event may come empty first
            fetcher.hurry()
            got.extend((await fetcher.next_batch()).records)

    try:
        await asyncio.wait_for(until_records_or_the_tip(), 60)
    finally:
        await fetcher.close()
    return got, reader


def user_keys(records: list[KinesisRecord]) -> list[tuple[str, int]]:
    return [(r.sequence_number, r.sub_sequence_number) for r in records]


@CHECKPOINTS
async def test_a_probe_from_a_checkpoint_inside_an_aggregate_finds_its_unread_records(
    localstack_endpoint: AwsEndpoint, aggregate: bool, sub: int, unread: list[int]
) -> None:
    """The fan-out factory starts AT a checkpoint's record S (last in the shard). The first
    tip probe, sent before any event, finds the tip only if every user record of S is at
    or before the checkpoint; else the subscription delivers S's unread user records."""
    async with fresh_stream(localstack_endpoint, 1, "efo") as (stream, _):
        client = kinesis_client(localstack_endpoint)
        shard = await only_shard(client, stream)
        seq = (await put_checkpointed(client, stream, aggregate))[-1]
        got, reader = await probe_from(client, stream, shard, ExtendedSequenceNumber(seq, sub))
        assert user_keys(got) == [(seq, i) for i in unread]
        assert [r.data for r in got] == [bytes([i]) for i in unread]
        assert reader.tip_probes == 1
        assert (reader.caught_up is not None) == (not unread)  # found the tip, or not
        assert reader.subscriptions == (1 if unread else 0)


@CHECKPOINTS
async def test_a_probe_whose_server_starts_before_the_checkpoint_neither_skips_nor_stalls(
    localstack_endpoint: AwsEndpoint, aggregate: bool, sub: int, unread: list[int]
) -> None:
    """The server answers AT S from the record before S (as kinesis-mock may): that record
    is had (before the checkpoint), so the probe reads on and decides as above."""
    async with fresh_stream(localstack_endpoint, 1, "efo") as (stream, _):
        real = kinesis_client(localstack_endpoint)
        shard = await only_shard(real, stream)
        *_, before, seq = await put_checkpointed(real, stream, aggregate)
        client = EarlyAt(real, {seq: before})
        got, reader = await probe_from(
            cast("KinesisApi", client), stream, shard, ExtendedSequenceNumber(seq, sub)
        )
        assert client.rewritten == 1  # the probe's AT S
        assert user_keys(got) == [(seq, i) for i in unread]
        assert reader.tip_probes == 1
        assert (reader.caught_up is not None) == (not unread)
        assert reader.subscriptions == (1 if unread else 0)


@CHECKPOINTS
async def test_a_probe_does_not_take_a_repeated_record_for_the_tip(
    localstack_endpoint: AwsEndpoint, aggregate: bool, sub: int, unread: list[int]
) -> None:
    """The server answers AT S from the record before S and then repeats that record for
    ever (kinesis-mock after a shard's first record): an answer of only a repeat, as long
    as ``Limit``, proves nothing, so the first probe finds no tip. Unread user records of S
    come from the subscription; with none, a probe after its first event finds the tip."""
    async with fresh_stream(localstack_endpoint, 1, "efo") as (stream, _):
        real = kinesis_client(localstack_endpoint)
        shard = await only_shard(real, stream)
        *_, before, seq = await put_checkpointed(real, stream, aggregate)
        client = Repeating(real, {seq: before}, stream, shard.shard_id, before)
        got, reader = await probe_from(
            cast("KinesisApi", client), stream, shard, ExtendedSequenceNumber(seq, sub)
        )
        assert client.repeats >= 1
        assert user_keys(got) == [(seq, i) for i in unread]
        assert reader.subscriptions == 1
        if unread:
            assert (reader.tip_probes, reader.caught_up) == (1, None)
        else:  # the first probe found nothing (a repeat is no tip); a later one the tip:
            # the second, or a third when an empty first event moved the resume point
            assert reader.tip_probes >= 2
            assert reader.caught_up is not None


@pytest.mark.parametrize("sub", [0, 2, 4])
async def test_a_resume_inside_an_aggregate_repeats_none_of_its_user_records(
    localstack_endpoint: AwsEndpoint, sub: int
) -> None:
    """Polling with ``Limit`` 1 from a checkpoint (S, sub) on a server whose AT S starts at
    the record before S: the first batch holds only that record (had, dropped); S's user
    records at or before the checkpoint must not come with the next batch."""
    async with fresh_stream(localstack_endpoint, 1, "kplr") as (stream, _):
        real = kinesis_client(localstack_endpoint)
        shard = await only_shard(real, stream)
        *_, before, seq = await put_checkpointed(real, stream, True)
        after = (await asyncio.to_thread(put_blocking, real, stream, [b"after"]))[0]
        client = cast("KinesisApi", EarlyAt(real, {seq: before}))
        polling = PollingFetchers(client, stream, limit=1, idle_time=0)
        fetcher = KplFetchers(polling)(shard, ExtendedSequenceNumber(seq, sub))
        got: list[KinesisRecord] = []

        async def until_after() -> None:
            while not got or got[-1].sequence_number != after:
                got.extend((await fetcher.next_batch()).records)

        try:
            await asyncio.wait_for(until_after(), 60)
        finally:
            await fetcher.close()
        assert user_keys(got) == [(seq, i) for i in range(sub + 1, 5)] + [(after, 0)]
