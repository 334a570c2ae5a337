"""The shard task reads through any RecordFetcher, not only the polling one.

:class:`ReplayFetcher` is a second implementation of the contract, defined here: it
replays batches from memory (resuming after its start position) and then reports the end
of the shard, or, ``endless``, waits for more like a caught-up push subscription. The lease
store is the real in-memory one; nothing is mocked.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from streamkit_kinesis.consumer import BaseRecordProcessor, ConsumerConfig, ShardOutcome
from streamkit_kinesis.consumer.errors import ShardGoneError
from streamkit_kinesis.consumer.shard_task import ShardCheckpointer, ShardTask
from streamkit_kinesis.errors import KinesisError
from streamkit_kinesis.leases import HeldLeases, InMemoryLeaseStore, Lease
from streamkit_kinesis.retrieval import ReaderMetrics
from streamkit_kinesis.types import (
    SHARD_END,
    TRIM_HORIZON,
    ExtendedSequenceNumber,
    HashKeyRange,
    KinesisRecord,
    RecordBatch,
    ShardInfo,
)

if TYPE_CHECKING:
    from datetime import datetime

    from streamkit_kinesis.consumer.shard_task import ShardHost
    from streamkit_kinesis.leases import Checkpointer
    from streamkit_kinesis.retrieval import RecordFetcher

SHARD = ShardInfo("shardId-000000000000", (), HashKeyRange(0, 2**128 - 1), "100")
CHILDREN = ("shardId-000000000001", "shardId-000000000002")


def record(n: int) -> KinesisRecord:
    return KinesisRecord(f"r{n}".encode(), "k", str(100 + n))


def batches(*sizes: int) -> list[RecordBatch]:
    """Batches of consecutive records; a size 0 is an empty, caught-up batch."""
    out, n = [], 0
    for size in sizes:
        out.append(RecordBatch(SHARD.shard_id, tuple(record(n + i) for i in range(size)), 0))
        n += size
    return out


class ReplayFetcher:
    """A RecordFetcher over batches in memory: records after ``start``, then SHARD_END."""

    def __init__(
        self, start: ExtendedSequenceNumber | datetime, data: list[RecordBatch], endless: bool
    ) -> None:
        floor = -1
        if isinstance(start, ExtendedSequenceNumber) and not start.is_sentinel:
            floor = int(start.sequence_number)
        self._batches = [
            RecordBatch(
                b.shard_id,
                tuple(r for r in b.records if int(r.sequence_number) > floor),
                b.millis_behind_latest,
            )
            for b in data
        ]
        self._endless = endless
        self.delivered = 0
        self.closed = False
        self.fail_after: int | None = None
        """Raise a not-found error once this many records were delivered."""

    async def next_batch(self) -> RecordBatch:
        assert not self.closed, "next_batch after close"
        if self.fail_after is not None and self.delivered >= self.fail_after:
            raise KinesisError("ResourceNotFoundException: shard gone")
        if self._batches:
            batch = self._batches.pop(0)
            self.delivered += len(batch.records)
            return batch
        if self._endless:
            await asyncio.Event().wait()  # caught up: nothing is ever pushed
        return RecordBatch(SHARD.shard_id, (), 0, shard_ended=True, child_shard_ids=CHILDREN)

    def metrics(self) -> ReaderMetrics:
        return ReaderMetrics(SHARD.shard_id, self.delivered, 0, 0, 0, 0, 0)

    async def close(self) -> None:
        self.closed = True


class ReplayFetchers:
    """The FetcherFactory of ReplayFetcher; remembers what it built."""

    def __init__(
        self, data: list[RecordBatch], *, endless: bool = False, fail_after: int | None = None
    ) -> None:
        self._data = data
        self._endless = endless
        self._fail_after = fail_after
        self.built: list[tuple[str, ExtendedSequenceNumber | datetime, ReplayFetcher]] = []

    def __call__(self, shard: ShardInfo, start: ExtendedSequenceNumber | datetime) -> ReplayFetcher:
        fetcher = ReplayFetcher(start, self._data, self._endless)
        fetcher.fail_after = self._fail_after
        self.built.append((shard.shard_id, start, fetcher))
        return fetcher


class Host:
    """A ShardHost with one shard and no parents; records what the task reports."""

    def __init__(
        self,
        fetchers: ReplayFetchers,
        store: InMemoryLeaseStore | None = None,
        *,
        listed: bool = True,
        vanished: bool = False,
    ) -> None:
        self.config = ConsumerConfig(app_name="app", stream="stream")
        self.fetchers = fetchers
        self.started: list[ExtendedSequenceNumber] = []
        self.finished: list[tuple[str, tuple[str, ...]]] = []
        self.ending: list[tuple[str, tuple[str, ...], ExtendedSequenceNumber | None]] = []
        """(shard, children, the stored checkpoint when the children were created)."""
        self.store = store
        self.listed = listed
        self.vanished = vanished
        self.asked: list[BaseException] = []

    async def shard_info(self, shard_id: str) -> ShardInfo:
        assert shard_id == SHARD.shard_id
        if not self.listed:
            raise ShardGoneError("stream", shard_id)
        return SHARD

    async def shard_vanished(self, shard_id: str, error: BaseException) -> bool:
        self.asked.append(error)
        return self.vanished

    async def shard_ending(
        self, shard_id: str, child_shard_ids: tuple[str, ...], child_shards: object = ()
    ) -> None:
        stored = None if self.store is None else await self.store.get_lease(shard_id)
        self.ending.append((shard_id, child_shard_ids, stored.checkpoint if stored else None))

    async def parents_done(self, lease: Lease) -> bool:
        return True

    async def wait_for_parent_progress(self, stop: asyncio.Event) -> None:
        raise AssertionError("a shard without parents never waits for them")

    def shard_started(self, shard_id: str, start: ExtendedSequenceNumber) -> None:
        self.started.append(start)

    async def shard_finished(self, shard_id: str, child_shard_ids: tuple[str, ...]) -> None:
        self.finished.append((shard_id, child_shard_ids))


class Recorder(BaseRecordProcessor):
    """Keeps every record and checkpoints after each batch."""

    def __init__(self) -> None:
        self.records: list[KinesisRecord] = []
        self.calls: list[str] = []
        self.seen = asyncio.Event()

    async def process_records(self, batch: RecordBatch, checkpointer: Checkpointer) -> None:
        self.records.extend(batch.records)
        self.calls.append("process")
        await checkpointer.checkpoint()
        self.seen.set()

    async def initialize(self, shard_id: str, start: ExtendedSequenceNumber) -> None:
        self.calls.append("init")

    async def shard_ended(self, shard_id: str, checkpointer: Checkpointer) -> None:
        self.calls.append("ended")
        await super().shard_ended(shard_id, checkpointer)

    async def shutdown_requested(self, shard_id: str, checkpointer: Checkpointer) -> None:
        self.calls.append("shutdown")
        await super().shutdown_requested(shard_id, checkpointer)


async def held_lease(checkpoint: ExtendedSequenceNumber) -> tuple[InMemoryLeaseStore, HeldLeases]:
    store = InMemoryLeaseStore()
    await store.create_table_if_not_exists()
    created = await store.create_lease_if_not_exists(Lease.for_shard(SHARD, checkpoint))
    held = HeldLeases()
    held.gained(await store.take_lease(created, "worker-1"))
    return store, held


def start_task(
    host: ShardHost, store: InMemoryLeaseStore, held: HeldLeases, processor: Recorder
) -> ShardTask:
    lease = held.get(SHARD.shard_id)
    assert lease is not None
    checkpointer = ShardCheckpointer(store, held, SHARD.shard_id)
    return ShardTask(host, lease, checkpointer, lambda: processor)


async def test_a_replayed_shard_is_delivered_in_order_then_ended_and_checkpointed() -> None:
    fetchers = ReplayFetchers(batches(3, 0, 2, 4))
    store, held = await held_lease(TRIM_HORIZON)
    host = Host(fetchers, store)
    processor = Recorder()
    task = start_task(host, store, held, processor)

    assert await asyncio.wait_for(task.task, 5) is ShardOutcome.ENDED
    assert processor.records == [record(n) for n in range(9)]
    assert processor.calls == ["init"] + ["process"] * 3 + ["ended"]  # empty batch skipped
    # the children's leases are created before SHARD_END is checkpointed (KCL's order)
    assert host.ending == [
        (SHARD.shard_id, CHILDREN, ExtendedSequenceNumber(record(8).sequence_number))
    ]
    stored = await store.get_lease(SHARD.shard_id)
    assert stored is not None
    assert stored.checkpoint == SHARD_END
    assert host.started == [TRIM_HORIZON]
    assert host.finished == [(SHARD.shard_id, CHILDREN)]
    [(shard_id, start, fetcher)] = fetchers.built
    assert (shard_id, start, fetcher.closed) == (SHARD.shard_id, TRIM_HORIZON, True)
    metrics = task.reader_metrics()
    assert metrics is not None
    assert metrics.records == 9


async def test_the_fetcher_starts_at_the_lease_checkpoint() -> None:
    fetchers = ReplayFetchers(batches(3, 3))
    store, held = await held_lease(ExtendedSequenceNumber(record(3).sequence_number))
    processor = Recorder()
    task = start_task(Host(fetchers), store, held, processor)

    assert await asyncio.wait_for(task.task, 5) is ShardOutcome.ENDED
    assert processor.records == [record(4), record(5)]
    assert fetchers.built[0][1] == ExtendedSequenceNumber(record(3).sequence_number)


async def test_shutdown_abandons_a_waiting_fetcher_and_closes_it() -> None:
    fetchers = ReplayFetchers(batches(2), endless=True)
    store, held = await held_lease(TRIM_HORIZON)
    processor = Recorder()
    task = start_task(Host(fetchers), store, held, processor)
    await asyncio.wait_for(processor.seen.wait(), 5)
    await asyncio.sleep(0.01)  # the task now waits in next_batch for a push that never comes

    task.request_shutdown()
    assert await asyncio.wait_for(task.task, 5) is ShardOutcome.SHUTDOWN
    assert processor.calls == ["init", "process", "shutdown"]
    stored = await store.get_lease(SHARD.shard_id)
    assert stored is not None
    assert stored.checkpoint == ExtendedSequenceNumber(record(1).sequence_number)
    assert fetchers.built[0][2].closed


class TipRecorder(Recorder):
    """A Recorder that also hears of reads that found nothing at the shard's tip."""

    async def at_tip(self, shard_id: str) -> None:
        assert shard_id == SHARD.shard_id
        self.calls.append("tip")


