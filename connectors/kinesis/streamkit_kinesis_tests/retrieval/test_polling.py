"""ShardReader against real servers (LocalStack first, moto second; moto's gaps marked)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest
from botocore.exceptions import ClientError
from streamkit_kinesis.admin import StreamAdmin
from streamkit_kinesis.client import KinesisApi, kinesis_client
from streamkit_kinesis.errors import EndpointUnreachableError, StreamNotFoundError
from streamkit_kinesis.retrieval import IteratorStart, ShardReader
from streamkit_kinesis.retrieval.polling import CaughtUp
from streamkit_kinesis.shards import list_shards_blocking, shard_info
from streamkit_kinesis.testing.faults import ExceptionThrowingKinesisClient, InjectedError
from streamkit_kinesis.testing.streams import fresh_stream, put_blocking, unique
from streamkit_kinesis.types import (
    LATEST,
    SHARD_END,
    TRIM_HORIZON,
    ExtendedSequenceNumber,
    HashKeyRange,
    KinesisRecord,
    ShardInfo,
)

from streamkit.config import AwsEndpoint
from streamkit.testing.waits import HANG

pytestmark = pytest.mark.integration

N = 200


def payloads(n: int = N, prefix: str = "r") -> list[bytes]:
    return [f"{prefix}{i}".encode() for i in range(n)]


class Sleeps:
    """An injected sleep that records what it was asked and returns at once."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        await asyncio.sleep(0)


async def read_n(reader: ShardReader, n: int, max_calls: int = 200) -> list[KinesisRecord]:
    """Read until ``n`` records came, then check one more read brings nothing new."""
    out: list[KinesisRecord] = []
    for _ in range(max_calls):
        if len(out) >= n:
            break
        out.extend((await reader.next_batch()).records)
    assert len(out) == n, f"read {len(out)} records, expected {n}"
    assert (await reader.next_batch()).records == ()
    return out


async def read_to_end(reader: ShardReader, max_calls: int = 30) -> list[KinesisRecord]:
    """Read until SHARD_END; fail if it does not come within ``max_calls`` reads."""
    out: list[KinesisRecord] = []
    for _ in range(max_calls):
        batch = await reader.next_batch()
        out.extend(batch.records)
        if batch.shard_ended:
            assert reader.ended
            return out
    raise AssertionError(f"no SHARD_END after {max_calls} reads ({len(out)} records read)")


def caught_up(reader: ShardReader) -> CaughtUp | None:
    """The reader's latest empty, caught-up read (read anew at every call)."""
    return reader.caught_up


async def one_shard(admin_stream: str, endpoint: AwsEndpoint) -> tuple[KinesisApi, ShardInfo]:
    client = kinesis_client(endpoint)
    shards = await asyncio.to_thread(client.list_shards, StreamName=admin_stream)
    return client, shard_info(shards["Shards"][0])


async def test_trim_horizon_reads_every_record_in_order(aws_endpoint: AwsEndpoint) -> None:
    async with fresh_stream(aws_endpoint, 1) as (stream, _):
        client, shard = await one_shard(stream, aws_endpoint)
        seqs = await asyncio.to_thread(put_blocking, client, stream, payloads())
        reader = ShardReader(client, stream, shard, TRIM_HORIZON, limit=40, sleep=Sleeps())
        records = await read_n(reader, N)
    assert [r.data for r in records] == payloads()
    assert [r.sequence_number for r in records] == seqs
    assert all(r.partition_key == "k" for r in records)
    m = reader.metrics()
    assert m.records == N
    assert m.bytes == sum(len(p) for p in payloads())
    assert m.get_records_calls >= N // 40
    assert reader.last_sequence_number == seqs[-1]


async def test_after_and_at_sequence_number(aws_endpoint: AwsEndpoint) -> None:
    async with fresh_stream(aws_endpoint, 1) as (stream, _):
        client, shard = await one_shard(stream, aws_endpoint)
        seqs = await asyncio.to_thread(put_blocking, client, stream, payloads())
        checkpoint = ExtendedSequenceNumber(seqs[99])
        after = ShardReader(client, stream, shard, checkpoint, limit=30, sleep=Sleeps())
        at = ShardReader(client, stream, shard, IteratorStart.at_sequence(seqs[99]), sleep=Sleeps())
        assert [r.data for r in await read_n(after, N - 100)] == payloads()[100:]
        assert [r.data for r in await read_n(at, N - 99)] == payloads()[99:]


