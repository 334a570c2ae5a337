"""Gathered deliveries (``ConsumerConfig.gather_records``): reads behind the tip come as one
batch, every record once and in order; a caught-up shard is delivered read by read; a
cancelled read loses nothing.

Expected records are the ones put (PutRecords' sequence numbers, read back with plain
boto3); expected batch sizes follow from the reads' sizes alone (``limit`` records per full
read, gathered until a read is not full or the sum reaches ``gather``)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.consumer import KinesisConsumer
from streamkit_kinesis.leases import Checkpointer
from streamkit_kinesis.retrieval.fetcher import ReaderMetrics
from streamkit_kinesis.retrieval.gather import GatheringFetcher
from streamkit_kinesis.retrieval.polling import ShardReader
from streamkit_kinesis.shards import list_shards_blocking
from streamkit_kinesis.testing.streams import fresh_stream, put_blocking, read_stream_blocking
from streamkit_kinesis.types import TRIM_HORIZON, KinesisRecord, RecordBatch

from streamkit_kinesis_tests.consumer.consumer_support import (
    Journal,
    RecordingProcessor,
    drop_table,
    fast_config,
    tips_of,
    wait_caught_up,
)

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint


def expected_sizes(total: int, limit: int, gather: int) -> list[int]:
    """Batch sizes for ``total`` records read ``limit`` at a time and gathered: reads are
    added while the last one was full, until the sum reaches ``gather``."""
    reads = [limit] * (total // limit) + ([total % limit] if total % limit else [])
    sizes, current = [], 0
    for n in reads:
        current += n
        if n < limit or current >= gather:
            sizes.append(current)
            current = 0
    return sizes + ([current] if current else [])


@pytest.mark.integration
@pytest.mark.parametrize(("total", "limit", "gather"), [(1300, 200, 500), (1000, 250, 10_000)])
async def test_reads_behind_the_tip_are_one_batch_and_each_record_comes_once(
    kinesalite_endpoint: AwsEndpoint, total: int, limit: int, gather: int
) -> None:
    ep = kinesalite_endpoint
    client = kinesis_client(ep)
    async with fresh_stream(ep, 1, "gather") as (stream, _):
        data = [b"r%d" % i for i in range(total)]
        seqs = await asyncio.to_thread(put_blocking, client, stream, data)
        (shard,) = list_shards_blocking(client, stream)
        reader = ShardReader(client, stream, shard, TRIM_HORIZON, idle_time=0.0, limit=limit)
        fetcher = GatheringFetcher(reader, gather)
        batches: list[RecordBatch] = []
        for _ in range(2 * total // limit + 2):  # a bound: a lost record must not hang here
            if sum(len(b.records) for b in batches) >= total:
                break
            batches.append(await fetcher.next_batch())
        after = await fetcher.next_batch()
        await fetcher.close()
    got = [r for b in batches for r in b.records]
    assert [r.sequence_number for r in got] == seqs
    assert [r.data for r in got] == data
    assert [len(b.records) for b in batches] == expected_sizes(total, limit, gather)
    assert len(batches) < -(-total // limit)  # fewer deliveries than reads
    assert not after.records  # caught up: nothing more, nothing twice
    assert reader.metrics().get_records_calls >= -(-total // limit)


class Scripted:
    """A fetcher returning prepared batches; read number ``hold_at`` (and those after it)
    waits until ``gate`` is set."""

    def __init__(self, batches: list[RecordBatch], hold_at: int | None = None) -> None:
        self.batches = batches
        self.gate = asyncio.Event()
        self.gate.set()
        self.reads = 0
        self.hold_at = hold_at

    async def next_batch(self) -> RecordBatch:
        if self.reads + 1 == self.hold_at:
            self.gate.clear()
            self.hold_at = None
        await self.gate.wait()
        self.reads += 1
        return self.batches.pop(0) if self.batches else RecordBatch("s", ())

    def metrics(self) -> ReaderMetrics:
        return ReaderMetrics("s", 0, 0, self.reads, 0, 0, None)

    async def close(self) -> None:
        pass


def records(*seqs: int) -> tuple[KinesisRecord, ...]:
    return tuple(KinesisRecord(b"x", "k", str(s)) for s in seqs)


async def test_a_cancelled_read_keeps_what_it_gathered() -> None:
    inner = Scripted([
        RecordBatch("s", records(1, 2), millis_behind_latest=500),
        RecordBatch("s", records(3), millis_behind_latest=0),
    ], hold_at=2)  # fmt: skip
    fetcher = GatheringFetcher(inner, 100)
    first = asyncio.create_task(fetcher.next_batch())
    while inner.gate.is_set():  # until the second read waits: cancel the call there
        await asyncio.sleep(0)
    assert inner.reads == 1
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    inner.gate.set()
    got = await fetcher.next_batch()
    assert [r.sequence_number for r in got.records] == ["1", "2", "3"]
    assert got.millis_behind_latest == 0


async def test_a_batch_stops_at_max_bytes_of_payload() -> None:
    big = [RecordBatch("s", (KinesisRecord(b"x" * 1000, "k", str(i)),), millis_behind_latest=9)
           for i in range(5)]  # fmt: skip
    fetcher = GatheringFetcher(Scripted(big), limit=100, max_bytes=2500)
    first = await fetcher.next_batch()
    assert [r.sequence_number for r in first.records] == ["0", "1", "2"]  # 3000 >= 2500


async def test_a_failed_read_returns_what_was_gathered_then_raises() -> None:
    class Failing(Scripted):
        async def next_batch(self) -> RecordBatch:
            if not self.batches:
                raise RuntimeError("the shard is gone")
            return await super().next_batch()

    inner = Failing([RecordBatch("s", records(1, 2), millis_behind_latest=500)])
    fetcher = GatheringFetcher(inner, 100)
    got = await fetcher.next_batch()
    assert [r.sequence_number for r in got.records] == ["1", "2"]
    with pytest.raises(RuntimeError, match="the shard is gone"):
        await fetcher.next_batch()
    with pytest.raises(RuntimeError, match="the shard is gone"):  # no stale error after
        await fetcher.next_batch()


async def test_without_a_reader_rule_the_reported_lag_decides() -> None:
    inner = Scripted([
        RecordBatch("s", records(1), millis_behind_latest=900),
        RecordBatch("s", records(2, 3), millis_behind_latest=10),
        RecordBatch("s", records(4), millis_behind_latest=0),
        RecordBatch("s", records(5), millis_behind_latest=None),
        RecordBatch("s", records(6), millis_behind_latest=70),
        RecordBatch("s", (), millis_behind_latest=70),
        RecordBatch("s", records(7), millis_behind_latest=5),
        RecordBatch("s", records(8), millis_behind_latest=5, shard_ended=True,
                    child_shard_ids=("c",)),
    ])  # fmt: skip
    fetcher = GatheringFetcher(inner, 100)
    got = [await fetcher.next_batch() for _ in range(5)]
    assert [[r.sequence_number for r in b.records] for b in got] == [
        ["1", "2", "3", "4"], ["5"], ["6"], ["7", "8"], []
    ]  # fmt: skip
    assert (got[3].shard_ended, got[3].child_shard_ids) == (True, ("c",))
    assert got[2].millis_behind_latest == 70  # the empty read's lag


@pytest.mark.integration
async def test_a_consumer_gathering_delivers_larger_batches_each_record_once(
    aws_endpoint: AwsEndpoint,
) -> None:
    async with fresh_stream(aws_endpoint, 2, "gathered") as (stream, _):
        client = kinesis_client(aws_endpoint)
        for key in ("a", "b"):  # each key one shard (or both the same): a backlog per shard
            data = [b"%s%d" % (key.encode(), i) for i in range(900)]
            await asyncio.to_thread(put_blocking, client, stream, data, key)
        truth = await asyncio.to_thread(read_stream_blocking, client, stream)
        config = fast_config(stream, max_records=100, gather_records=350)
        journal, sizes = Journal(), []

        class Sizes(RecordingProcessor):
            async def process_records(self, batch: RecordBatch, checkpointer: Checkpointer) -> None:
                sizes.append(len(batch.records))
                await super().process_records(batch, checkpointer)

        consumer = KinesisConsumer(config, aws_endpoint)
        running = asyncio.create_task(consumer.run(lambda: Sizes(journal)))
        try:
            await wait_caught_up(consumer, journal, tips_of(truth))
            await consumer.stop()
            await running
        finally:
            await consumer.stop()
            await drop_table(aws_endpoint, config.app_name)
    expected = {shard: [int(r["SequenceNumber"]) for r in rs] for shard, rs in truth.items() if rs}
    assert journal.by_shard() == expected
    assert sum(sizes) == 1800
    assert max(sizes) > 100  # gathered beyond one read
    assert max(sizes) < 350 + 100  # at most one read past the limit
