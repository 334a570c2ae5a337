"""An acknowledging source end to end (MemoryQueue, SQS-like): at-least-once across
simulated crashes, the ack only after the sink and ``commits/N``, ``available_now``
refused at start, and the checkpoint holding no source offsets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.streaming.checkpoint import CheckpointLog
from streamkit.streaming.checkpoint_store import LocalCheckpointStore
from streamkit.streaming.contracts import (
    AcknowledgingSource,
    AvailableNowUnsupportedError,
    Guarantee,
    SourceKindError,
)
from streamkit.streaming.query import StreamingQuery, StreamingQueryError
from streamkit.streaming.sinks import MemorySink
from streamkit.streaming.sources import MemoryQueue, MemoryStream, Receipt
from streamkit.streaming.table import Retention, UnboundedTable
from streamkit.streaming.trigger import Trigger

SCHEMA = pa.schema([("id", pa.int64()), ("k", pa.string())])


def rows(first: int, last: int) -> list[dict[str, object]]:
    return [{"id": i, "k": f"k{i % 2}"} for i in range(first, last)]


def counts(ids: range, times: int = 1) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in ids:
        out[f"k{i % 2}"] = out.get(f"k{i % 2}", 0) + times
    return out


def per_key(df: sk.DataFrame) -> sk.DataFrame:
    return df.group_by("k").agg(sk.count().alias("n"))


class Killed(Exception):
    """The process dies here."""


class KillingStore(LocalCheckpointStore):
    """A real local store; while ``kill_commit`` is set, the process "dies" when it is
    about to write ``commits/N`` (the sink and ``state/N`` already have batch N)."""

    kill_commit = False

    def write_bytes(self, relative_path: str, data: bytes) -> None:
        if self.kill_commit and relative_path.startswith("commits/"):
            raise Killed(f"killed before {relative_path}")
        super().write_bytes(relative_path, data)


class RecordingSink(MemorySink):
    """A memory sink (complete mode) that remembers the batch ids it received, in order."""

    guarantee: ClassVar[Guarantee] = Guarantee.EXACTLY_ONCE

    def __init__(self, name: str) -> None:
        super().__init__(name, mode="complete")
        self.batch_ids: list[int] = []

    async def add_batch(self, batch_id: int, table: pa.Table) -> None:
        await super().add_batch(batch_id, table)
        self.batch_ids.append(batch_id)


def start(
    queue: MemoryQueue,
    store: LocalCheckpointStore,
    sink: MemorySink,
    trigger: Trigger | None = None,
) -> StreamingQuery:
    """``group_by("k").count()`` in complete mode over ``queue``, checkpointed in ``store``."""
    return StreamingQuery(
        plan=per_key(sk.read_stream.source(queue)).plan,
        source=queue,
        sink=sink,
        mode="complete",
        trigger=trigger or Trigger.processing_time(0),
        store=store,
        table=UnboundedTable(SCHEMA, Retention.unbounded()),
    ).start()


def result(sink: MemorySink) -> dict[str, int]:
    table = sink.table()
    return dict(zip(table.column("k").to_pylist(), table.column("n").to_pylist(), strict=True))


def crash(query: StreamingQuery) -> None:
    with pytest.raises(StreamingQueryError) as info:
        query.await_termination(10)
    assert isinstance(info.value.__cause__, Killed)


def test_a_memory_queue_is_an_acknowledging_source(tmp_path: Path) -> None:
    source: AcknowledgingSource[Receipt] = MemoryQueue(SCHEMA)
    store = LocalCheckpointStore(str(tmp_path / "ck"))
    query = start(MemoryQueue(SCHEMA), store, MemorySink("kind"))
    query.stop()
    assert query.source_kind == "acknowledging"
    assert source.schema == SCHEMA


def test_rows_handed_out_before_a_crash_come_again_and_count_once(tmp_path: Path) -> None:
    queue = MemoryQueue(SCHEMA)
    queue.add_rows(rows(0, 6))
    store = KillingStore(tmp_path / "ck")
    store.kill_commit = True
    crash(start(queue, store, MemorySink("ack_crash_1")))
    assert (queue.acked, queue.in_flight, queue.visible) == (0, 6, 0)  # handed out, not acked

    store.kill_commit = False
    sink = MemorySink("ack_crash_1", mode="complete")
    query = start(queue, store, sink)
    query.process_all_available(10)
    query.stop()
    assert result(sink) == counts(range(6))  # batch 0 re-ran with the same rows: once each
    assert [p.batch_id for p in query.recent_progress] == [0]
    assert (queue.redelivered, queue.acked, queue.in_flight, queue.visible) == (6, 6, 0, 0)


def test_acked_rows_never_come_back(tmp_path: Path) -> None:
    queue = MemoryQueue(SCHEMA)
    store = KillingStore(tmp_path / "ck")
    query = start(queue, store, MemorySink("ack_never"))
    queue.add_rows(rows(0, 4))
    query.process_all_available(10)
    assert queue.acked == 4
    store.kill_commit = True
    queue.add_rows(rows(4, 6))
    crash(query)

    store.kill_commit = False
    sink = MemorySink("ack_never", mode="complete")
    again = start(queue, store, sink)
    again.process_all_available(10)
    again.stop()
    assert sorted(again.table.to_frame().to_arrow().column("id").to_pylist()) == [4, 5]
    assert result(sink) == counts(range(6))
    assert queue.acked == 6


class WatchedQueue(MemoryQueue):
    """Notes, at each ack, the latest committed batch and the batches the sink has."""

    def __init__(self, store: LocalCheckpointStore, sink: RecordingSink) -> None:
        super().__init__(SCHEMA)
        self.log, self.sink = CheckpointLog(store), sink
        self.seen: list[tuple[int, int | None, list[int]]] = []

    async def ack(self, token: Receipt) -> None:
        latest = self.log.latest()
        committed = latest.batch_id if latest is not None else None
        self.seen.append((token.number, committed, list(self.sink.batch_ids)))
        await super().ack(token)


def test_ack_comes_only_after_the_sink_and_the_commit(tmp_path: Path) -> None:
    store = LocalCheckpointStore(tmp_path / "ck")
    sink = RecordingSink("ack_order")
    queue = WatchedQueue(store, sink)
    query = start(queue, store, sink)
    for lo in (0, 3, 6):
        queue.add_rows(rows(lo, lo + 3))
        query.process_all_available(10)
    query.stop()
    assert [number for number, _, _ in queue.seen] == [0, 1, 2]
    for number, committed, delivered in queue.seen:  # batch n carries receipt n here
        assert committed == number, f"receipt {number} acked before commits/{number}"
        assert delivered[-1] == number, f"receipt {number} acked before the sink had it"
    assert result(sink) == counts(range(9))


def test_commit_then_crash_before_the_ack_delivers_again(tmp_path: Path) -> None:
    """At-least-once, not exactly-once: the rows of a committed batch whose ack was lost
    are processed a second time, as a new batch."""

    class LosesFirstAck(MemoryQueue):
        lost = False

        async def ack(self, token: Receipt) -> None:
            if not self.lost:
                self.lost = True
                raise Killed("killed after commits/0, before the ack")
            await super().ack(token)

    queue = LosesFirstAck(SCHEMA)
    queue.add_rows(rows(0, 4))
    store = LocalCheckpointStore(tmp_path / "ck")
    crash(start(queue, store, MemorySink("ack_lost")))
    sink = MemorySink("ack_lost", mode="complete")
    query = start(queue, store, sink)
    query.process_all_available(10)
    query.stop()
    assert result(sink) == counts(range(4), times=2)
    assert [p.batch_id for p in query.recent_progress] == [1]


def test_available_now_is_refused_at_start_with_what_to_use() -> None:
    queue = MemoryQueue(SCHEMA)
    queue.add_rows(rows(0, 2))
    writer = per_key(sk.read_stream.source(queue)).write_stream.output_mode("complete")
    with pytest.raises(AvailableNowUnsupportedError) as info:
        writer.trigger(available_now=True).memory("ack_now").start()
    message = str(info.value)
    assert "MemoryQueue is an acknowledging source" in message
    assert "processing_time" in message
    assert "once=True" in message
    assert isinstance(info.value, SourceKindError)
    assert (queue.visible, queue.in_flight) == (2, 0)  # nothing was handed out


def test_once_reads_one_batch_and_acks_it(tmp_path: Path) -> None:
    queue = MemoryQueue(SCHEMA, max_messages_per_batch=2)
    queue.add_rows(rows(0, 5))
    sink = MemorySink("ack_once", mode="complete")
    query = start(queue, LocalCheckpointStore(tmp_path / "ck"), sink, Trigger.once())
    assert query.await_termination(10)
    assert result(sink) == counts(range(2))
    assert (queue.acked, queue.in_flight, queue.visible) == (2, 0, 3)


def test_the_checkpoint_records_no_source_offsets(tmp_path: Path) -> None:
    queue = MemoryQueue(SCHEMA)
    queue.add_rows(rows(0, 3))
    store = LocalCheckpointStore(tmp_path / "ck")
    query = start(queue, store, MemorySink("ack_offsets"))
    query.process_all_available(10)
    query.stop()
    latest = CheckpointLog(store).latest()
    assert latest is not None
    assert latest.offsets == {}
    offsets_file = store.read_bytes("offsets/000000000000")
    assert offsets_file is not None
    assert json.loads(offsets_file)["offsets"] == {}


def test_a_replayable_checkpoint_is_refused(tmp_path: Path) -> None:
    ck = str(tmp_path / "ck")
    stream = MemoryStream(SCHEMA)
    stream.add_rows(rows(0, 2))
    first = per_key(sk.read_stream.source(stream)).write_stream.output_mode("complete")
    replay = first.checkpoint(ck).memory("ack_mixed").start()
    replay.process_all_available(10)
    replay.stop()
    query = start(MemoryQueue(SCHEMA), LocalCheckpointStore(ck), MemorySink("ack_mixed"))
    with pytest.raises(StreamingQueryError, match="acknowledging source MemoryQueue") as info:
        query.await_termination(10)
    assert isinstance(info.value.__cause__, SourceKindError)
    assert "written by a replayable source" in str(info.value.__cause__)


def test_bad_records_are_dead_letters_and_acked_too(tmp_path: Path) -> None:
    queue = MemoryQueue(SCHEMA)
    queue.add_records([b'{"id": 1, "k": "k1"}', b"not json", b'{"id": 2, "k": "k0"}'])
    sink = MemorySink("ack_dead", mode="complete")
    query = start(queue, LocalCheckpointStore(tmp_path / "ck"), sink)
    query.process_all_available(10)
    query.stop()
    assert result(sink) == {"k0": 1, "k1": 1}
    dead = query.dead_letters
    assert dead is not None
    assert dead.column("raw").to_pylist() == [b"not json"]
    assert dead.column("position").to_pylist() == ["1"]
    assert queue.acked == 3


def test_the_public_api_runs_a_queue_and_process_all_available_waits_for_the_acks() -> None:
    queue = MemoryQueue(SCHEMA, max_messages_per_batch=4)
    df = sk.read_stream.source(queue)
    query = per_key(df).write_stream.output_mode("complete").memory("ack_api").start()
    try:
        queue.add_rows(rows(0, 10))
        query.process_all_available(10)  # three batches, all acknowledged
        assert (queue.acked, queue.in_flight, queue.visible) == (10, 0, 0)
        queue.add_rows(rows(10, 11))
        query.process_all_available(10)
    finally:
        query.stop()
    assert query.source_kind == "acknowledging"
    table = sk.memory_table("ack_api")
    got = dict(zip(table.column("k").to_pylist(), table.column("n").to_pylist(), strict=True))
    assert got == counts(range(11))
    assert queue.acked == 11