async def test_latest_reads_only_new_records(aws_endpoint: AwsEndpoint) -> None:
    async with fresh_stream(aws_endpoint, 1) as (stream, _):
        client, shard = await one_shard(stream, aws_endpoint)
        await asyncio.to_thread(put_blocking, client, stream, payloads(20, "old"))
        reader = ShardReader(client, stream, shard, LATEST, sleep=Sleeps())
        assert (await reader.next_batch()).records == ()
        await asyncio.to_thread(put_blocking, client, stream, payloads(10, "new"))
        assert [r.data for r in await read_n(reader, 10)] == payloads(10, "new")


async def test_at_timestamp(aws_endpoint: AwsEndpoint) -> None:
    async with fresh_stream(aws_endpoint, 1) as (stream, _):
        client, shard = await one_shard(stream, aws_endpoint)
        await asyncio.to_thread(put_blocking, client, stream, payloads(20, "before"))
        await asyncio.sleep(1.0)
        moment = datetime.now(UTC)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(put_blocking, client, stream, payloads(10, "after"))
        reader = ShardReader(client, stream, shard, moment, sleep=Sleeps())
        assert [r.data for r in await read_n(reader, 10)] == payloads(10, "after")


async def test_expired_iterators_lose_and_repeat_nothing(aws_endpoint: AwsEndpoint) -> None:
    async with fresh_stream(aws_endpoint, 1) as (stream, _):
        real, shard = await one_shard(stream, aws_endpoint)
        await asyncio.to_thread(put_blocking, real, stream, payloads())
        client = ExceptionThrowingKinesisClient(
            real,
            [InjectedError("get_records", "ExpiredIteratorException", frozenset({1, 3, 4, 6}))],
        )
        reader = ShardReader(client, stream, shard, TRIM_HORIZON, limit=30, sleep=Sleeps())
        records = await read_n(reader, N)
    assert [r.data for r in records] == payloads()
    assert reader.metrics().expired_iterator_recoveries == 4
    assert client.calls["get_shard_iterator"] == 5  # the first one, then one per expiry
    assert [c for (_, _, c) in client.injected] == ["ExpiredIteratorException"] * 4


class RepeatingClient(ExceptionThrowingKinesisClient):
    """The real client, except that the given GetRecords calls are sent with the iterator of
    the call before: the real server answers again with records already returned (what
    kinesis-mock 0.4.13 does after a shard's first record put in its first second)."""

    def __init__(self, inner: KinesisApi, repeat_calls: frozenset[int]) -> None:
        super().__init__(inner)
        self.repeat_calls = repeat_calls
        self.previous: str | None = None
        self.limits: list[int] = []
        """``Limit`` of each GetRecords call."""

    def get_records(self, **kwargs):  # type: ignore[no-untyped-def]
        self.limits.append(kwargs["Limit"])
        number = self._count("get_records")
        if number in self.repeat_calls and self.previous is not None:
            kwargs = {**kwargs, "ShardIterator": self.previous}
        self.previous = kwargs["ShardIterator"]
        return self._inner.get_records(**kwargs)


async def test_records_the_server_repeats_are_returned_once(aws_endpoint: AwsEndpoint) -> None:
    async with fresh_stream(aws_endpoint, 1) as (stream, _):
        real, shard = await one_shard(stream, aws_endpoint)
        await asyncio.to_thread(put_blocking, real, stream, payloads(30, "a"))
        client = RepeatingClient(real, frozenset({2, 3}))
        reader = ShardReader(client, stream, shard, TRIM_HORIZON, limit=20, sleep=Sleeps())
        first = await reader.next_batch()  # a0..a19
        again = await reader.next_batch()  # the same answer: nothing new
        # the same iterator again, but asked with Limit 40 (20 + the 20 repeats)
        third = await reader.next_batch()
        await asyncio.to_thread(put_blocking, real, stream, payloads(5, "b"))
        new = await read_n(reader, 5)  # Limit 20 again
    assert [r.data for r in first.records] == payloads(30, "a")[:20]
    assert again.records == ()
    assert [r.data for r in third.records] == payloads(30, "a")[20:]
    assert [r.data for r in new] == payloads(5, "b")
    assert reader.metrics().records == 35
    assert client.limits == [20, 20, 40, 20, 20]


