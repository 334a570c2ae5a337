"""UnboundedTable: zero-copy appends, retention, consistent snapshots, the batch query API."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import duckdb
import polars as pl
import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.errors import ConfigError, SchemaError
from streamkit.streaming.table import (
    DEFAULT_MAX_ROWS,
    Retention,
    UnboundedTable,
    resolve_retention,
)

SCHEMA = pa.schema(
    [
        ("event_time", pa.timestamp("us", tz="UTC")),
        ("action", pa.string()),
        ("value", pa.int64()),
    ]
)
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def batch(minutes: list[int], actions: list[str] | None = None) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [
            pa.array([T0 + timedelta(minutes=m) for m in minutes], SCHEMA.field(0).type),
            pa.array(actions or ["a"] * len(minutes)),
            pa.array(minutes, pa.int64()),
        ],
        schema=SCHEMA,
    )


def values(table: UnboundedTable) -> list[int]:
    return list(table.snapshot().column("value").to_pylist())


def test_appends_are_zero_copy_and_snapshots_see_whole_batches() -> None:
    table = UnboundedTable(SCHEMA)
    first = batch([1, 2, 3])
    table.append(first)
    table.append(pa.Table.from_batches([batch([4]), batch([5, 6])]))
    table.append(batch([]))
    snap = table.snapshot()
    assert table.num_rows == 6
    assert values(table) == [1, 2, 3, 4, 5, 6]
    assert (
        snap.column("value").chunks[0].buffers()[1].address == first.column(2).buffers()[1].address
    )
    table.append(batch([7]))
    assert snap.num_rows == 6, "a snapshot does not change after later appends"


def test_append_names_the_mismatching_field() -> None:
    table = UnboundedTable(SCHEMA)
    times = pa.array([T0], SCHEMA.field(0).type)
    with pytest.raises(SchemaError, match="field 'value' is double, the table has int64"):
        table.append(pa.table({"event_time": times, "action": ["a"], "value": [1.5]}))
    naive = pa.array([T0.replace(tzinfo=None)], pa.timestamp("us"))
    with pytest.raises(SchemaError, match="field 'event_time' is timestamp"):
        table.append(pa.table({"event_time": naive, "action": ["a"], "value": [1]}))
    with pytest.raises(SchemaError, match=r"missing \['value'\]"):
        table.append(pa.table({"event_time": times, "action": ["a"]}))
    nullability_only = pa.schema([SCHEMA.field(0).with_nullable(False), *list(SCHEMA)[1:]])
    table.append(pa.Table.from_batches([batch([1])]).cast(nullability_only))
    assert table.snapshot().schema == SCHEMA
    assert table.num_rows == 1


def test_row_retention_keeps_the_last_n_rows() -> None:
    table = UnboundedTable(SCHEMA, Retention.rows(4))
    table.append(batch([1, 2, 3]))
    table.append(batch([4, 5]))
    assert values(table) == [2, 3, 4, 5]
    table.append(batch([6, 7, 8, 9, 10]))
    assert values(table) == [7, 8, 9, 10]
    assert (table.appended_rows, table.evicted_rows, table.num_rows) == (10, 6, 4)


def test_age_retention_drops_rows_older_than_newest_minus_duration() -> None:
    table = UnboundedTable(SCHEMA, Retention.age("event_time", "10 minutes"))
    table.append(batch([0, 30, 5]))
    assert values(table) == [30]
    table.append(batch([25, 45, 31]))
    assert values(table) == [45]  # newest is 45: keep >= 35
    table.append(batch([40, 20]))  # 40 kept, 20 is already too old
    assert values(table) == [45, 40]
    assert table.evicted_rows == 6


def test_age_retention_keeps_rows_without_event_time() -> None:
    table = UnboundedTable(SCHEMA, Retention.age("event_time", timedelta(minutes=1)))
    nulls = pa.RecordBatch.from_arrays(
        [pa.nulls(1, SCHEMA.field(0).type), pa.array(["n"]), pa.array([-1])], schema=SCHEMA
    )
    table.append(nulls)
    table.append(batch([0, 10]))
    assert values(table) == [-1, 10]


def test_age_retention_needs_a_timestamp_column() -> None:
    with pytest.raises(SchemaError, match="timestamp"):
        UnboundedTable(SCHEMA, Retention.age("value", "1 hour"))
    with pytest.raises(SchemaError, match="'nope'"):
        UnboundedTable(SCHEMA, Retention.age("nope", "1 hour"))


def watermark_table() -> UnboundedTable:
    return UnboundedTable(SCHEMA, Retention("watermark", column="event_time"))


def test_watermark_retention_drops_rows_behind_the_watermark_it_is_given() -> None:
    table = watermark_table()
    table.append(batch([0, 30, 5]))
    table.drop_behind(None)  # no watermark yet: nothing to drop
    assert values(table) == [0, 30, 5]
    table.drop_behind(T0 + timedelta(minutes=5))
    assert values(table) == [30, 5]  # 5 is at the watermark: kept
    table.append(batch([20, 4, 40]))
    assert values(table) == [30, 5, 20, 4, 40]  # appends alone never drop
    table.drop_behind(T0 + timedelta(minutes=20, microseconds=1))
    assert values(table) == [30, 40]
    assert (table.appended_rows, table.evicted_rows, table.num_rows) == (6, 4, 2)


def test_watermark_retention_drops_rows_without_event_time() -> None:
    table = watermark_table()
    nulls = pa.RecordBatch.from_arrays(
        [pa.array([None, T0], SCHEMA.field(0).type), pa.array(["n", "m"]), pa.array([-1, 0])],
        schema=SCHEMA,
    )
    table.append(nulls)
    only_null = [pa.nulls(1, SCHEMA.field(0).type), pa.array(["n"]), pa.array([-2])]
    table.append(pa.RecordBatch.from_arrays(only_null, schema=SCHEMA))
    table.drop_behind(T0)
    assert values(table) == [0]


@pytest.mark.parametrize("unit", ["s", "ms", "ns"])
def test_watermark_retention_compares_in_the_column_unit(unit: str) -> None:
    schema = pa.schema([("t", pa.timestamp(unit))])  # tz-naive: ticks since the epoch
    table = UnboundedTable(schema, Retention("watermark", column="t"))
    times = [T0.replace(tzinfo=None) + timedelta(seconds=s) for s in (0, 1, 2, 3)]
    table.append(pa.table({"t": pa.array(times, schema.field(0).type)}))
    table.drop_behind(T0 + timedelta(seconds=1, milliseconds=500))
    assert [t.second for t in table.snapshot().column("t").to_pylist()] == [2, 3]


def test_other_retentions_ignore_the_watermark() -> None:
    table = UnboundedTable(SCHEMA, Retention.rows(10))
    table.append(batch([0, 1]))
    table.drop_behind(T0 + timedelta(hours=1))
    assert values(table) == [0, 1]


def test_resolve_retention_defaults_to_the_watermark_else_a_row_budget() -> None:
    df = sk.from_arrow(pa.Table.from_batches([batch([1])]))
    assert resolve_retention(None, df.plan) == Retention.rows(DEFAULT_MAX_ROWS)
    marked = df.with_watermark("event_time", "1 minute")
    assert resolve_retention(None, marked.plan) == Retention("watermark", column="event_time")
    assert resolve_retention(Retention.rows(3), marked.plan) == Retention.rows(3)
    with pytest.raises(ConfigError, match="with_watermark"):
        resolve_retention(Retention.watermark(), df.plan)
    with pytest.raises(ConfigError, match="column"):
        UnboundedTable(SCHEMA, Retention.watermark())
    with pytest.raises(SchemaError, match="timestamp"):
        UnboundedTable(SCHEMA, Retention("watermark", column="value"))


def test_queries_use_the_batch_api() -> None:
    table = UnboundedTable(SCHEMA)
    table.append(batch([1, 2, 3], ["a", "b", "a"]))
    table.append(batch([70], ["a"]))
    result = (
        table.to_frame()
        .group_by(sk.window("event_time", "1 hour"), "action")
        .agg(sk.count().alias("n"), sk.sum("value").alias("total"))
        .to_arrow()
        .sort_by([("action", "ascending"), ("n", "ascending")])
    )
    assert result.select(["action", "n", "total"]).to_pylist() == [
        {"action": "a", "n": 1, "total": 70},
        {"action": "a", "n": 2, "total": 4},
        {"action": "b", "n": 1, "total": 2},
    ]


def test_pandas_polars_and_duckdb_read_a_snapshot() -> None:
    table = UnboundedTable(SCHEMA)
    table.append(batch([1, 2], ["x", "y"]))
    polars_frame = table.to_polars()
    assert isinstance(polars_frame, pl.DataFrame)
    assert polars_frame["value"].to_list() == [1, 2]
    assert table.to_pandas()["action"].tolist() == ["x", "y"]
    con = duckdb.connect()
    con.register("events", table.snapshot())  # an Arrow scan, no copy into DuckDB
    assert con.execute("select action, value from events order by value").fetchall() == [
        ("x", 1),
        ("y", 2),
    ]


def test_snapshots_during_concurrent_appends_hold_whole_batches() -> None:
    table = UnboundedTable(SCHEMA, Retention.rows(50_000))
    stop = threading.Event()
    seen: list[int] = []

    def read() -> None:
        while not stop.is_set():
            snap = table.snapshot()
            seen.append(snap.num_rows)
            assert snap.num_rows % 100 == 0

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(1000):
            table.append(batch(list(range(100))))
    finally:
        stop.set()
        reader.join()
    assert table.num_rows == 50_000
    assert seen
