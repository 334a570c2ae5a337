"""FileStreamSource with ``max_file_age``: offsets stay bounded by an mtime horizon, files
behind it are ignored, restarts and ``available_now`` stay exact, old offsets still load."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.errors import ConfigError
from streamkit.streaming.checkpoint import CheckpointLog
from streamkit.streaming.checkpoint_store import open_checkpoint_store
from streamkit.streaming.contracts import Offsets, SourceBatch
from streamkit.streaming.sources import FileStreamSource

SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("action", pa.string())])
S = 1_000_000_000  # ns per second


def put(directory: Path, name: str, value: int, mtime: int) -> None:
    """One JSON row ``{"id": value}`` written atomically, with mtime ``mtime`` seconds."""
    target = directory / name
    tmp = directory / f".{name}.tmp"
    tmp.write_bytes(json.dumps({"id": value, "action": "a"}).encode() + b"\n")
    os.utime(tmp, ns=(mtime * S, mtime * S))
    os.replace(tmp, target)


def ids(batch: SourceBatch | None) -> list[int]:
    assert batch is not None
    return list(batch.rows.column("id").to_pylist())


def position(offsets: Offsets) -> dict[str, Any]:
    value = json.loads(offsets["files"])
    assert isinstance(value, dict)
    return value


async def test_offsets_stay_bounded_while_many_files_pass(tmp_path: Path) -> None:
    for i in range(500):
        put(tmp_path, f"f{i:03d}.json", i, mtime=1000 + i)
    source = FileStreamSource(
        str(tmp_path), schema=SCHEMA, max_files_per_trigger=25, max_file_age="10 s"
    )
    await source.open(None)
    seen: list[int] = []
    sizes: list[int] = []
    while (batch := await source.next_batch(0)) is not None:
        seen += ids(batch)
        sizes.append(len(batch.end_offsets["files"]))
        pos = position(batch.end_offsets)
        newest = 1000 + seen[-1]
        assert pos["horizon"] == (newest - 10) * S
        expected = {f"f{i:03d}.json": (1000 + i) * S for i in seen if 1000 + i >= newest - 10}
        assert pos["files"] == expected
    assert seen == list(range(500))
    # 11 names within the horizon: each entry is about 32 characters.
    assert max(sizes) < 11 * 40
    assert list(pos["files"]) == sorted(expected)  # deterministic: sorted names


async def test_a_late_file_is_ignored_behind_the_horizon_and_read_within_it(
    tmp_path: Path,
) -> None:
    put(tmp_path, "new.json", 1, mtime=10_000)
    source = FileStreamSource(str(tmp_path), schema=SCHEMA, max_file_age=timedelta(seconds=100))
    await source.open(None)
    assert ids(await source.next_batch(0)) == [1]
    put(tmp_path, "old.json", 2, mtime=9_899)  # horizon is 9_900
    assert await source.next_batch(0) is None
    put(tmp_path, "edge.json", 3, mtime=9_900)
    put(tmp_path, "mid.json", 4, mtime=9_950)
    batch = await source.next_batch(0)
    assert ids(batch) == [3, 4]
    assert batch is not None
    assert position(batch.end_offsets) == {
        "files": {"edge.json": 9_900 * S, "mid.json": 9_950 * S, "new.json": 10_000 * S},
        "horizon": 9_900 * S,
    }
    restarted = FileStreamSource(str(tmp_path), schema=SCHEMA, max_file_age=100)
    await restarted.open(batch.end_offsets)
    assert await restarted.next_batch(0) is None


async def test_a_first_start_reads_every_file_present_then_forgets_old_ones(
    tmp_path: Path,
) -> None:
    put(tmp_path, "a.json", 1, mtime=1_000)
    put(tmp_path, "b.json", 2, mtime=5_000)
    source = FileStreamSource(str(tmp_path), schema=SCHEMA, max_file_age="1 minute")
    await source.open(None)
    batch = await source.next_batch(0)
    assert ids(batch) == [1, 2]
    assert batch is not None
    assert position(batch.end_offsets) == {"files": {"b.json": 5_000 * S}, "horizon": 4_940 * S}


async def test_restart_after_an_uncommitted_batch_reads_exactly_the_rest(tmp_path: Path) -> None:
    for i in range(6):
        put(tmp_path, f"f{i}.json", i, mtime=1000 + 10 * i)
    first = FileStreamSource(str(tmp_path), schema=SCHEMA, max_files_per_trigger=2, max_file_age=15)
    await first.open(None)
    assert ids(await first.next_batch(0)) == [0, 1]
    committed = (await first.next_batch(0) or pytest.fail("no batch")).end_offsets
    assert position(committed)["horizon"] == 1015 * S  # f0, f1 forgotten
    assert ids(await first.next_batch(0)) == [4, 5]  # read, but "crashed" before committing
    put(tmp_path, "late_in.json", 7, mtime=1016)
    put(tmp_path, "late_out.json", 8, mtime=1014)
    second = FileStreamSource(str(tmp_path), schema=SCHEMA, max_file_age=15)
    await second.open(committed)
    assert ids(await second.next_batch(0)) == [7, 4, 5]
    assert await second.next_batch(0) is None


async def test_old_list_offsets_still_load_and_convert(tmp_path: Path) -> None:
    put(tmp_path, "a.json", 1, mtime=1_000)
    put(tmp_path, "b.json", 2, mtime=2_000)
    put(tmp_path, "c.json", 3, mtime=3_000)
    legacy = {"files": json.dumps(["a.json", "b.json"])}
    plain = FileStreamSource(str(tmp_path), schema=SCHEMA)
    await plain.open(legacy)
    batch = await plain.next_batch(0)
    assert ids(batch) == [3]
    assert batch is not None
    assert json.loads(batch.end_offsets["files"]) == ["a.json", "b.json", "c.json"]

    aged = FileStreamSource(str(tmp_path), schema=SCHEMA, max_file_age="1500 s")
    await aged.open(legacy)
    batch = await aged.next_batch(0)
    assert ids(batch) == [3]
    assert batch is not None
    assert position(batch.end_offsets) == {
        "files": {"b.json": 2_000 * S, "c.json": 3_000 * S},
        "horizon": 1_500 * S,
    }


async def test_reached_and_end_offsets_respect_the_horizon(tmp_path: Path) -> None:
    put(tmp_path, "a.json", 1, mtime=1_000)
    put(tmp_path, "b.json", 2, mtime=2_000)
    source = FileStreamSource(
        str(tmp_path), schema=SCHEMA, max_files_per_trigger=1, max_file_age=500
    )
    await source.open(None)
    target = await source.end_offsets()
    assert not source.reached({}, target)
    assert ids(await source.next_batch(0)) == [1]
    offsets = (await source.next_batch(0) or pytest.fail("no batch")).end_offsets
    assert "a.json" not in position(offsets)["files"]  # forgotten, yet counted as reached
    assert source.reached(offsets, target)
    put(tmp_path, "old.json", 3, mtime=1_400)  # behind the horizon (1_500): not a target
    put(tmp_path, "c.json", 4, mtime=1_600)
    target = await source.end_offsets()
    assert set(position(target)["files"]) == {"b.json", "c.json"}
    assert not source.reached(offsets, target)
    offsets = (await source.next_batch(0) or pytest.fail("no batch")).end_offsets
    assert source.reached(offsets, target)
    assert source.reached({"files": json.dumps(["a.json", "b.json"])}, {"files": '["a.json"]'})


def run_available_now(directory: Path, checkpoint: Path) -> list[int]:
    """One available_now run of a files query; the ids it read, in order."""
    seen: list[int] = []

    def record(df: sk.DataFrame, batch_id: int) -> None:
        seen.extend(df.to_arrow().column("id").to_pylist())

    q = (
        sk.read_stream.files(
            str(directory), schema=SCHEMA, max_files_per_trigger=3, max_file_age="20 seconds"
        )
        .write_stream.trigger(available_now=True)
        .checkpoint(str(checkpoint))
        .foreach_batch(record)
        .start()
    )
    assert q.await_termination(timeout=30)
    return seen


def last_commit(checkpoint: Path) -> dict[str, Any]:
    last = CheckpointLog(open_checkpoint_store(str(checkpoint))).latest()
    assert last is not None
    value = json.loads(last.offsets["files"])
    assert isinstance(value, dict)
    return value


def test_available_now_runs_restart_from_the_checkpoint_exactly(tmp_path: Path) -> None:
    data, ck = tmp_path / "in", tmp_path / "ck"
    data.mkdir()
    for i in range(8):
        put(data, f"f{i}.json", i, mtime=1000 + 10 * i)
    assert run_available_now(data, ck) == list(range(8))
    committed = last_commit(ck)
    assert committed == {
        "files": {"f5.json": 1050 * S, "f6.json": 1060 * S, "f7.json": 1070 * S},
        "horizon": 1050 * S,
    }
    put(data, "late_out.json", 100, mtime=1049)
    put(data, "late_in.json", 101, mtime=1051)
    for i in range(8, 11):
        put(data, f"f{i}.json", i, mtime=1000 + 10 * i)
    assert run_available_now(data, ck) == [101, 8, 9, 10]
    assert run_available_now(data, ck) == []
    assert last_commit(ck)["horizon"] == 1080 * S


def test_bad_max_file_age_is_rejected_with_what_to_pass(tmp_path: Path) -> None:
    for bad, message in [
        (-5, "positive"),
        (0, "positive"),
        (float("nan"), "positive"),
        (timedelta(seconds=-1), "positive"),
        ("soon", "cannot parse duration"),
        ("", "empty duration"),
        (True, "duration"),
    ]:
        with pytest.raises(ConfigError, match=f"max_file_age.*{message}"):
            FileStreamSource(str(tmp_path), schema=SCHEMA, max_file_age=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_file_age"):
        sk.read_stream.files(str(tmp_path), schema=SCHEMA, max_file_age="-1 day")


async def test_unreadable_offsets_are_a_config_error(tmp_path: Path) -> None:
    source = FileStreamSource(str(tmp_path), schema=SCHEMA, max_file_age=60)
    for text in ["{", '{"horizon": 1}', '{"files": {"a": "x"}, "horizon": 1}', "[1]"]:
        with pytest.raises(ConfigError, match="file stream offsets"):
            await source.open({"files": text})
