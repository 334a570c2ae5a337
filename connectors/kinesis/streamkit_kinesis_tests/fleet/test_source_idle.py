"""A source task declares its shard idle, and only it: on the consumer's ``at_tip`` calls
(reads that found nothing new at the shard's tip), once ``idle_timeout`` has passed since
the task started or since its last records, it puts an idle marker to every exchange
partition, again every ``idle_timeout`` while the shard stays quiet; never while records
of an exact re-read are held back (they were not emitted yet). The writer here records the
puts (its own put path is tested against Kinesis elsewhere); the clock is injected."""

from __future__ import annotations

from typing import Any, cast

import pyarrow as pa
from streamkit_kinesis.consumer import InitializationInput
from streamkit_kinesis.fleet.source_task import SourceContext, SourceTask
from streamkit_kinesis.types import ExtendedSequenceNumber, RecordBatch

import streamkit as sk
from streamkit.fleet import FleetPlan
from streamkit.fleet.chunk import ChunkHeader, decode_chunk
from streamkit.fleet.member import FleetOptions, FleetSpec

SHARD = "shardId-000000000001"
PARTITIONS = 3
IDLE = 2.0


class Writer:
    """Records each put: the header of every partition's parts, and the source shard."""

    def __init__(self) -> None:
        self.puts: list[list[ChunkHeader]] = []

    async def put_batch(self, parts: list[list[bytes]], source_shard: str) -> list[list[str]]:
        assert source_shard == SHARD
        self.puts.append([decode_chunk(p)[0] for part in parts for p in part])
        return [[] for _ in parts]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _task(writer: Writer, clock: Clock) -> SourceTask:
    empty = pa.table({"k": pa.array([], pa.string()),
                      "t": pa.array([], pa.timestamp("us", "UTC"))})  # fmt: skip
    df = sk.from_arrow(empty).with_watermark("t", "1 minute")
    fleet = FleetPlan.of(df.group_by(sk.window("t", "1 minute"), "k").agg(sk.count()).plan,
                         "append")  # fmt: skip
    spec = FleetSpec(fleet.plan, fleet, "append", "unused", cast("Any", None),
                     FleetOptions(idle_timeout=IDLE), "w1", "q", 1.0)  # fmt: skip
    ctx = SourceContext(spec, cast("Any", None), cast("Any", None), cast("Any", writer),
                        PARTITIONS, lambda _: None, clock=clock)  # fmt: skip
    return SourceTask(ctx)


async def _tip(task: SourceTask, clock: Clock, at: float) -> None:
    clock.now = at
    await task.at_tip(SHARD)


async def test_a_quiet_shard_is_declared_idle_after_idle_timeout_and_again_while_quiet() -> None:
    writer, clock = Writer(), Clock()
    task = _task(writer, clock)  # started at 1000
    await task.initialize_with(InitializationInput(SHARD, ExtendedSequenceNumber("4955"), None, 3))
    [start] = writer.puts
    assert [(h.is_start, h.last) for h in start] == [(True, "4955")] * PARTITIONS
    await _tip(task, clock, 1001.9)  # quiet for 1.9 s: not yet
    assert len(writer.puts) == 1
    await _tip(task, clock, 1002.0)
    assert [(h.is_idle, h.last, h.source) for h in writer.puts[-1]] == [
        (True, "4955", SHARD)
    ] * PARTITIONS
    await _tip(task, clock, 1003.9)  # said 1.9 s ago
    assert len(writer.puts) == 2
    await _tip(task, clock, 1004.0)  # said again every idle_timeout
    assert len(writer.puts) == 3
    assert all(h.is_idle for h in writer.puts[-1])


async def test_records_restart_the_quiet_time() -> None:
    """A batch (here one whose records were all committed already: nothing to emit)
    restarts the count: the shard is idle only ``idle_timeout`` after it."""
    writer, clock = Writer(), Clock()
    task = _task(writer, clock)
    await task.initialize_with(InitializationInput(SHARD, ExtendedSequenceNumber("4955"), None, 3))
    clock.now = 1001.5
    await task.process_records(RecordBatch(SHARD, ()), cast("Any", None))
    await _tip(task, clock, 1003.0)  # 3 s after the start, 1.5 s after the records
    assert len(writer.puts) == 1  # the start markers only
    await _tip(task, clock, 1003.5)
    assert len(writer.puts) == 2
    assert all(h.is_idle for h in writer.puts[-1])


async def test_no_idle_marker_while_an_exact_re_read_is_due() -> None:
    """A task that took over a pending checkpoint holds the re-read range's records until
    its end is reached: its shard is not idle before they were emitted, however quiet."""
    writer, clock = Writer(), Clock()
    task = _task(writer, clock)
    pending = ExtendedSequenceNumber("4977")
    await task.initialize_with(
        InitializationInput(SHARD, ExtendedSequenceNumber("4955"), pending, 3)
    )
    await _tip(task, clock, 1000.0 + 100 * IDLE)
    assert len(writer.puts) == 1  # the start markers only
