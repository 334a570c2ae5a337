"""Two queries started on one memory stream each read every record (a read position per
query, as Spark's MemoryStream keeps one per query's offsets)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pyarrow as pa

import streamkit as sk
from streamkit.streaming.sources.memory import MemoryStream

SCHEMA = pa.schema([("action", pa.string()), ("value", pa.int64())])


def _rows(lo: int, hi: int) -> pa.Table:
    return pa.table(
        {"action": [f"a{i % 3}" for i in range(lo, hi)], "value": list(range(lo, hi))},
        schema=SCHEMA,
    )


def test_two_queries_on_one_memory_stream_each_count_every_row() -> None:
    stream = MemoryStream(SCHEMA, partitions=2)
    df = sk.read_stream.source(stream)
    by_action = df.group_by("action").agg(sk.count().alias("n"))
    total = df.group_by().agg(sk.sum("value").alias("s"))
    first = by_action.write_stream.output_mode("complete").memory("readers_first").start()
    second = total.write_stream.output_mode("complete").memory("readers_second").start()
    try:
        for i, lo in enumerate(range(0, 600, 100)):
            stream.add_rows(_rows(lo, lo + 100), partition=i % 2)
            first.process_all_available()
            second.process_all_available()
    finally:
        first.stop()
        second.stop()
    expected = Counter(f"a{i % 3}" for i in range(600))
    got = sk.memory_table("readers_first").to_pylist()
    assert {r["action"]: r["n"] for r in got} == dict(expected)
    assert sk.memory_table("readers_second").to_pylist() == [{"s": sum(range(600))}]
    assert sum(p.num_input_rows for p in first.recent_progress) == 600
    assert sum(p.num_input_rows for p in second.recent_progress) == 600
    assert stream.committed == {"0": "300", "1": "300"}


def test_readers_share_the_records_and_keep_their_own_positions() -> None:
    async def run() -> None:
        stream = MemoryStream(SCHEMA)
        assert stream.reader() is stream  # the first query reads the stream itself
        reader = stream.reader()
        assert reader is not stream
        stream.add_rows(_rows(0, 5))
        reader.add_rows(_rows(5, 7))  # an append through a reader lands in the shared stream
        await reader.open(None)
        await stream.open({"0": "4"})
        read = await reader.next_batch(0)
        rest = await stream.next_batch(0)
        assert read is not None
        assert rest is not None
        assert read.rows.column("value").to_pylist() == list(range(7))
        assert rest.rows.column("value").to_pylist() == [4, 5, 6]
        assert await reader.next_batch(0) is None
        assert await stream.end_offsets() == await reader.end_offsets() == {"0": "7"}
        await stream.close()
        assert stream.reader() is stream  # released by its query's close

    asyncio.run(run())
