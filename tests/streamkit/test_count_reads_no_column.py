"""A plan that reads no column (a global count, a literal key or projection) still yields
one value per input row, in batch and stream."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

import streamkit as sk
from streamkit.streaming.sources import FileStreamSource
from streamkit.streaming.table import Retention

SCHEMA = pa.schema([("id", pa.int64()), ("action", pa.string())])
T = pa.table({"a": [1, 2, 3], "b": ["x", "y", "z"]})


def test_batch_global_count_counts_rows() -> None:
    table = pa.table({"id": [1, 2, 3], "action": ["a", "b", "c"]})
    assert sk.from_arrow(table).agg(sk.count().alias("n")).to_arrow().to_pylist() == [{"n": 3}]


def test_pushdown_of_a_plan_reading_no_column_keeps_the_rows(tmp_path: Path) -> None:
    body = b"".join(json.dumps({"id": i, "action": "a"}).encode() + b"\n" for i in range(3))
    (tmp_path / "a.json").write_bytes(body)
    q = (
        sk.read_stream.source(FileStreamSource(str(tmp_path), schema=SCHEMA))
        .agg(sk.count().alias("n"))
        .write_stream.output_mode("complete")
        .retention(Retention.rows(0))
        .trigger(available_now=True)
        .memory("no_columns")
        .start()
    )
    assert q.await_termination(timeout=20)
    assert [p.num_input_rows for p in q.recent_progress] == [3]
    assert sk.memory_table("no_columns").to_pylist() == [{"n": 3}]


def test_count_grouped_by_a_literal_key_counts_every_row() -> None:
    out = sk.from_arrow(T).group_by(sk.lit("k").alias("k")).agg(sk.count().alias("n"))
    assert out.to_polars()["n"].to_list() == [3]


def test_selecting_only_a_literal_keeps_one_row_per_input_row() -> None:
    out = sk.from_arrow(T).select(sk.lit(1).alias("one"))
    assert out.to_polars().height == 3
