"""Streaming queries end to end on the memory source: modes, triggers, progress, restarts,
dead letters, late rows. The stream's results are checked against the batch engine."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.streaming.decode import JsonDecoder
from streamkit.streaming.query import StreamingQueryError
from streamkit.streaming.sources.memory import MemoryStream
from streamkit.testing.tables import assert_table_equal
from tests.oracle.events import events

DATA = events(n=900, seed=31, span_hours=4).filter(
    pa.compute.is_valid(pa.compute.field("event_time"))
)


def counts(df: sk.DataFrame) -> sk.DataFrame:
    return df.group_by(sk.window("event_time", "15 minutes"), "action").agg(
        sk.count().alias("n"), sk.sum("value").alias("s"), sk.approx_count_distinct("user_id")
    )


def test_update_mode_memory_sink_equals_batch_result() -> None:
    df = sk.read_stream.source(MemoryStream(DATA.schema, partitions=2))
    q = counts(df).write_stream.output_mode("update").memory("upd").start()
    try:
        for i, lo in enumerate(range(0, DATA.num_rows, 200)):
            df.stream.add_rows(DATA.slice(lo, 200), partition=i % 2)
            q.process_all_available()
    finally:
        q.stop()
    assert_table_equal(
        sk.memory_table("upd"), counts(sk.from_arrow(DATA)).to_arrow(), sort_by=["window", "action"]
    )
    progress = q.recent_progress
    assert [p.batch_id for p in progress] == list(range(len(progress)))
    assert sum(p.num_input_rows for p in progress) == DATA.num_rows
    assert q.table.num_rows == DATA.num_rows  # the unbounded input table holds every row
    last = progress[-1]
    assert last.state_rows > 0
    assert last.durations.execute > 0
    assert {p.partition for p in last.partitions} <= {"0", "1"}


def test_restart_from_checkpoint_counts_every_row_once(tmp_path: Path) -> None:
    stream = MemoryStream(DATA.schema)
    df = sk.read_stream.source(stream)
    ck = str(tmp_path / "ck")

    def run(name: str) -> None:
        q = counts(df).write_stream.output_mode("complete").checkpoint(ck).memory(name).start()
        q.process_all_available()
        q.stop()
        q.await_termination()

    stream.add_rows(DATA.slice(0, 500))
    run("first")
    stream.add_rows(DATA.slice(500))
    run("second")  # a new query on the same checkpoint: resumes after the committed offsets
    assert_table_equal(
        sk.memory_table("second"),
        counts(sk.from_arrow(DATA)).to_arrow(),
        sort_by=["window", "action"],
    )
    assert stream.committed == {"0": str(DATA.num_rows)}


def test_bad_records_go_to_dead_letters_and_good_ones_to_the_result() -> None:
    schema = pa.schema(
        [
            ("event_time", pa.timestamp("us", "UTC")),
            ("action", pa.string()),
            ("value", pa.float64()),
        ]
    )
    stream = MemoryStream(schema)
    df = sk.read_stream.source(stream)
    q = (
        df.group_by("action")
        .agg(sk.count().alias("n"), sk.sum("value").alias("s"))
        .write_stream.output_mode("complete")
        .memory("dlq")
        .start()
    )
    good = [
        json.dumps({"event_time": "2024-01-01T00:00:00Z", "action": "a", "value": i})
        for i in range(5)
    ]
    bad = [b"{not json", json.dumps({"event_time": "x", "action": "a", "value": "oops"}).encode()]
    stream.add_records([good[0].encode(), bad[0], good[1].encode(), bad[1], good[2].encode()])
    q.process_all_available()
    q.stop()
    result = sk.memory_table("dlq").to_pylist()
    assert result == [{"action": "a", "n": 3, "s": 3.0}]
    dead = q.dead_letters
    assert dead is not None
    assert dead.column("raw").to_pylist() == list(bad)
    assert dead.column("position").to_pylist() == ["1", "3"]
    assert all(r for r in dead.column("reason").to_pylist())
    assert sum(p.dead_letters for p in q.recent_progress) == 2


def test_fail_fast_on_bad_record_stops_the_query_with_the_error() -> None:
    schema = pa.schema([("action", pa.string())])
    stream = MemoryStream(decoder=JsonDecoder(schema, on_bad_record="fail"))
    q = sk.read_stream.source(stream).write_stream.memory("ff").start()
    stream.add_records([b'{"action": "a"}', b"{oops"])
    with pytest.raises(StreamingQueryError) as err:
        q.await_termination(timeout=60)
    assert "oops" in str(err.value.__cause__) or "position" in str(err.value.__cause__)


def test_append_mode_with_watermark_emits_closed_windows_and_keeps_late_rows() -> None:
    stream = MemoryStream(DATA.schema)
    df = sk.read_stream.source(stream).with_watermark("event_time", "10 minutes")
    q = counts(df).write_stream.output_mode("append").memory("app").start()
    ordered = DATA.sort_by("event_time")
    stream.add_rows(ordered.slice(450))
    q.process_all_available()
    stream.add_rows(ordered.slice(0, 450))  # mostly behind the watermark now
    q.process_all_available()
    q.stop()
    late = q.late_rows
    assert late is not None
    assert late.num_rows == sum(p.late_rows for p in q.recent_progress) > 0
    emitted = sk.memory_table("app")
    frame = pl.from_arrow(emitted)
    assert isinstance(frame, pl.DataFrame)
    assert frame.select("window", "action").is_duplicated().sum() == 0
    assert q.last_progress is not None
    assert q.last_progress.watermark is not None


def test_append_on_aggregation_without_watermark_is_refused() -> None:
    df = sk.read_stream.source(MemoryStream(DATA.schema))
    with pytest.raises(sk.PlanError, match="needs a watermark"):
        counts(df).write_stream.output_mode("append").memory("x").start()


def test_available_now_reads_what_exists_then_stops_and_foreach_sees_ordered_ids() -> None:
    stream = MemoryStream(DATA.schema, max_records_per_batch=100)
    stream.add_rows(DATA)
    seen: list[tuple[int, int]] = []

    def record(df: sk.DataFrame, batch_id: int) -> None:
        seen.append((batch_id, df.to_arrow().num_rows))

    q = (
        sk.read_stream.source(stream)
        .filter(sk.col("value") > 0)
        .write_stream.trigger(available_now=True)
        .foreach_batch(record)
        .start()
    )
    assert q.await_termination(timeout=30)
    assert [b for b, _ in seen] == list(range(len(seen)))
    assert len(seen) == -(-DATA.num_rows // 100)
    positive = DATA.filter(pa.compute.greater(DATA["value"], 0)).num_rows
    assert sum(n for _, n in seen) == positive


def test_batch_api_on_a_stream_says_what_to_do() -> None:
    df = sk.read_stream.source(MemoryStream(DATA.schema))
    with pytest.raises(sk.StreamkitError, match="write_stream"):
        df.to_arrow()
