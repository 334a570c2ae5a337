"""with_watermark on a column renamed before it runs (as in Spark; more cases in
test_watermark_computed.py), and a failed query's process_all_available raises its error."""

from __future__ import annotations

import datetime as dt
import time

import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.streaming.query import StreamingQueryError
from streamkit.streaming.sources.memory import MemoryStream

S = pa.schema([("ts", pa.timestamp("us", "UTC")), ("a", pa.string())])
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def test_a_watermark_on_a_renamed_column_runs_on_it() -> None:
    """Rows at 0:00 and 2:00 set W = 1:59 on ``event_time``; a row at 0:30 (window
    [0:00, 1:00)) is then late and kept with the columns as read (``ts``)."""
    m = MemoryStream(schema=S)
    df = (
        sk.read_stream.source(m)
        .select(sk.col("ts").alias("event_time"), "a")
        .with_watermark("event_time", "1 minute")
    )
    agg = df.group_by(sk.window("event_time", "1 hour"), "a").agg(sk.count().alias("n"))
    q = agg.write_stream.output_mode("update").memory("renamed_wm").start()
    try:
        m.add_rows(pa.table({"ts": [T0, T0 + dt.timedelta(hours=2)], "a": ["x", "x"]}, schema=S))
        q.process_all_available(timeout=60)
        m.add_rows(pa.table({"ts": [T0 + dt.timedelta(minutes=30)], "a": ["x"]}, schema=S))
        q.process_all_available(timeout=60)
        late = q.late_rows
        assert late is not None
        assert late.to_pylist() == [{"ts": T0 + dt.timedelta(minutes=30), "a": "x"}]
        assert sk.memory_table("renamed_wm").column("n").to_pylist() == [1, 1]
    finally:
        q.stop()


def test_a_watermark_after_with_columns_on_an_untouched_column_runs() -> None:
    m = MemoryStream(schema=S)
    df = sk.read_stream.source(m).with_columns(sk.lit(1).alias("one"))
    agg = (
        df.with_watermark("ts", "1 minute")
        .group_by(sk.window("ts", "1 hour"), "a")
        .agg(sk.sum("one").alias("n"))
    )
    q = agg.write_stream.output_mode("update").memory("kept_wm").start()
    try:
        m.add_rows(pa.table({"ts": [T0, T0], "a": ["x", "x"]}, schema=S))
        q.process_all_available(timeout=60)
        assert sk.memory_table("kept_wm").column("n").to_pylist() == [2]
    finally:
        q.stop()


def test_process_all_available_on_a_failed_query_raises_its_error() -> None:
    m = MemoryStream(schema=S)
    q = sk.read_stream.source(m).write_stream.foreach_batch(_boom).start()
    m.add_rows(pa.table({"ts": [T0], "a": ["x"]}, schema=S))
    deadline = time.monotonic() + 60
    while q.exception is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert q.exception is not None
    with pytest.raises(StreamingQueryError, match="boom"):
        q.process_all_available(timeout=60)


def _boom(frame: sk.DataFrame, batch_id: int) -> None:
    raise RuntimeError("boom")
