"""The query's input table is bounded by default (issue 18, "bounded by default"): with a
watermark it holds the rows at or after the watermark, without one the newest
``DEFAULT_MAX_ROWS``; only ``Retention.unbounded()`` keeps everything, and it warns.

Expected contents are derived from the rows put, in plain Python: the watermark after
each batch is (largest event time so far, in whole ms) - delay, the engine's rule for a
single-partition source."""

from __future__ import annotations

import random
import warnings
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.errors import ConfigError
from streamkit.streaming import table as table_module
from streamkit.streaming.query import StreamingQuery
from streamkit.streaming.sources.memory import MemoryStream
from streamkit.streaming.table import Retention, UnboundedRetentionWarning

SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("event_time", pa.timestamp("us", "UTC")),
        ("action", pa.string()),
        ("note", pa.string()),
    ]
)
T0 = datetime(2024, 1, 1, tzinfo=UTC)
DELAY = timedelta(minutes=10)


def rows(start: int, n: int, rng: random.Random) -> list[tuple[int, datetime]]:
    """``n`` (id, event time) from id ``start``: event time ~1 minute per 10 ids, a fifth
    of them up to 15 minutes behind (some behind the watermark, hence late), µs-precise."""
    out: list[tuple[int, datetime]] = []
    for i in range(start, start + n):
        back = timedelta(minutes=rng.uniform(0, 15)) if rng.random() < 0.2 else timedelta()
        out.append((i, T0 + timedelta(minutes=i / 10, microseconds=rng.randrange(1000)) - back))
    return out


def put_rows(stream: MemoryStream, batch: list[tuple[int, datetime]]) -> None:
    stream.add_rows(
        [{"id": i, "event_time": t, "action": f"a{i % 3}", "note": "x" * (i % 5)} for i, t in batch]
    )


def watermarked(stream: MemoryStream) -> sk.DataFrame:
    df = sk.read_stream.source(stream).with_watermark("event_time", "10 minutes")
    return df.group_by(sk.window("event_time", "5 minutes"), "action").agg(sk.count().alias("n"))


def held_ids(q: StreamingQuery) -> list[int]:
    return sorted(q.table.snapshot().column("id").to_pylist())


def test_with_a_watermark_the_table_holds_the_rows_at_or_after_it() -> None:
    rng = random.Random(18)
    stream = MemoryStream(SCHEMA)
    q = watermarked(stream).write_stream.output_mode("update").memory("bounded_wm").start()
    put: list[tuple[int, datetime]] = []
    most_held = 0
    try:
        for b in range(40):
            batch = rows(b * 100, 100, rng)
            put_rows(stream, batch)
            q.process_all_available()
            put += batch
            newest = max(t for _, t in put)
            whole_ms = newest - timedelta(microseconds=newest.microsecond % 1000)
            mark = whole_ms - DELAY
            expected = sorted(i for i, t in put if t >= mark)
            assert q.last_progress is not None
            assert q.last_progress.watermark == mark
            assert held_ids(q) == expected, f"batch {b}"
            most_held = max(most_held, q.table.num_rows)
    finally:
        q.stop()
    # 10 minutes of event time is ~100 ids: the table never held much more than that,
    # while 4,000 rows went through it.
    assert q.table.appended_rows == 4000
    assert most_held < 250
    assert q.table.evicted_rows == 4000 - q.table.num_rows
    # The aggregation still saw every on-time row (the table's retention is not the state).
    assert sum(r["n"] for r in sk.memory_table("bounded_wm").to_pylist()) > 0


def test_without_a_watermark_the_table_holds_the_newest_rows_of_the_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(table_module, "DEFAULT_MAX_ROWS", 250)
    rng = random.Random(7)
    stream = MemoryStream(SCHEMA)
    df = sk.read_stream.source(stream).group_by("action").agg(sk.count().alias("n"))
    q = df.write_stream.output_mode("complete").memory("bounded_rows").start()
    put: list[int] = []
    try:
        for b in range(12):
            batch = rows(b * 70, 70, rng)
            put_rows(stream, batch)
            q.process_all_available()
            put += [i for i, _ in batch]
            assert held_ids(q) == sorted(put[-250:]), f"batch {b}"
    finally:
        q.stop()
    assert q.table.retention == Retention.rows(250)
    counts = {r["action"]: r["n"] for r in sk.memory_table("bounded_rows").to_pylist()}
    assert counts == {f"a{k}": sum(1 for i in put if i % 3 == k) for k in range(3)}


def test_asking_for_unbounded_warns_and_keeps_every_row() -> None:
    with pytest.warns(UnboundedRetentionWarning, match="grows without limit"):
        policy = Retention.unbounded()
    stream = MemoryStream(SCHEMA)
    q = watermarked(stream).write_stream.retention(policy).memory("unbounded").start()
    try:
        put_rows(stream, rows(0, 500, random.Random(1)))
        q.process_all_available()
        put_rows(stream, rows(500, 500, random.Random(2)))
        q.process_all_available()
    finally:
        q.stop()
    assert held_ids(q) == list(range(1000))
    assert q.table.schema == SCHEMA  # an explicit retention keeps every column


def test_the_default_and_the_bounded_policies_do_not_warn() -> None:
    stream = MemoryStream(SCHEMA)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnboundedRetentionWarning)
        q = watermarked(stream).write_stream.memory("quiet").start()
        q.stop()
        Retention.rows(10)
        Retention.watermark()
        Retention.age("event_time", "1 hour")


def test_an_explicit_watermark_retention_keeps_every_column() -> None:
    stream = MemoryStream(SCHEMA)
    writer = watermarked(stream).write_stream.retention(Retention.watermark())
    q = writer.output_mode("update").memory("wm_all_columns").start()
    put = rows(0, 300, random.Random(3))
    try:
        put_rows(stream, put)
        q.process_all_available()
    finally:
        q.stop()
    assert q.table.schema == SCHEMA
    assert q.last_progress is not None
    mark = q.last_progress.watermark
    assert mark is not None
    assert held_ids(q) == sorted(i for i, t in put if t >= mark)


def test_a_watermark_retention_needs_a_watermark() -> None:
    df = sk.read_stream.source(MemoryStream(SCHEMA)).group_by("action").agg(sk.count())
    writer = df.write_stream.output_mode("complete").retention(Retention.watermark())
    with pytest.raises(ConfigError, match="with_watermark"):
        writer.memory("no_wm").start()
