"""MemoryStream and FileStreamSource (local directories) against the StreamSource contract."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from streamkit.errors import ConfigError, SchemaError
from streamkit.streaming.contracts import ReplayableSource, SourceBatch
from streamkit.streaming.decode import BadRecordError, RawDecoder
from streamkit.streaming.sources import FileStreamSource, MemoryQueue, MemoryStream

SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("action", pa.string())])


def ids(batch: SourceBatch | None) -> list[int]:
    assert batch is not None
    return list(batch.rows.column("id").to_pylist())


def rows(first: int, last: int) -> list[dict[str, object]]:
    return [{"id": i, "action": "a"} for i in range(first, last)]


# --- MemoryStream ------------------------------------------------------------------


async def test_memory_stream_returns_everything_new_once_with_offsets() -> None:
    stream = MemoryStream(SCHEMA, partitions=2)
    source: ReplayableSource = stream
    await source.open(None)
    stream.add_rows(rows(0, 3), partition=0)
    stream.add_rows(pa.table({"id": [10, 11], "action": ["b", "c"]}), partition=1)
    batch = await source.next_batch(0)
    assert batch is not None
    assert ids(batch) == [0, 1, 2, 10, 11]
    assert batch.rows.schema == SCHEMA
    assert batch.end_offsets == {"0": "3", "1": "2"}
    assert [(p.partition, p.records) for p in batch.partitions] == [("0", 3), ("1", 2)]
    assert await source.next_batch(0) is None
    stream.add_rows(rows(3, 4), partition=0)
    again = await source.next_batch(0)
    assert ids(again) == [3]
    assert again is not None
    assert again.end_offsets == {"0": "4", "1": "2"}


async def test_memory_stream_replays_after_offsets() -> None:
    stream = MemoryStream(SCHEMA, partitions=2)
    stream.add_rows(rows(0, 5), partition=0)
    stream.add_rows(rows(100, 103), partition=1)
    await stream.open({"0": "2", "1": "3"})
    assert ids(await stream.next_batch(0)) == [2, 3, 4]
    await stream.open(None)
    assert ids(await stream.next_batch(0)) == [0, 1, 2, 3, 4, 100, 101, 102]
    with pytest.raises(ConfigError, match="past the end"):
        await stream.open({"0": "9"})
    with pytest.raises(ConfigError, match="partitions this stream lacks"):
        await stream.open({"7": "0"})


async def test_memory_stream_caps_records_per_partition_per_batch() -> None:
    stream = MemoryStream(SCHEMA, partitions=2, max_records_per_batch=2)
    stream.add_rows(rows(0, 5), partition=0)
    stream.add_rows(rows(10, 11), partition=1)
    await stream.open(None)
    assert ids(await stream.next_batch(0)) == [0, 1, 10]
    assert ids(await stream.next_batch(0)) == [2, 3]
    assert ids(await stream.next_batch(0)) == [4]
    assert await stream.next_batch(0) is None


async def test_memory_stream_raw_records_go_through_the_decoder() -> None:
    stream = MemoryStream(SCHEMA)
    stream.add_records([b'{"id": 1, "action": "x"}', b"{oops", b'{"action": "no id"}'])
    stream.add_rows(rows(7, 8))
    stream.add_records([b'{"id": 9}'])
    await stream.open(None)
    batch = await stream.next_batch(0)
    assert ids(batch) == [1, 7, 9]
    assert batch is not None
    dead = batch.dead_letters
    assert dead.column("raw").to_pylist() == [b"{oops", b'{"action": "no id"}']
    assert dead.column("partition").to_pylist() == ["0", "0"]
    assert dead.column("position").to_pylist() == ["1", "2"]
    assert "missing required field 'id'" in dead.column("reason")[1].as_py()
    assert batch.end_offsets == {"0": "5"}
    assert batch.decode_seconds >= 0
    assert batch.fetch_seconds >= 0


async def test_memory_stream_with_another_decoder() -> None:
    stream = MemoryStream(decoder=RawDecoder())
    stream.add_records([b"\x00", b"\x01"])
    await stream.open(None)
    batch = await stream.next_batch(0)
    assert batch is not None
    assert batch.rows.column("data").to_pylist() == [b"\x00", b"\x01"]


async def test_memory_stream_schema_comes_from_rows_or_records_else_a_clear_error() -> None:
    with pytest.raises(SchemaError, match="pass schema="):
        _ = MemoryStream().schema
    by_rows = MemoryStream()
    by_rows.add_rows([{"k": "a", "n": 1}])
    assert by_rows.schema == pa.schema([("k", pa.string()), ("n", pa.int64())])
    by_records = MemoryStream()
    by_records.add_records([b'{"k": "a", "n": 1.5}'])
    assert by_records.schema == pa.schema([("k", pa.string()), ("n", pa.float64())])


def test_memory_stream_rejects_rows_that_do_not_fit_when_added() -> None:
    stream = MemoryStream(SCHEMA)
    with pytest.raises(SchemaError, match="'id'"):
        stream.add_rows([{"action": "no id"}])
    with pytest.raises(SchemaError, match="'id'"):
        stream.add_rows(pa.table({"id": ["x"], "action": ["a"]}))
    with pytest.raises(ConfigError, match="partition 3"):
        stream.add_rows(rows(0, 1), partition=3)


async def test_memory_stream_end_offsets_reached_and_commits() -> None:
    stream = MemoryStream(SCHEMA, partitions=2)
    stream.add_rows(rows(0, 3), partition=1)
    await stream.open(None)
    target = await stream.end_offsets()
    assert target == {"0": "0", "1": "3"}
    assert not stream.reached({"0": "0", "1": "2"}, target)
    assert stream.reached({"0": "0", "1": "10"}, target)
    batch = await stream.next_batch(0)
    assert batch is not None
    assert stream.reached(batch.end_offsets, target)
    await stream.commit(batch.end_offsets)
    assert stream.committed == {"0": "0", "1": "3"}
    await stream.close()
    assert stream.closed


async def test_memory_stream_waits_for_rows_added_from_another_thread() -> None:
    stream = MemoryStream(SCHEMA)
    await stream.open(None)
    timer = threading.Timer(0.05, lambda: stream.add_rows(rows(0, 2)))
    timer.start()
    try:
        assert ids(await stream.next_batch(max_wait=5)) == [0, 1]
    finally:
        timer.join()


# --- FileStreamSource (local) ------------------------------------------------------


def put(directory: Path, name: str, data: bytes, mtime: float) -> None:
    """Write atomically (hidden temp file, then rename) and set the mtime."""
    target = directory / name
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp"
    tmp.write_bytes(data)
    os.utime(tmp, (mtime, mtime))
    os.replace(tmp, target)


def json_lines(*values: int) -> bytes:
    return b"".join(json.dumps({"id": v, "action": "a"}).encode() + b"\n" for v in values)


async def test_files_are_picked_up_in_arrival_order_across_calls(tmp_path: Path) -> None:
    put(tmp_path, "z.json", json_lines(1, 2), mtime=1000)
    put(tmp_path, "a.json", json_lines(3), mtime=2000)
    put(tmp_path, "b.json", json_lines(4), mtime=2000)
    source = FileStreamSource(str(tmp_path), schema=SCHEMA)
    await source.open(None)
    batch = await source.next_batch(0)
    assert ids(batch) == [1, 2, 3, 4]
    assert batch is not None
    assert json.loads(batch.end_offsets["files"]) == ["a.json", "b.json", "z.json"]
    assert batch.partitions[0].records == 4
    assert await source.next_batch(0) is None
    put(tmp_path, "c.json", json_lines(5), mtime=3000)
    assert ids(await source.next_batch(0)) == [5]


async def test_max_files_per_trigger_is_respected(tmp_path: Path) -> None:
    for i in range(5):
        put(tmp_path, f"f{i}.json", json_lines(i), mtime=1000 + i)
    source = FileStreamSource(str(tmp_path), schema=SCHEMA, max_files_per_trigger=2)
    await source.open(None)
    assert ids(await source.next_batch(0)) == [0, 1]
    assert ids(await source.next_batch(0)) == [2, 3]
    assert ids(await source.next_batch(0)) == [4]
    assert await source.next_batch(0) is None


async def test_restart_from_offsets_neither_rereads_nor_skips(tmp_path: Path) -> None:
    for i in range(4):
        put(tmp_path, f"f{i}.json", json_lines(i), mtime=1000 + i)
    first = FileStreamSource(str(tmp_path), schema=SCHEMA, max_files_per_trigger=2)
    await first.open(None)
    batch = await first.next_batch(0)
    assert batch is not None
    committed = batch.end_offsets
    await first.next_batch(0)  # read, but "crashed" before committing
    put(tmp_path, "f9.json", json_lines(9), mtime=5000)
    second = FileStreamSource(str(tmp_path), schema=SCHEMA, max_files_per_trigger=10)
    await second.open(committed)
    assert ids(await second.next_batch(0)) == [2, 3, 9]
    assert await second.next_batch(0) is None


async def test_a_late_file_with_an_older_mtime_is_still_read(tmp_path: Path) -> None:
    put(tmp_path, "new.json", json_lines(2), mtime=2000)
    source = FileStreamSource(str(tmp_path), schema=SCHEMA)
    await source.open(None)
    assert ids(await source.next_batch(0)) == [2]
    put(tmp_path, "old.json", json_lines(1), mtime=1000)
    put(tmp_path, "sub/same.json", json_lines(3), mtime=2000)
    batch = await source.next_batch(0)
    assert ids(batch) == [1, 3]
    assert batch is not None
    restarted = FileStreamSource(str(tmp_path), schema=SCHEMA)
    await restarted.open(batch.end_offsets)
    assert await restarted.next_batch(0) is None


async def test_hidden_and_underscore_files_are_ignored(tmp_path: Path) -> None:
    put(tmp_path, "ok.json", json_lines(1), mtime=1000)
    (tmp_path / ".partial.json").write_bytes(json_lines(8))
    (tmp_path / "_temporary").mkdir()
    (tmp_path / "_temporary" / "x.json").write_bytes(json_lines(9))
    source = FileStreamSource(str(tmp_path), schema=SCHEMA)
    await source.open(None)
    assert ids(await source.next_batch(0)) == [1]


async def test_bad_json_lines_become_dead_letters_at_file_line(tmp_path: Path) -> None:
    put(tmp_path, "mixed.json", json_lines(1) + b"\n{broken\n" + json_lines(2), mtime=1000)
    source = FileStreamSource(str(tmp_path), schema=SCHEMA)
    await source.open(None)
    batch = await source.next_batch(0)
    assert ids(batch) == [1, 2]
    assert batch is not None
    assert batch.dead_letters.to_pylist() == [
        {
            "raw": b"{broken",
            "partition": "files",
            "position": "mixed.json:3",
            "reason": "malformed JSON: Missing a name for object member",
        }
    ]
    failing = FileStreamSource(str(tmp_path), schema=SCHEMA, on_bad_record="fail")
    await failing.open(None)
    with pytest.raises(BadRecordError, match=r"mixed\.json:3"):
        await failing.next_batch(0)


async def test_parquet_and_csv_files_are_cast_to_the_schema(tmp_path: Path) -> None:
    pq.write_table(
        pa.table({"action": ["p"], "id": pa.array([1], pa.int32())}), tmp_path / "a.parquet"
    )
    os.utime(tmp_path / "a.parquet", (1000, 1000))
    pq.write_table(pa.table({"other": [1]}), tmp_path / "b.parquet")
    os.utime(tmp_path / "b.parquet", (2000, 2000))
    source = FileStreamSource(str(tmp_path), format="parquet", schema=SCHEMA)
    await source.open(None)
    batch = await source.next_batch(0)
    assert batch is not None
    assert batch.rows.to_pylist() == [{"id": 1, "action": "p"}]
    assert batch.dead_letters.column("position").to_pylist() == ["b.parquet"]
    assert "'id'" in batch.dead_letters.column("reason")[0].as_py()
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    pacsv.write_csv(pa.table({"id": [5, 6], "action": ["c", "d"]}), csv_dir / "x.csv")
    csv_source = FileStreamSource(str(csv_dir), format="csv", schema=SCHEMA)
    await csv_source.open(None)
    csv_batch = await csv_source.next_batch(0)
    assert csv_batch is not None
    assert csv_batch.rows.schema == SCHEMA
    assert ids(csv_batch) == [5, 6]


async def test_parquet_columns_json_cannot_produce_are_read_and_refused_only_for_json(
    tmp_path: Path,
) -> None:
    """Map and duration columns are fine in Parquet files and in rows added as rows; only a
    source that would decode them from JSON refuses them (at once, naming the field)."""
    schema = pa.schema([("id", pa.int64()), ("tags", pa.map_(pa.string(), pa.int64())),
                        ("took", pa.duration("ms"))])  # fmt: skip
    table = pa.table({"id": [1], "tags": [[("a", 2)]], "took": pa.array([1500], pa.duration("ms"))},
                     schema=schema)  # fmt: skip
    pq.write_table(table, tmp_path / "a.parquet")
    source = FileStreamSource(str(tmp_path), format="parquet", schema=schema)
    await source.open(None)
    batch = await source.next_batch(0)
    assert batch is not None
    assert batch.rows.to_pylist() == [{"id": 1, "tags": [("a", 2)], "took": timedelta(seconds=1.5)}]
    assert batch.dead_letters.num_rows == 0
    with pytest.raises(ConfigError, match=r"'tags' \(map"):
        FileStreamSource(str(tmp_path), format="json", schema=schema)
    for stream in (MemoryStream(schema=schema), MemoryQueue(schema=schema)):
        stream.add_rows(table)
        with pytest.raises(ConfigError, match=r"'took' \(duration"):
            stream.add_records([b'{"id": 2}'])
    inferred = MemoryStream()  # the schema taken from the first rows added
    inferred.add_rows(table)
    with pytest.raises(ConfigError, match="'tags'"):
        inferred.add_records([b'{"id": 2}'])
    records_first = MemoryStream()  # records added before the rows fix the schema
    records_first.add_records([b'{"id": 2}'])
    with pytest.raises(ConfigError, match="'tags'"):
        records_first.add_rows(table)


async def test_schema_is_inferred_from_the_first_file(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="pass schema="):
        _ = FileStreamSource(str(tmp_path)).schema
    put(tmp_path, "b.json", b'{"k": "x", "t": "2024-01-01T00:00:00Z"}\n', mtime=1000)
    put(tmp_path, "a.json", b'{"k": 5}\n', mtime=2000)
    source = FileStreamSource(str(tmp_path))
    assert source.schema == pa.schema([("k", pa.string()), ("t", pa.timestamp("us"))])
    await source.open(None)
    batch = await source.next_batch(0)
    assert batch is not None
    assert batch.rows.column("k").to_pylist() == ["x"]
    assert (
        "field 'k': expected string, got JSON number"
        in batch.dead_letters.column("reason")[0].as_py()
    )


async def test_end_offsets_and_reached_drive_available_now(tmp_path: Path) -> None:
    put(tmp_path, "a.json", json_lines(1), mtime=1000)
    put(tmp_path, "b.json", json_lines(2), mtime=2000)
    source = FileStreamSource(str(tmp_path), schema=SCHEMA, max_files_per_trigger=1)
    await source.open(None)
    target = await source.end_offsets()
    seen: list[int] = []
    offsets: dict[str, str] = {}
    while not source.reached(offsets, target):
        batch = await source.next_batch(0)
        assert batch is not None
        seen += ids(batch)
        offsets = dict(batch.end_offsets)
    assert seen == [1, 2]


async def test_lag_is_the_age_of_the_oldest_unread_file(tmp_path: Path) -> None:
    put(tmp_path, "a.json", json_lines(1), mtime=1000)
    put(tmp_path, "b.json", json_lines(2), mtime=1500)
    source = FileStreamSource(
        str(tmp_path), schema=SCHEMA, max_files_per_trigger=1, wall_clock=lambda: 2000.0
    )
    await source.open(None)
    batch = await source.next_batch(0)
    assert batch is not None
    assert batch.partitions[0].lag_ms == 500_000


async def test_next_batch_waits_for_a_file_to_arrive(tmp_path: Path) -> None:
    source = FileStreamSource(str(tmp_path), schema=SCHEMA, poll_interval=0.02)
    await source.open(None)
    assert await source.next_batch(0) is None
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, put, tmp_path, "late.json", json_lines(7), 1000)
    assert ids(await source.next_batch(max_wait=5)) == [7]


def test_bad_configuration_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="format"):
        FileStreamSource(str(tmp_path), format="xml")
    with pytest.raises(ConfigError, match="scheme"):
        FileStreamSource("gs://bucket/x")
    with pytest.raises(ConfigError, match="max_files_per_trigger"):
        FileStreamSource(str(tmp_path), max_files_per_trigger=0)
