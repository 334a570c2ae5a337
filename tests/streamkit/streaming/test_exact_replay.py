"""A batch that ran but did not commit is re-run after a restart with exactly the records it
had (Spark's offset log), when the source can re-read a range (``BoundedSource``); a sink
that needs that is refused behind a source that cannot."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.errors import PlanError
from streamkit.streaming.contracts import BoundedSource, Guarantee
from streamkit.streaming.query import StreamingQueryError
from streamkit.streaming.sources.files import FileStreamSource
from streamkit.streaming.sources.memory import MemoryStream

SCHEMA = pa.schema([("id", pa.int64())])


class CrashAfterSink:
    """Keeps every batch's ids; raises right after keeping batch ``crash_on`` (as a process
    killed between the sink and ``commits/N`` would leave it)."""

    guarantee: ClassVar[Guarantee] = Guarantee.AT_LEAST_ONCE
    requires_exact_replay: ClassVar[bool] = True

    def __init__(self, crash_on: int | None = None) -> None:
        self.crash_on = crash_on
        self.batches: dict[int, list[int]] = {}

    async def add_batch(self, batch_id: int, table: pa.Table) -> None:
        self.batches[batch_id] = sorted(table.column("id").to_pylist())
        if batch_id == self.crash_on:
            raise RuntimeError(f"crash after the sink took batch {batch_id}")

    async def close(self) -> None:
        pass


def run(stream: MemoryStream, sink: CrashAfterSink, checkpoint: Path) -> None:
    df = sk.read_stream.source(stream)
    q = df.write_stream.checkpoint(str(checkpoint)).to(sink).start()
    try:
        q.process_all_available(timeout=30)
    finally:
        q.stop()


def test_a_rerun_batch_holds_exactly_its_first_records(tmp_path: Path) -> None:
    stream = MemoryStream(SCHEMA, partitions=2, max_records_per_batch=3)
    assert isinstance(stream, BoundedSource)
    for i in range(10):
        stream.add_rows([{"id": i}], partition=i % 2)
    first = CrashAfterSink(crash_on=1)
    with pytest.raises(StreamingQueryError, match="crash after the sink took batch 1"):
        run(stream, first, tmp_path / "ck")
    # By hand: partitions hold ids 0,2,4,6,8 and 1,3,5,7,9; three per partition per batch.
    assert first.batches == {0: [0, 1, 2, 3, 4, 5], 1: [6, 7, 8, 9]}
    for i in range(10, 20):  # more data arrives before the restart
        stream.add_rows([{"id": i}], partition=i % 2)
    second = CrashAfterSink()
    run(stream, second, tmp_path / "ck")
    assert second.batches[1] == first.batches[1], "batch 1 must be re-run with its own rows"
    assert 0 not in second.batches
    everything = first.batches[0] + [i for b in second.batches.values() for i in b]
    assert sorted(everything) == list(range(20))


def test_a_crash_in_the_very_first_batch_replays_it_too(tmp_path: Path) -> None:
    stream = MemoryStream(SCHEMA, max_records_per_batch=4)
    stream.add_rows([{"id": i} for i in range(3)])
    first = CrashAfterSink(crash_on=0)
    with pytest.raises(StreamingQueryError):
        run(stream, first, tmp_path / "ck")
    stream.add_rows([{"id": i} for i in range(3, 8)])
    second = CrashAfterSink()
    run(stream, second, tmp_path / "ck")
    assert second.batches[0] == [0, 1, 2]
    assert sorted(i for b in second.batches.values() for i in b) == list(range(8))


def test_a_sink_needing_exact_replay_is_refused_behind_a_source_without_it(
    tmp_path: Path,
) -> None:
    (tmp_path / "in").mkdir()
    files = FileStreamSource(str(tmp_path / "in"), format="json", schema=SCHEMA)
    assert not isinstance(files, BoundedSource)
    df = sk.read_stream.source(files)
    with pytest.raises(PlanError, match="cannot re-read"):
        df.write_stream.checkpoint(str(tmp_path / "ck")).to(CrashAfterSink()).start()