async def test_throttling_backs_off_with_jitter_and_loses_nothing(
    aws_endpoint: AwsEndpoint,
) -> None:
    async with fresh_stream(aws_endpoint, 1) as (stream, _):
        real, shard = await one_shard(stream, aws_endpoint)
        await asyncio.to_thread(put_blocking, real, stream, payloads())
        client = ExceptionThrowingKinesisClient(
            real,
            [
                InjectedError("get_shard_iterator", "LimitExceededException", frozenset({1})),
                InjectedError(
                    "get_records", "ProvisionedThroughputExceededException", frozenset({1, 2, 4})
                ),
            ],
        )
        sleeps = Sleeps()
        reader = ShardReader(
            client, stream, shard, TRIM_HORIZON, limit=50, sleep=sleeps, rng=lambda: 0.5
        )
        records = await read_n(reader, N)
    assert [r.data for r in records] == payloads()
    assert reader.metrics().throttles == 4
    # full jitter with the draw fixed at 0.5: half of 0.2 * 2**attempt, attempt per call
    assert sleeps.calls == pytest.approx([0.1, 0.1, 0.2, 0.1])


async def test_idle_read_sleeps_idle_time_before_the_next_call(aws_endpoint: AwsEndpoint) -> None:
    async with fresh_stream(aws_endpoint, 1) as (stream, _):
        client, shard = await one_shard(stream, aws_endpoint)
        sleeps, now = Sleeps(), [100.0]
        reader = ShardReader(
            client, stream, shard, TRIM_HORIZON, idle_time=0.75, sleep=sleeps,
            clock=lambda: now[0],
        )  # fmt: skip
        assert (await reader.next_batch()).records == ()
        assert sleeps.calls == []
        await reader.next_batch()
        assert sleeps.calls == [0.75]
        assert reader.metrics().millis_behind_latest in (0, None)
        now[0] += 0.5  # the caller spent 0.5 s between reads: that counts toward the wait
        await reader.next_batch()
        assert sleeps.calls == [0.75, 0.25]
        now[0] += 2.0  # longer than idle_time: no wait at all
        await reader.next_batch()
        assert sleeps.calls == [0.75, 0.25]


async def test_caught_up_marks_empty_reads_and_hurry_skips_the_idle_wait(
    aws_endpoint: AwsEndpoint,
) -> None:
    """``caught_up`` is the last empty, caught-up read (sent after the moment before the
    call, with the last record returned before it); ``hurry`` skips the idle wait once,
    and cuts short one already under way."""
    async with fresh_stream(aws_endpoint, 1) as (stream, _):
        client, shard = await one_shard(stream, aws_endpoint)
        sleeps = Sleeps()
        reader = ShardReader(
            client, stream, shard, TRIM_HORIZON, idle_time=0.75, sleep=sleeps, clock=lambda: 1.0
        )
        assert caught_up(reader) is None
        before = time.monotonic()
        assert (await reader.next_batch()).records == ()
        first = caught_up(reader)
        assert first is not None
        assert first.sent >= before
        assert first.last_sequence is None
        seqs = await asyncio.to_thread(put_blocking, client, stream, payloads(3))
        reader.hurry()
        assert [r.sequence_number for r in (await reader.next_batch()).records] == seqs
        assert sleeps.calls == []
        assert caught_up(reader) == first
        assert (await reader.next_batch()).records == ()
        assert sleeps.calls == [0.75]  # not hurried: the idle wait
        last = caught_up(reader)
        assert last is not None
        assert last.sent > first.sent
        assert last.last_sequence == seqs[-1]

        entered, never = asyncio.Event(), asyncio.Event()

        async def stuck(seconds: float) -> None:
            entered.set()
            await never.wait()

        reader = ShardReader(client, stream, shard, TRIM_HORIZON, idle_time=3600, sleep=stuck)
        assert len((await reader.next_batch()).records) == 3
        pending = asyncio.create_task(reader.next_batch())
        await asyncio.wait_for(entered.wait(), 60)
        reader.hurry()
        assert (await asyncio.wait_for(pending, 60)).records == ()


