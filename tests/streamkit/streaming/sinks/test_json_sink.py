"""JSON sink: NDJSON round trip through ``sk.read.json``, values, partitions, idempotence."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.errors import PlanError
from streamkit.streaming.checkpoint_store import LocalCheckpointStore
from streamkit.streaming.sinks import JsonSink, JsonSinkError, ParquetSink
from streamkit.streaming.sinks.json import JSON_PENDING
from streamkit.streaming.sources.memory import MemoryStream
from streamkit.streaming.stream_scan import stream_source_of
from tests.streamkit.streaming.sinks.test_sinks import FailingStore, events, run, windows


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def ids(root: Path) -> list[int]:
    return sorted(sk.read.json(str(root)).to_arrow().column("id").to_pylist())


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class JsonFailingStore(FailingStore):
    """FailingStore counting ``.json`` file writes (a crash in the middle of a batch)."""

    def write_bytes(self, relative_path: str, data: bytes) -> None:
        if relative_path.endswith(".json"):
            with self._lock:
                self.file_writes += 1
                fail = self.file_writes == self.fail_on
            if fail:
                raise OSError("simulated crash while writing the batch")
        self.inner.write_bytes(relative_path, data)


def test_round_trip_with_timestamps_as_iso_strings(tmp_path: Path) -> None:
    ts = [datetime(2024, 1, 1, 10, 0, 0), datetime(2024, 1, 1, 10, 0, 0, 250_000), None]
    table = pa.table(
        {
            "id": [0, 1, 2],
            "event_time": pa.array(ts, pa.timestamp("us")),
            "utc": pa.array(ts, pa.timestamp("ms", "UTC")),
            "name": ["a", None, "c"],
            "score": [1.5, 2.0, None],
        }
    )
    run(JsonSink(str(tmp_path)).add_batch(0, table))
    assert files(tmp_path) == [JSON_PENDING, "batch-000000000-part-0.json"]
    first = lines(tmp_path / "batch-000000000-part-0.json")[1]
    assert first["event_time"] == "2024-01-01T10:00:00.250000"
    assert first["utc"] == "2024-01-01T10:00:00.250000Z"
    back = (
        sk.read.json(str(tmp_path))
        .with_column("event_time", sk.to_timestamp("event_time"))
        .with_column("utc", sk.to_timestamp("utc"))
        .to_arrow()
        .sort_by("id")
    )
    want = [None if t is None else t.replace(tzinfo=UTC) for t in ts]
    assert back.column("event_time").to_pylist() == want
    assert back.column("utc").to_pylist() == want
    assert back.column("name").to_pylist() == ["a", None, "c"]
    assert back.column("score").to_pylist() == [1.5, 2.0, None]


def test_windows_dates_binary_decimals_are_json_values(tmp_path: Path) -> None:
    table = pa.table(
        {
            "window": windows([0, None]),
            "day": [date(2024, 1, 2), None],
            "raw": [b"\xff\x00", None],
            "amount": pa.array([Decimal("1.25"), None], pa.decimal128(5, 2)),
            "tags": [["x"], []],
        }
    )
    run(JsonSink(str(tmp_path)).add_batch(3, table))
    got = lines(tmp_path / "batch-000000003-part-0.json")
    assert got[0] == {
        "window": {"start": "2024-01-01T00:00:00.000000", "end": "2024-01-01T01:00:00.000000"},
        "day": "2024-01-02",
        "raw": "/wA=",
        "amount": "1.25",
        "tags": ["x"],
    }
    nulls = {"start": None, "end": None}  # windows([None]) is a struct of null fields
    assert got[1] == {"window": nulls, "day": None, "raw": None, "amount": None, "tags": []}
    start = sk.read.json(str(tmp_path)).to_arrow().column("window").combine_chunks().field("start")
    assert start.to_pylist() == ["2024-01-01T00:00:00.000000", None]


def test_partition_by_writes_one_directory_per_value(tmp_path: Path) -> None:
    run(JsonSink(str(tmp_path), partition_by="action").add_batch(0, events(8)))
    assert files(tmp_path) == [
        JSON_PENDING,
        "action=__HIVE_DEFAULT_PARTITION__/batch-000000000-part-0.json",
        "action=buy%2Fnow/batch-000000000-part-0.json",
        "action=click/batch-000000000-part-0.json",
        "action=view/batch-000000000-part-0.json",
    ]
    rows = lines(tmp_path / "action=view" / "batch-000000000-part-0.json")
    assert [(r["id"], r["action"], r["day"]) for r in rows] == [
        (1, "view", "2024-01-02"),
        (5, "view", "2024-01-02"),
    ]
    assert ids(tmp_path) == list(range(8))


def test_rewrite_of_a_batch_replaces_it_and_removes_stale_files(tmp_path: Path) -> None:
    sink = JsonSink(str(tmp_path), partition_by="action", max_rows_per_file=2)
    run(sink.add_batch(0, events(4)))
    run(sink.add_batch(1, events(8, offset=4)))
    assert len(ids(tmp_path)) == 12
    rerun = pa.table({"id": [4], "action": ["click"], "day": [date(2024, 1, 1)]})
    run(JsonSink(str(tmp_path), partition_by="action").add_batch(1, rerun))
    assert ids(tmp_path) == [0, 1, 2, 3, 4]
    assert [f for f in files(tmp_path) if "batch-000000001" in f] == [
        "action=click/batch-000000001-part-0.json"
    ]


def test_crash_mid_batch_is_cleaned_by_the_re_run(tmp_path: Path) -> None:
    run(JsonSink(str(tmp_path)).add_batch(0, events(3)))
    store = JsonFailingStore(LocalCheckpointStore(str(tmp_path)), fail_on=2)
    crashing = JsonSink(str(tmp_path), max_rows_per_file=2, store=store)
    with pytest.raises(OSError, match="simulated crash"):
        run(crashing.add_batch(1, events(6, offset=3)))
    assert 3 < len(ids(tmp_path)) < 9  # a partial batch 1 is visible until the re-run
    run(JsonSink(str(tmp_path)).add_batch(1, events(6, offset=3)))
    assert ids(tmp_path) == list(range(9))


def test_empty_batch_writes_nothing(tmp_path: Path) -> None:
    run(JsonSink(str(tmp_path), partition_by="action").add_batch(0, events(0)))
    assert files(tmp_path) == []


def test_older_batch_id_is_refused(tmp_path: Path) -> None:
    run(JsonSink(str(tmp_path)).add_batch(5, events(2)))
    with pytest.raises(JsonSinkError, match="already holds batch 5"):
        run(JsonSink(str(tmp_path)).add_batch(4, events(2)))


def test_struct_partition_column_is_refused(tmp_path: Path) -> None:
    table = pa.table({"window": windows([0]), "n": [1]})
    with pytest.raises(JsonSinkError, match="cannot partition by 'window'"):
        run(JsonSink(str(tmp_path), partition_by="window").add_batch(0, table))


def test_parquet_and_json_sinks_share_the_file_layout(tmp_path: Path) -> None:
    run(ParquetSink(str(tmp_path / "p"), partition_by="day").add_batch(0, events(4)))
    run(JsonSink(str(tmp_path / "j"), partition_by="day").add_batch(0, events(4)))
    strip = [f.rsplit(".", 1)[0] for f in files(tmp_path / "p") if not f.startswith("_")]
    assert strip == [f.rsplit(".", 1)[0] for f in files(tmp_path / "j") if not f.startswith("_")]


def test_writer_json_needs_a_checkpoint_and_writes_batches(tmp_path: Path) -> None:
    stream = sk.read_stream.memory(pa.schema([("id", pa.int64()), ("action", pa.string())]))
    with pytest.raises(PlanError, match="JSON sink needs a checkpoint"):
        stream.write_stream.json(str(tmp_path / "out"))
    out = tmp_path / "out"
    writer = stream.write_stream.checkpoint(str(tmp_path / "ckpt"))
    query = writer.json(str(out), partition_by="action").start()
    try:
        source = stream_source_of(stream.plan)
        assert isinstance(source, MemoryStream)
        source.add_rows(pa.table({"id": [1, 2, 3], "action": ["a", "b", "a"]}))
        query.process_all_available(timeout=30)
    finally:
        query.stop()
    assert ids(out) == [1, 2, 3]
    assert sorted(f.split("/")[0] for f in files(out) if not f.startswith("_")) == [
        "action=a",
        "action=b",
    ]
