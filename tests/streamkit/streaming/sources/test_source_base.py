"""SourceBase: the bounded record of commits every source keeps, and failure propagation
(a background error stored and raised, typed, on the engine's next call)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pyarrow as pa
import pytest

from streamkit.streaming.sources import (
    FileStreamSource,
    MemoryQueue,
    MemoryStream,
    SourceBase,
    SourceFailedError,
)

SCHEMA = pa.schema([("id", pa.int64())])


async def test_memory_and_file_sources_keep_only_the_last_commits(tmp_path: Path) -> None:
    for source in (MemoryStream(SCHEMA), FileStreamSource(str(tmp_path), schema=SCHEMA)):
        for i in range(SourceBase.COMMITS_KEPT + 4):
            await source.commit({"0": str(i)})
        assert len(source.commits) == SourceBase.COMMITS_KEPT
        assert source.commits[0] == {"0": "4"}
        assert source.committed == {"0": str(SourceBase.COMMITS_KEPT + 3)}


class Ticker(SourceBase[int]):
    """A source whose background task fails: the error must surface on the next call."""

    def __init__(self) -> None:
        super().__init__()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self._background())

    async def _background(self) -> None:
        try:
            await asyncio.sleep(0)
            raise ConnectionResetError("peer went away")
        except Exception as exc:
            self.fail(exc)

    async def next_value(self) -> int:
        self.raise_if_failed()
        return 1


async def test_a_background_error_is_raised_typed_on_the_next_call() -> None:
    source = Ticker()
    assert await source.next_value() == 1
    await source.start()
    assert source.task is not None
    await source.task
    with pytest.raises(SourceFailedError, match="Ticker failed: peer went away") as info:
        await source.next_value()
    assert isinstance(info.value.__cause__, ConnectionResetError)
    source.fail(RuntimeError("a consequence"))  # logged, the first error stays
    assert isinstance(source.failure, ConnectionResetError)
    source.clear_failure()
    assert await source.next_value() == 1


async def test_the_memory_sources_raise_a_stored_failure() -> None:
    stream, queue = MemoryStream(SCHEMA), MemoryQueue(SCHEMA)
    await stream.open(None)
    await queue.open()
    for source in (stream, queue):
        source.fail(OSError("disk gone"))
    with pytest.raises(SourceFailedError, match="MemoryStream failed: disk gone"):
        await stream.next_batch(0)
    with pytest.raises(SourceFailedError, match="MemoryQueue failed: disk gone"):
        await queue.next_batch(0)
    await queue.open()  # a new session starts clean
    assert await queue.next_batch(0) is None


async def test_a_kafka_rebalance_error_is_raised_on_the_next_call() -> None:
    """aiokafka only logs an error raised in a rebalance listener; the source stores it."""
    kafka = pytest.importorskip("streamkit_kafka")
    from aiokafka import TopicPartition

    source = kafka.KafkaStreamSource("localhost:1", "t", "g", schema=SCHEMA)
    await source._assigned_now({TopicPartition("t", 0)})  # not open: seeking fails
    assert source._first_assignment.is_set()  # open() stops waiting and raises it
    with pytest.raises(kafka.KafkaSourceError, match="Kafka source") as info:
        await source.next_batch(0)
    assert isinstance(info.value.__cause__, kafka.KafkaSourceError)
    for _ in range(SourceBase.COMMITS_KEPT + 1):
        source.record_commit({"t-0": "1"})
    assert len(source.commits) == SourceBase.COMMITS_KEPT