async def test_at_tip_is_called_after_each_empty_read_at_the_tip_and_only_then() -> None:
    """Between batches of records, a processor with ``at_tip`` hears of each read that
    found nothing and reported no lag (MillisBehindLatest 0); an empty read behind the tip
    (Kinesis returns those in a sparse shard) or one whose lag is not reported is not the
    tip. A processor without the method is never asked."""
    empty = (
        RecordBatch(SHARD.shard_id, (), 1000),  # behind: not the tip
        RecordBatch(SHARD.shard_id, (), None),  # lag not reported: not known to be the tip
        RecordBatch(SHARD.shard_id, (), 0),
    )
    first, second = batches(3, 2)
    fetchers = ReplayFetchers([first, *empty, second, empty[2], empty[2]])
    store, held = await held_lease(TRIM_HORIZON)
    processor = TipRecorder()
    task = start_task(Host(fetchers), store, held, processor)
    assert await asyncio.wait_for(task.task, 5) is ShardOutcome.ENDED
    assert processor.calls == ["init", "process", "tip", "process", "tip", "tip", "ended"]
    assert processor.records == [record(n) for n in range(5)]


def test_replay_fetcher_satisfies_the_contract() -> None:
    fetcher: RecordFetcher = ReplayFetcher(TRIM_HORIZON, [], endless=False)
    assert fetcher.metrics().shard_id == SHARD.shard_id