async def test_a_backlog_is_read_without_waiting_a_caught_up_read_with_records_waits(
    aws_endpoint: AwsEndpoint,
) -> None:
    async with fresh_stream(aws_endpoint, 1) as (stream, _):
        client, shard = await one_shard(stream, aws_endpoint)
        await asyncio.to_thread(put_blocking, client, stream, payloads(30))
        sleeps = Sleeps()
        reader = ShardReader(
            client, stream, shard, TRIM_HORIZON, limit=10, idle_time=1.5, sleep=sleeps,
            clock=lambda: 0.0,
        )  # fmt: skip
        backlog = [len((await reader.next_batch()).records) for _ in range(3)]
        assert backlog == [10, 10, 10]
        assert sleeps.calls == []  # full reads: behind the tip, no pause between them
        assert (await reader.next_batch()).records == ()
        assert sleeps.calls == []  # the pause comes before the call after a caught-up read
        await asyncio.to_thread(put_blocking, client, stream, payloads(4, "late"))
        late = await reader.next_batch()
        assert sleeps.calls == [1.5]
        assert [r.data for r in late.records] == payloads(4, "late")
        await reader.next_batch()  # after a caught-up read WITH records, a pause too (KCL)
        assert sleeps.calls == [1.5, 1.5]


class CountingClient:
    """The real client, counting the GetRecords calls that reach the server."""

    def __init__(self, real: KinesisApi) -> None:
        self.real = real
        self.get_records_calls = 0

    def get_records(self, **kwargs: object) -> object:
        self.get_records_calls += 1
        return self.real.get_records(**kwargs)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)


async def test_an_idle_shard_is_polled_at_most_once_per_idle_time_by_default(
    aws_endpoint: AwsEndpoint,
) -> None:
    """Default settings, real time: over ~4.5 s an idle shard gets at most 4 GetRecords
    (1.5 s apart: KCL's 1500 ms). Kinesis allows 5 reads/s per shard for all consumers."""
    async with fresh_stream(aws_endpoint, 1) as (stream, _):
        real, shard = await one_shard(stream, aws_endpoint)
        client = CountingClient(real)
        reader = ShardReader(client, stream, shard, TRIM_HORIZON)  # type: ignore[arg-type]
        started = time.monotonic()
        while time.monotonic() - started < 4.5:
            assert (await reader.next_batch()).records == ()
    assert 1 <= client.get_records_calls <= 4, client.get_records_calls


async def test_limit_bounds_each_batch(aws_endpoint: AwsEndpoint) -> None:
    async with fresh_stream(aws_endpoint, 1) as (stream, _):
        client, shard = await one_shard(stream, aws_endpoint)
        await asyncio.to_thread(put_blocking, client, stream, payloads(5))
        reader = ShardReader(client, stream, shard, TRIM_HORIZON, limit=2, sleep=Sleeps())
        sizes = [len((await reader.next_batch()).records) for _ in range(3)]
        assert sizes == [2, 2, 1]
    with pytest.raises(ValueError, match="limit"):
        ShardReader(client, stream, shard, TRIM_HORIZON, limit=10_001)


async def split_after_writing(
    endpoint: AwsEndpoint, stream: str, n: int
) -> tuple[KinesisApi, ShardInfo, ShardInfo, list[str]]:
    """Write ``n`` records to the only shard, split it; (client, before, after, child ids)."""
    client, before = await one_shard(stream, endpoint)
    if n:
        await asyncio.to_thread(put_blocking, client, stream, payloads(n))
    admin = StreamAdmin(endpoint, client=client, poll_interval=0.1)
    children = await admin.split_shard(stream, before.shard_id)
    after = await admin.shard(stream, before.shard_id)
    assert after.is_closed
    return client, before, after, sorted(c.shard_id for c in children)


