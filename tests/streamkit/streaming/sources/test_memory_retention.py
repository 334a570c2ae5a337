"""``MemoryStream(keep_committed=False)``: what a query has committed is dropped, so a
long-running stream holds only the uncommitted appends (the soaks' RSS grew by exactly the
input the default stream keeps), and a restart from the checkpoint still reads on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.errors import ConfigError
from streamkit.streaming.sources import MemoryStream

SCHEMA = pa.schema([("k", pa.int64()), ("v", pa.int64())])
BATCHES = 40


def rows(i: int) -> list[dict[str, int]]:
    """Batch ``i``: keys 0..4, values i*10 + key."""
    return [{"k": k, "v": i * 10 + k} for k in range(5)]


async def test_commits_drop_the_committed_appends() -> None:
    stream = MemoryStream(SCHEMA, partitions=2, keep_committed=False)
    await stream.open(None)
    seen: list[int] = []
    for i in range(BATCHES):
        stream.add_rows(rows(i), partition=i % 2)
        stream.add_rows(rows(i + 1000), partition=0)
        batch = await stream.next_batch(0)
        assert batch is not None
        seen += batch.rows.column("v").to_pylist()
        await stream.commit(batch.end_offsets)
        assert [len(s) for s in stream._segments] == [0, 0]  # the structure that grew
    added = [j for i in range(BATCHES) for j in (i, i + 1000)]
    expected = [j * 10 + k for j in added for k in range(5)]
    assert sorted(seen) == sorted(expected)
    await stream.close()
    with pytest.raises(ConfigError, match="dropped when committed"):
        await stream.open(None)
    await stream.open({"0": str(BATCHES // 2 * 5 + BATCHES * 5), "1": str(BATCHES // 2 * 5)})
    assert await stream.next_batch(0) is None


async def test_uncommitted_appends_are_kept_and_one_query_at_a_time() -> None:
    stream = MemoryStream(SCHEMA, keep_committed=False)
    assert stream.reader() is stream
    with pytest.raises(ConfigError, match="one query at a time"):
        stream.reader()
    await stream.open(None)
    stream.add_rows(rows(0))
    first = await stream.next_batch(0)
    assert first is not None
    stream.add_rows(rows(1))
    await stream.commit(first.end_offsets)
    assert len(stream._segments[0]) == 1  # rows(1): not committed yet
    default = MemoryStream(SCHEMA)
    await default.open(None)
    for i in range(3):
        default.add_rows(rows(i))
        batch = await default.next_batch(0)
        assert batch is not None
        await default.commit(batch.end_offsets)
    assert len(default._segments[0]) == 3  # the default keeps everything for replays


def test_a_checkpointed_query_keeps_no_committed_input_and_restarts(tmp_path: Path) -> None:
    events = sk.read_stream.memory(SCHEMA, keep_committed=False)
    stream = events.stream
    totals = events.group_by("k").agg(sk.sum("v").alias("s"))
    got: dict[int, int] = {}

    def collect(frame: sk.DataFrame, batch_id: int) -> None:
        for row in frame.to_arrow().to_pylist():
            got[row["k"]] = row["s"]

    def start() -> Any:
        writer = totals.write_stream.output_mode("update").checkpoint(str(tmp_path / "ck"))
        return writer.foreach_batch(collect).start()

    q = start()
    for i in range(BATCHES):
        stream.add_rows(rows(i))
        q.process_all_available(timeout=120)
        assert len(stream._segments[0]) <= 1
    q.stop()
    stream.add_rows(rows(BATCHES))  # added while stopped: read after the restart
    q = start()
    q.process_all_available(timeout=120)
    q.stop()
    assert len(stream._segments[0]) <= 1
    expected = {k: sum(i * 10 + k for i in range(BATCHES + 1)) for k in range(5)}
    assert got == expected