async def test_a_shard_that_vanishes_mid_read_is_ended_not_fatal() -> None:
    fetchers = ReplayFetchers(batches(3, 2, 4), fail_after=5)
    store, held = await held_lease(TRIM_HORIZON)
    host = Host(fetchers, store, vanished=True)
    processor = Recorder()
    task = start_task(host, store, held, processor)

    assert await asyncio.wait_for(task.task, 5) is ShardOutcome.ENDED
    assert processor.records == [record(n) for n in range(5)]
    assert processor.calls == ["init", "process", "process", "ended"]
    assert [str(e) for e in host.asked] == ["ResourceNotFoundException: shard gone"]
    stored = await store.get_lease(SHARD.shard_id)
    assert stored is not None
    assert stored.checkpoint == SHARD_END
    assert host.ending == [(SHARD.shard_id, (), ExtendedSequenceNumber(record(4).sequence_number))]
    assert host.finished == [(SHARD.shard_id, ())]


async def test_an_error_the_host_does_not_call_vanished_still_stops_the_shard() -> None:
    fetchers = ReplayFetchers(batches(3, 2), fail_after=3)
    store, held = await held_lease(TRIM_HORIZON)
    host = Host(fetchers, store, vanished=False)
    task = start_task(host, store, held, Recorder())

    with pytest.raises(KinesisError, match="shard gone"):
        await asyncio.wait_for(task.task, 5)
    stored = await store.get_lease(SHARD.shard_id)
    assert stored is not None
    assert stored.checkpoint == ExtendedSequenceNumber(record(2).sequence_number)
    assert host.finished == []


async def test_a_lease_whose_shard_is_not_listed_is_ended_without_reading() -> None:
    fetchers = ReplayFetchers(batches(3))
    store, held = await held_lease(ExtendedSequenceNumber("150"))
    host = Host(fetchers, store, listed=False, vanished=True)
    processor = Recorder()
    task = start_task(host, store, held, processor)

    assert await asyncio.wait_for(task.task, 5) is ShardOutcome.ENDED
    assert fetchers.built == []  # nothing to read from
    assert processor.calls == ["init", "ended"]
    assert [type(e) for e in host.asked] == [ShardGoneError]
    stored = await store.get_lease(SHARD.shard_id)
    assert stored is not None
    assert stored.checkpoint == SHARD_END
