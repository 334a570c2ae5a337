"""FileStreamSource read-ahead: files decoded ahead on worker threads are handed over in
arrival order, each exactly once; a file counts as read only once handed over (close and
restarts re-read the ones decoded ahead); bad lines, fail mode and schema inference behave
as without read-ahead."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import streamkit as sk
from streamkit.errors import ConfigError
from streamkit.streaming.checkpoint import CheckpointLog
from streamkit.streaming.checkpoint_store import open_checkpoint_store
from streamkit.streaming.contracts import SourceBatch
from streamkit.streaming.decode import BadRecordError, Decoded, JsonDecoder
from streamkit.streaming.query import StreamingQueryError
from streamkit.streaming.sources import FileStreamSource
from streamkit.streaming.sources.file_position import ListedFile

SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("file", pa.string())])
N = 30


def put(directory: Path, name: str, data: bytes, mtime: int) -> None:
    """Write atomically (hidden temp file, then rename) with mtime ``mtime`` seconds."""
    tmp = directory / f".{name}.tmp"
    tmp.write_bytes(data)
    os.utime(tmp, (mtime, mtime))
    os.replace(tmp, directory / name)


def line(i: int, name: str) -> bytes:
    return json.dumps({"id": i, "file": name}).encode() + b"\n"


def make_files(directory: Path, n: int = N) -> list[str]:
    """``n`` files of two rows (ids 2i, 2i+1) with increasing mtimes; names are a
    permutation, so name order is not arrival order. Returns names in arrival order."""
    names = [f"f{(i * 7) % n:02d}.json" for i in range(n)]
    for i, name in enumerate(names):
        put(directory, name, line(2 * i, name) + line(2 * i + 1, name), mtime=1000 + i)
    return names


def files_of(rows: pa.Table) -> list[str]:
    """The files of ``rows`` in order, one entry per run of rows from the same file."""
    out: list[str] = []
    for name in rows.column("file").to_pylist():
        if not out or out[-1] != name:
            out.append(name)
    return out


class Recording(FileStreamSource):
    """A file source recording each decode on its worker thread (names, decoders, start
    and end order); ``delays`` holds a file back to make a race deterministic."""

    def __init__(self, *args: Any, delays: dict[str, float] | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.delays = delays or {}
        self.events: list[tuple[str, str]] = []
        self.decoders: list[tuple[str, JsonDecoder]] = []
        self._lock = threading.Lock()

    def _decode_one(self, f: ListedFile, decoder: JsonDecoder) -> tuple[Decoded, float]:
        with self._lock:
            self.events.append(("start", f.name))
            self.decoders.append((f.name, decoder))
        time.sleep(self.delays.get(f.name, 0.0))
        try:
            return super()._decode_one(f, decoder)
        finally:
            with self._lock:
                self.events.append(("end", f.name))

    def decoded(self) -> list[str]:
        with self._lock:
            return [name for kind, name in self.events if kind == "end"]


async def drain(source: FileStreamSource) -> list[SourceBatch]:
    batches = []
    while (batch := await source.next_batch(0)) is not None:
        batches.append(batch)
    return batches


async def wait_decoded(source: Recording, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while len(source.decoded()) < count:
        assert time.monotonic() < deadline, f"only {source.decoded()} decoded"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("workers", [1, 2, 4])
@pytest.mark.parametrize("cap", [1, 4, None])
async def test_files_are_handed_over_once_in_arrival_order(
    tmp_path: Path, workers: int, cap: int | None
) -> None:
    names = make_files(tmp_path)
    source = Recording(
        str(tmp_path), schema=SCHEMA, max_files_per_trigger=cap, decode_workers=workers
    )
    await source.open(None)
    batches = await drain(source)
    handed: list[str] = []
    for batch in batches:
        files = files_of(batch.rows)
        assert len(files) == min(cap or N, N - len(handed))
        handed += files
        assert json.loads(batch.end_offsets["files"]) == sorted(handed)
        assert batch.partitions[0].records == 2 * len(files)
    assert handed == names
    ids = pa.concat_tables([b.rows for b in batches]).column("id").to_pylist()
    assert ids == list(range(2 * N))
    assert sorted(source.decoded()) == sorted(names)  # each file decoded exactly once
    await source.close()


@pytest.mark.parametrize("workers", [1, 2, 4])
@pytest.mark.parametrize("cap", [1, None])
def test_available_now_query_sees_every_file_once_in_order(
    tmp_path: Path, workers: int, cap: int | None
) -> None:
    names = make_files(tmp_path)
    seen: list[tuple[int, list[str], list[int]]] = []

    def record(df: sk.DataFrame, batch_id: int) -> None:
        rows = df.to_arrow()
        seen.append((batch_id, files_of(rows), rows.column("id").to_pylist()))

    source = FileStreamSource(
        str(tmp_path), schema=SCHEMA, max_files_per_trigger=cap, decode_workers=workers
    )
    q = (
        sk.read_stream.source(source)
        .write_stream.trigger(available_now=True)
        .foreach_batch(record)
        .start()
    )
    assert q.await_termination(timeout=60)
    assert [bid for bid, _, _ in seen] == list(range(len(seen)))
    assert [f for _, files, _ in seen for f in files] == names
    assert [i for _, _, ids in seen for i in ids] == list(range(2 * N))
    if cap == 1:
        assert [len(files) for _, files, _ in seen] == [1] * N


async def test_files_decoded_ahead_are_dropped_on_close_and_read_after_reopening(
    tmp_path: Path,
) -> None:
    names = make_files(tmp_path, 10)
    source = Recording(str(tmp_path), schema=SCHEMA, max_files_per_trigger=1, decode_workers=4)
    await source.open(None)
    first = await source.next_batch(0)
    assert first is not None
    assert files_of(first.rows) == names[:1]
    # In flight: max_files_per_trigger + decode_workers files (4 of them at once).
    await wait_decoded(source, 6)
    await asyncio.sleep(0.05)
    assert sorted(source.decoded()) == sorted(names[:6])
    await source.close()

    await source.open(first.end_offsets)
    rest = await drain(source)
    assert [f for b in rest for f in files_of(b.rows)] == names[1:]
    # Names 1-5 were decoded twice: the first results were dropped, never handed over.
    assert sorted(source.decoded()) == sorted(names[:1] + names[1:6] * 2 + names[6:])
    await source.close()


def committed_files(checkpoint: Path) -> list[str]:
    last = CheckpointLog(open_checkpoint_store(str(checkpoint))).latest()
    assert last is not None
    files = json.loads(last.offsets["files"])
    assert isinstance(files, list)
    return files


def test_restart_after_stop_reads_exactly_the_files_not_committed(tmp_path: Path) -> None:
    data, ck = tmp_path / "in", tmp_path / "ck"
    data.mkdir()
    names = make_files(data, 12)
    batches: list[tuple[int, list[str]]] = []
    third, stopping = threading.Event(), threading.Event()

    def record(df: sk.DataFrame, batch_id: int) -> None:
        batches.append((batch_id, files_of(df.to_arrow())))
        if batch_id == 2:  # hold batch 2 until the stop is requested and later files decoded
            third.set()
            assert stopping.wait(60)
            deadline = time.monotonic() + 60
            while len(first.decoded()) < 6 and time.monotonic() < deadline:
                time.sleep(0.01)

    first = Recording(str(data), schema=SCHEMA, max_files_per_trigger=1, decode_workers=4)
    q = sk.read_stream.source(first).write_stream.checkpoint(str(ck)).foreach_batch(record).start()
    assert third.wait(60)
    q.stop(timeout=0)  # request the stop without waiting: batch 2 is still in the sink
    stopping.set()
    assert q.await_termination(timeout=60)
    handed = [f for _, files in batches for f in files]
    assert handed == names[:3]  # the batch in flight committed, nothing after it
    assert committed_files(ck) == sorted(handed)
    ahead = set(first.decoded()) - set(handed)
    assert len(ahead) >= 3, "files were decoded ahead (and dropped on stop)"

    more: list[tuple[int, list[str]]] = []
    second = FileStreamSource(str(data), schema=SCHEMA, max_files_per_trigger=1, decode_workers=4)
    q = (
        sk.read_stream.source(second)
        .write_stream.trigger(available_now=True)
        .checkpoint(str(ck))
        .foreach_batch(lambda df, bid: more.append((bid, files_of(df.to_arrow()))))
        .start()
    )
    assert q.await_termination(timeout=60)
    assert [f for _, files in more for f in files] == names[3:]
    assert ahead <= {f for _, files in more for f in files}
    assert [bid for bid, _ in batches + more] == list(range(len(names)))


def numbered(directory: Path, n: int, bad: int | None = None) -> list[str]:
    """Files f00..f{n-1} (arrival = name order), three lines each; file ``bad`` has a
    malformed second line."""
    names = [f"f{i:02d}.json" for i in range(n)]
    for i, name in enumerate(names):
        middle = b'{"id": oops\n' if i == bad else line(3 * i + 1, name)
        put(directory, name, line(3 * i, name) + middle + line(3 * i + 2, name), 1000 + i)
    return names


async def test_a_bad_line_in_a_file_decoded_ahead_is_a_dead_letter_at_its_line(
    tmp_path: Path,
) -> None:
    names = numbered(tmp_path, 10, bad=7)
    source = FileStreamSource(
        str(tmp_path), schema=SCHEMA, max_files_per_trigger=2, decode_workers=4
    )
    await source.open(None)
    batches = await drain(source)
    assert [f for b in batches for f in files_of(b.rows)] == names
    dead = pa.concat_tables([b.dead_letters for b in batches])
    assert dead.select(["raw", "partition", "position"]).to_pylist() == [
        {"raw": b'{"id": oops', "partition": "files", "position": "f07.json:2"}
    ]
    ids = pa.concat_tables([b.rows for b in batches]).column("id").to_pylist()
    assert ids == [i for i in range(30) if i != 22]
    assert [b.partitions[0].records for b in batches] == [6] * 5  # dead letters count too


def test_fail_mode_stops_the_query_and_the_bad_file_is_read_again_after_restart(
    tmp_path: Path,
) -> None:
    data, ck = tmp_path / "in", tmp_path / "ck"
    data.mkdir()
    names = numbered(data, 10, bad=7)
    seen: list[str] = []

    def record(df: sk.DataFrame, batch_id: int) -> None:
        seen.extend(files_of(df.to_arrow()))

    failing = FileStreamSource(
        str(data),
        schema=SCHEMA,
        max_files_per_trigger=1,
        decode_workers=4,
        on_bad_record="fail",
    )
    q = (
        sk.read_stream.source(failing)
        .write_stream.trigger(available_now=True)
        .checkpoint(str(ck))
        .foreach_batch(record)
        .start()
    )
    with pytest.raises(StreamingQueryError) as err:
        q.await_termination(timeout=60)
    cause = err.value.__cause__
    assert isinstance(cause, BadRecordError)
    assert (cause.partition, cause.position) == ("files", "f07.json:2")
    assert seen == names[:7]
    assert committed_files(ck) == names[:7]

    tolerant = FileStreamSource(str(data), schema=SCHEMA, max_files_per_trigger=1, decode_workers=4)
    again: list[str] = []
    q = (
        sk.read_stream.source(tolerant)
        .write_stream.trigger(available_now=True)
        .checkpoint(str(ck))
        .foreach_batch(lambda df, _: again.extend(files_of(df.to_arrow())))
        .start()
    )
    assert q.await_termination(timeout=60)
    assert again == names[7:]
    assert q.dead_letters is not None
    assert q.dead_letters.column("position").to_pylist() == ["f07.json:2"]


async def test_inferred_schema_then_files_decode_in_parallel_under_it(tmp_path: Path) -> None:
    names = [f"f{i:02d}.json" for i in range(12)]
    for i, name in enumerate(names):
        value: object = "not a number" if i == 5 else i
        body = json.dumps({"id": value, "name": name}).encode() + b"\n"
        put(tmp_path, name, body, mtime=1000 + i)
    source = Recording(str(tmp_path), decode_workers=4, delays={names[0]: 0.1})
    await source.open(None)
    batches = await drain(source)
    assert source.schema == pa.schema([("id", pa.int64()), ("name", pa.string())])
    # Until the first file fixed the schema nothing else was decoded.
    assert source.events[:2] == [("start", names[0]), ("end", names[0])]
    later = [d for name, d in source.decoders if name != names[0]]
    assert len({id(d) for d in later}) > 1  # several decoders, one per worker
    assert all(d.schema == source.schema and not d.threads for d in later)
    rows = pa.concat_tables([b.rows for b in batches])
    assert rows.column("id").to_pylist() == [i for i in range(12) if i != 5]
    dead = pa.concat_tables([b.dead_letters for b in batches])
    assert dead.column("position").to_pylist() == ["f05.json:1"]
    assert "'id'" in dead.column("reason")[0].as_py()


async def test_parquet_schema_comes_from_the_first_file_even_if_a_later_one_decodes_first(
    tmp_path: Path,
) -> None:
    for i, (name, values) in enumerate([("a.parquet", [1, 2]), ("b.parquet", ["x"])]):
        tmp = tmp_path / f".{name}"
        pq.write_table(pa.table({"k": values}), tmp)
        os.utime(tmp, (1000 + i, 1000 + i))
        os.replace(tmp, tmp_path / name)
    source = Recording(str(tmp_path), format="parquet", decode_workers=2, delays={"a.parquet": 0.2})
    await source.open(None)
    batches = await drain(source)
    assert source.schema == pa.schema([("k", pa.int64())])
    rows = pa.concat_tables([b.rows for b in batches])
    assert rows.column("k").to_pylist() == [1, 2]
    dead = pa.concat_tables([b.dead_letters for b in batches])
    assert dead.column("position").to_pylist() == ["b.parquet"]


def test_decode_workers_must_be_positive(tmp_path: Path) -> None:
    for bad in (0, -1):
        with pytest.raises(ConfigError, match="decode_workers"):
            FileStreamSource(str(tmp_path), schema=SCHEMA, decode_workers=bad)


def test_a_second_query_on_a_running_file_source_is_refused(tmp_path: Path) -> None:
    for i in range(40):
        put(tmp_path, f"f{i:03d}.json", json.dumps({"id": i, "file": "x"}).encode() + b"\n", i)
    src = FileStreamSource(str(tmp_path), schema=SCHEMA, max_files_per_trigger=1)
    frame = sk.read_stream.source(src).select("id")
    first = frame.write_stream.trigger(available_now=True).memory("reuse_first").start()
    second = frame.write_stream.trigger(available_now=True).memory("reuse_second").start()
    for query in (first, second):
        deadline = time.monotonic() + 60
        while query.is_active and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not query.is_active
    errors = [q.exception for q in (first, second) if q.exception is not None]
    assert len(errors) == 1
    assert isinstance(errors[0], ConfigError)
    assert "running query already" in str(errors[0])
    winner = "reuse_first" if first.exception is None else "reuse_second"
    assert sorted(sk.memory_table(winner).column("id").to_pylist()) == list(range(40))