@pytest.mark.moto_gap("a closed shard never returns a null NextShardIterator nor ChildShards")
async def test_shard_end_by_null_iterator_reports_child_shards(aws_endpoint: AwsEndpoint) -> None:
    async with fresh_stream(aws_endpoint, 1) as (stream, _):
        client, before, _, children = await split_after_writing(aws_endpoint, stream, 50)
        # The reader only knows the shard as open and never re-describes it: only the
        # server's null NextShardIterator can end it.
        reader = ShardReader(
            client,
            stream,
            before,
            TRIM_HORIZON,
            limit=20,
            sleep=Sleeps(),
            shard_refresh_interval=None,
        )
        records: list[KinesisRecord] = []
        ended = None
        for _ in range(10):
            batch = await reader.next_batch()
            records.extend(batch.records)
            if batch.shard_ended:
                ended = batch
                break
        listed = {s.shard_id: s for s in list_shards_blocking(client, stream)}
    assert ended is not None
    assert [r.data for r in records] == payloads(50)
    assert sorted(ended.child_shard_ids) == children
    # described from ChildShards alone (no ListShards): parents and ranges as listed
    described = {c.shard_id: (c.parent_shard_ids, c.hash_key_range) for c in ended.child_shards}
    assert described == {
        c: (listed[c].parent_shard_ids, listed[c].hash_key_range) for c in children
    }


async def test_shard_end_of_a_closed_shard(aws_endpoint: AwsEndpoint) -> None:
    async with fresh_stream(aws_endpoint, 1) as (stream, _):
        client, _, closed, _ = await split_after_writing(aws_endpoint, stream, 50)
        reader = ShardReader(client, stream, closed, TRIM_HORIZON, limit=20, sleep=Sleeps())
        batches = [b async for b in reader]
    assert [r.data for b in batches for r in b.records] == payloads(50)
    assert batches[-1].shard_ended
    assert not any(b.shard_ended for b in batches[:-1])
    assert reader.ended
    again = await reader.next_batch()
    assert again.shard_ended
    assert again.records == ()


async def test_shard_closed_after_the_reader_started_is_noticed(aws_endpoint: AwsEndpoint) -> None:
    async with fresh_stream(aws_endpoint, 1) as (stream, _):
        client, before = await one_shard(stream, aws_endpoint)
        await asyncio.to_thread(put_blocking, client, stream, payloads(30))
        reader = ShardReader(
            client, stream, before, TRIM_HORIZON, sleep=Sleeps(), shard_refresh_interval=0.0
        )
        first = await read_n(reader, 30)
        await split_after_writing(aws_endpoint, stream, 0)
        rest = await read_to_end(reader)
    assert [r.data for r in first] == payloads(30)
    assert rest == []
    assert reader.shard.is_closed


async def test_empty_closed_shard_ends(aws_endpoint: AwsEndpoint) -> None:
    async with fresh_stream(aws_endpoint, 1) as (stream, _):
        client, _, closed, _ = await split_after_writing(aws_endpoint, stream, 0)
        reader = ShardReader(client, stream, closed, TRIM_HORIZON, sleep=Sleeps())
        assert await read_to_end(reader) == []


async def test_resume_after_the_last_record_of_a_closed_shard_ends(
    aws_endpoint: AwsEndpoint,
) -> None:
    async with fresh_stream(aws_endpoint, 1) as (stream, _):
        client, _ = await one_shard(stream, aws_endpoint)
        seqs = await asyncio.to_thread(put_blocking, client, stream, payloads(5))
        _, _, closed, _ = await split_after_writing(aws_endpoint, stream, 0)
        last = ExtendedSequenceNumber(seqs[-1])
        reader = ShardReader(client, stream, closed, last, sleep=Sleeps())
        assert await read_to_end(reader) == []
        done = ShardReader(client, stream, closed, SHARD_END)
        assert done.ended
        assert (await done.next_batch()).shard_ended
        assert done.metrics().get_records_calls == 0


@pytest.mark.moto_gap("writes after SplitShard still go to the closed parent shard")
async def test_records_put_after_a_split_are_in_the_children(aws_endpoint: AwsEndpoint) -> None:
    async with fresh_stream(aws_endpoint, 1) as (stream, _):
        client, _, closed, children = await split_after_writing(aws_endpoint, stream, 10)
        await asyncio.to_thread(put_blocking, client, stream, payloads(10, "late"))
        parent = ShardReader(client, stream, closed, TRIM_HORIZON, sleep=Sleeps())
        assert [r.data for r in await read_to_end(parent)] == payloads(10)
        admin = StreamAdmin(aws_endpoint, client=client)
        late: list[bytes] = []
        for child_id in children:
            child = await admin.shard(stream, child_id)
            reader = ShardReader(client, stream, child, TRIM_HORIZON, sleep=Sleeps())
            batch = await reader.next_batch()
            late.extend(r.data for r in batch.records)
        assert late == payloads(10, "late")


async def test_missing_stream_names_it(aws_endpoint: AwsEndpoint) -> None:
    name = unique("gone")
    shard = ShardInfo("shardId-000000000000", (), HashKeyRange(0, 2**128 - 1), "0")
    reader = ShardReader(kinesis_client(aws_endpoint), name, shard, TRIM_HORIZON)
    with pytest.raises(StreamNotFoundError, match=name):
        await reader.next_batch()


async def test_unreachable_endpoint_fails_fast_without_retry_forever() -> None:
    """One-shot readers (``retry_forever=False``) give up after about a second; a
    running query's readers retry for ever (tests/.../test_outage_reader.py)."""
    client = kinesis_client(AwsEndpoint.local("http://127.0.0.1:9"))
    shard = ShardInfo("shardId-000000000000", (), HashKeyRange(0, 2**128 - 1), "0")
    reader = ShardReader(client, "s", shard, TRIM_HORIZON, retry_forever=False)
    start = time.monotonic()
    with pytest.raises(EndpointUnreachableError) as info:
        await reader.next_batch()
    assert time.monotonic() - start < HANG  # three quick attempts, not a hang
    assert info.value.attempts == 3


async def test_expiry_before_any_record_from_latest_loses_nothing(
    aws_endpoint: AwsEndpoint,
) -> None:
    """A LATEST iterator that expires before any record came is replaced by one AT the
    time the reader started, so records put in between are still read."""
    async with fresh_stream(aws_endpoint, 1) as (stream, _):
        real, shard = await one_shard(stream, aws_endpoint)
        await asyncio.to_thread(put_blocking, real, stream, payloads(5, "old"))
        await asyncio.sleep(1.1)  # kinesis-mock's AT_TIMESTAMP has whole-second precision
        client = ExceptionThrowingKinesisClient(
            real, [InjectedError("get_records", "ExpiredIteratorException", frozenset({2}))]
        )
        reader = ShardReader(client, stream, shard, LATEST, sleep=Sleeps())
        assert (await reader.next_batch()).records == ()
        await asyncio.sleep(0.2)
        await asyncio.to_thread(put_blocking, real, stream, payloads(5, "new"))
        assert [r.data for r in await read_n(reader, 5)] == payloads(5, "new")
    assert reader.metrics().expired_iterator_recoveries == 1


async def test_injected_errors_are_the_modeled_botocore_classes(
    aws_endpoint: AwsEndpoint,
) -> None:
    real = kinesis_client(aws_endpoint)
    client = ExceptionThrowingKinesisClient(
        real, [InjectedError("get_records", "ExpiredIteratorException", frozenset({1}))]
    )
    with pytest.raises(ClientError) as info:
        client.get_records(ShardIterator="x")
    assert type(info.value).__name__ == "ExpiredIteratorException"
    assert info.value.response["Error"]["Code"] == "ExpiredIteratorException"
    assert info.value.operation_name == "GetRecords"
