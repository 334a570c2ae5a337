"""Sinks: console output, memory sink modes and replays, local Parquet idempotence, foreach_batch.

``FailingStore`` (a real store that fails the n-th Parquet file write) simulates a crash in
the middle of a batch; tests/integration/test_stream_sinks_s3.py reuses it on S3.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Awaitable
from datetime import date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streamkit as sk
from streamkit.errors import ColumnNotFoundError
from streamkit.streaming.checkpoint_store import LocalCheckpointStore
from streamkit.streaming.contracts import CheckpointStore, Sink
from streamkit.streaming.sinks import (
    ConsoleSink,
    ForeachBatchSink,
    MemorySink,
    MemorySinkError,
    MemoryTableNotFoundError,
    ParquetSink,
    ParquetSinkError,
    drop_memory_table,
    memory_table,
)
from streamkit.testing.tables import assert_table_equal

H = 3_600_000_000  # one hour in microseconds


def windows(starts: list[int | None]) -> pa.StructArray:
    """Hour windows starting at ``starts`` hours after 2024-01-01 (None: a null window)."""
    base = 1_704_067_200_000_000
    start = pa.array([None if s is None else base + s * H for s in starts], pa.timestamp("us"))
    end = pa.array([None if s is None else base + (s + 1) * H for s in starts], pa.timestamp("us"))
    return pa.StructArray.from_arrays([start, end], names=["start", "end"])


def rows(actions: list[str | None], counts: list[int], starts: list[int | None]) -> pa.Table:
    return pa.table({"window": windows(starts), "action": actions, "count": counts})


def run(coro: Awaitable[None]) -> None:
    async def main() -> None:
        await coro

    asyncio.run(main())


def test_every_sink_implements_the_contract(tmp_path: Path) -> None:
    sinks: list[Sink] = [
        ConsoleSink(stream=io.StringIO()),
        MemorySink("contract"),
        ParquetSink(str(tmp_path)),
        ForeachBatchSink(lambda df, bid: None),
    ]
    assert len(sinks) == 4


# --- console ---------------------------------------------------------------------------


@pytest.mark.parametrize("use_rich", [False, True])
def test_console_prints_batch_header_rows_and_windows(use_rich: bool) -> None:
    out = io.StringIO()
    sink = ConsoleSink(max_rows=2, stream=out, use_rich=use_rich)
    table = rows(["click", "view", None], [12, 3, 7], [0, 1, None])
    run(sink.add_batch(3, table))
    run(sink.close())
    lines = out.getvalue().splitlines()
    assert lines[1] == "Batch: 3"
    body = "\n".join(lines)
    header = next(ln for ln in lines if "window" in ln)
    assert header.index("window") < header.index("action") < header.index("count")
    row0 = next(ln for ln in lines if "click" in ln)
    assert "2024-01-01 00:00:00 - 2024-01-01 01:00:00" in row0
    assert row0.rstrip(" │|").endswith("12")
    assert "2024-01-01 01:00:00 - 2024-01-01 02:00:00" in body
    assert "null" not in body  # the third row is not shown
    assert "only showing top 2 of 3 rows" in body


def test_console_plain_table_is_aligned_and_writes_to_current_stdout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    sink = ConsoleSink(use_rich=False)
    run(sink.add_batch(0, pa.table({"k": ["a", None], "v": [1.5, 10.25]})))
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == ["-" * 43, "Batch: 0", "-" * 43]
    assert lines[3:] == [
        "+------+-------+",
        "| k    | v     |",
        "+------+-------+",
        "| a    |   1.5 |",
        "| null | 10.25 |",
        "+------+-------+",
        "",
    ]


def test_console_empty_batch_prints_the_header() -> None:
    out = io.StringIO()
    run(
        ConsoleSink(stream=out, use_rich=False).add_batch(
            7, pa.table({"k": pa.array([], "string")})
        )
    )
    assert "Batch: 7" in out.getvalue()
    assert "| k |" in out.getvalue()
    assert "only showing" not in out.getvalue()


# --- memory ----------------------------------------------------------------------------


def test_memory_append_accumulates_and_replaces_a_re_added_batch() -> None:
    sink = MemorySink("append-test", mode="append")
    assert memory_table("append-test").num_rows == 0
    run(sink.add_batch(0, pa.table({"v": [1, 2]})))
    run(sink.add_batch(1, pa.table({"v": [3]})))
    run(sink.add_batch(2, pa.table({"v": pa.array([], pa.int64())})))
    assert memory_table("append-test").column("v").to_pylist() == [1, 2, 3]
    run(sink.add_batch(1, pa.table({"v": [30, 31]})))  # replay of batch 1 after a restart
    assert sink.table().column("v").to_pylist() == [1, 2, 30, 31]
    run(sink.add_batch(0, pa.table({"v": [10]})))  # any batch id can be replaced
    assert sink.table().column("v").to_pylist() == [10, 30, 31]
    assert sink.last_batch_id == 2
    assert sink.to_frame().count() == 3


def test_memory_complete_replaces_and_refuses_an_older_batch() -> None:
    sink = MemorySink("complete-test", mode="complete", keys=["window", "action"])
    run(sink.add_batch(0, rows(["a"], [1], [0])))
    run(sink.add_batch(1, rows(["a", "b"], [2, 1], [0, 0])))
    assert memory_table("complete-test").column("count").to_pylist() == [2, 1]
    run(sink.add_batch(1, rows(["a", "b"], [2, 5], [0, 0])))
    assert memory_table("complete-test").column("count").to_pylist() == [2, 5]
    with pytest.raises(MemorySinkError, match="only the last batch id"):
        run(sink.add_batch(0, rows(["a"], [1], [0])))


def test_memory_update_upserts_by_window_and_key_with_nulls() -> None:
    sink = MemorySink("update-test", mode="update", keys=["window", "action"])
    run(sink.add_batch(0, rows(["a", "b", None], [1, 1, 1], [0, 0, None])))
    run(sink.add_batch(1, rows(["a", None, "a"], [2, 4, 1], [0, None, 1])))
    got = memory_table("update-test")
    assert got.schema == rows(["a"], [1], [0]).schema  # Arrow types are kept
    expected = rows(["a", "b", None, "a"], [2, 1, 4, 1], [0, 0, None, 1])
    assert_table_equal(got, expected, sort_by=["window", "action"])
    assert got.num_rows == 4


def test_memory_update_re_added_last_batch_is_applied_once() -> None:
    sink = MemorySink("update-replay", mode="update", keys=["action"])
    run(sink.add_batch(0, pa.table({"action": ["a", "b"], "count": [1, 1]})))
    run(sink.add_batch(1, pa.table({"action": ["a"], "count": [2]})))
    # the restarted query re-runs batch 1; its output may differ (e.g. more rows fetched)
    run(sink.add_batch(1, pa.table({"action": ["a", "c"], "count": [3, 1]})))
    got = sorted(zip(*sink.table().to_pydict().values(), strict=True))
    assert got == [("a", 3), ("b", 1), ("c", 1)]
    run(sink.add_batch(1, pa.table({"action": ["c"], "count": [9]})))
    got = sorted(zip(*sink.table().to_pydict().values(), strict=True))
    assert got == [("a", 1), ("b", 1), ("c", 9)]  # batch 0's "a" is back
    with pytest.raises(MemorySinkError, match="got batch 0 after batch 1"):
        run(sink.add_batch(0, pa.table({"action": ["a"], "count": [1]})))


def test_memory_update_last_row_of_a_repeated_key_wins() -> None:
    sink = MemorySink("update-dup", mode="update", keys=["k"])
    run(sink.add_batch(0, pa.table({"k": [1, 2, 1], "v": ["x", "y", "z"]})))
    assert sorted(sink.table().to_pylist(), key=lambda r: r["k"]) == [
        {"k": 1, "v": "z"},
        {"k": 2, "v": "y"},
    ]


def test_memory_update_without_keys_appends() -> None:
    sink = MemorySink("update-nokeys", mode="update")
    run(sink.add_batch(0, pa.table({"v": [1]})))
    run(sink.add_batch(1, pa.table({"v": [1]})))
    assert sink.table().column("v").to_pylist() == [1, 1]


def test_memory_registry_and_errors() -> None:
    MemorySink("reg", schema=pa.schema([("v", pa.int64())]))
    assert memory_table("reg").schema == pa.schema([("v", pa.int64())])
    newer = MemorySink("reg")
    run(newer.add_batch(0, pa.table({"v": [5]})))
    assert memory_table("reg").column("v").to_pylist() == [5]
    drop_memory_table("reg")
    with pytest.raises(MemoryTableNotFoundError, match="no memory sink named 'reg'"):
        memory_table("reg")
    with pytest.raises(MemorySinkError, match="unknown output mode"):
        MemorySink("x", mode="upsert")  # type: ignore[arg-type]
    bad_keys = MemorySink("bad-keys", mode="update", keys=["missing"])
    with pytest.raises(ColumnNotFoundError):
        run(bad_keys.add_batch(0, pa.table({"v": [1]})))


batch_rows = st.lists(
    st.tuples(st.one_of(st.none(), st.integers(0, 4)), st.integers(0, 100)), max_size=6
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(batch_rows, st.booleans()), min_size=1, max_size=8))
def test_memory_update_equals_a_dict_upsert(
    batches: list[tuple[list[tuple[int | None, int]], bool]],
) -> None:
    """Random batches (some re-added with other rows, as after a restart) vs a dict oracle."""
    sink = MemorySink("update-prop", mode="update", keys=["k"])
    oracle: dict[int | None, int] = {}
    for batch_id, (items, replay) in enumerate(batches):
        before = dict(oracle)
        attempts = [items[::-1], items] if replay else [items]
        for attempt in attempts:
            table = pa.table(
                {"k": pa.array([k for k, _ in attempt], pa.int64()), "v": [v for _, v in attempt]}
            )
            run(sink.add_batch(batch_id, table))
            oracle = {**before, **dict(attempt)}
    got = {r["k"]: r["v"] for r in sink.table().to_pylist()}
    assert sink.table().num_rows == len(got)
    assert got == oracle


# --- parquet (local) -------------------------------------------------------------------


class FailingStore:
    """A real store whose ``fail_on``-th Parquet file write raises (a crash mid-batch)."""

    def __init__(self, inner: CheckpointStore, fail_on: int) -> None:
        self.inner, self.fail_on, self.file_writes = inner, fail_on, 0
        self._lock = threading.Lock()  # files of a batch are written from several threads

    def write_bytes(self, relative_path: str, data: bytes) -> None:
        if relative_path.endswith(".parquet"):
            with self._lock:
                self.file_writes += 1
                fail = self.file_writes == self.fail_on
            if fail:
                raise OSError("simulated crash while writing the batch")
        self.inner.write_bytes(relative_path, data)

    def read_bytes(self, relative_path: str) -> bytes | None:
        return self.inner.read_bytes(relative_path)

    def list(self, relative_dir: str) -> list[str]:
        return self.inner.list(relative_dir)

    def delete(self, relative_path: str) -> None:
        self.inner.delete(relative_path)


def events(n: int, offset: int = 0) -> pa.Table:
    ids = list(range(offset, offset + n))
    return pa.table(
        {
            "id": ids,
            "action": [("click", "view", "buy/now", None)[i % 4] for i in ids],
            "day": [date(2024, 1, 1 + i % 2) for i in ids],
        }
    )


def read_ids(path: str) -> list[int]:
    return sorted(sk.read.parquet(path).to_arrow().column("id").to_pylist())


def test_parquet_writes_one_file_per_batch_and_rewrite_replaces(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    sink = ParquetSink(out)
    run(sink.add_batch(0, events(5)))
    run(sink.add_batch(1, events(3, offset=5)))
    run(sink.add_batch(2, events(0)))  # empty: nothing written
    names = sorted(p.name for p in Path(out).iterdir())
    assert names == [
        "_streamkit_pending.json",
        "batch-000000000-part-0.parquet",
        "batch-000000001-part-0.parquet",
    ]
    run(sink.add_batch(1, events(3, offset=5)))  # re-run of batch 1 in this process
    assert read_ids(out) == list(range(8))
    # a restarted process re-runs batch 1 with the same rows
    run(ParquetSink(out).add_batch(1, events(3, offset=5)))
    assert read_ids(out) == list(range(8))
    with pytest.raises(ParquetSinkError, match="already holds batch 1"):
        run(ParquetSink(out).add_batch(0, events(1)))


def test_parquet_crash_mid_batch_is_cleaned_by_the_re_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(ParquetSink(str(out), partition_by="action").add_batch(0, events(4)))
    crashing = ParquetSink(
        str(out), partition_by="action", store=FailingStore(LocalCheckpointStore(out), 3)
    )
    with pytest.raises(OSError, match="simulated crash"):
        run(crashing.add_batch(1, events(8, offset=4)))
    leftovers = sorted(str(p.relative_to(out)) for p in out.rglob("batch-000000001-*"))
    assert leftovers  # the crash left part of batch 1 behind (3 of its 4 partition files)
    visible = read_ids(str(out))
    assert visible[:4] == [0, 1, 2, 3]
    assert 4 < len(visible) < 12
    # restart: batch 1 is re-run, now with fewer rows (only "click" and "view")
    rerun = pa.table({"id": [4, 5], "action": ["click", "view"], "day": [date(2024, 1, 1)] * 2})
    run(ParquetSink(str(out), partition_by="action").add_batch(1, rerun))
    assert read_ids(str(out)) == [0, 1, 2, 3, 4, 5]
    batch1 = sorted(str(p.relative_to(out)) for p in out.rglob("batch-000000001-*"))
    assert batch1 == [
        "action=click/batch-000000001-part-0.parquet",
        "action=view/batch-000000001-part-0.parquet",
    ]


def test_parquet_partition_layout_values_and_hive_read(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(ParquetSink(str(out), partition_by="action").add_batch(0, events(8)))
    dirs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert dirs == [
        "action=__HIVE_DEFAULT_PARTITION__",
        "action=buy%2Fnow",
        "action=click",
        "action=view",
    ]
    got = sk.read.parquet(str(out)).to_arrow()
    assert_table_equal(got, events(8), sort_by=["id"])
    by_day = tmp_path / "by_day"
    run(
        ParquetSink(str(by_day), partition_by="day", keep_partition_column=False).add_batch(
            3, events(4)
        )
    )
    assert sorted(p.name for p in by_day.iterdir() if p.is_dir()) == [
        "day=2024-01-01",
        "day=2024-01-02",
    ]
    hive = ds.dataset(str(by_day), format="parquet", partitioning="hive").to_table()
    assert (
        sorted(map(str, hive.column("day").to_pylist())) == ["2024-01-01"] * 2 + ["2024-01-02"] * 2
    )
    assert "day" not in sk.read.parquet(str(by_day)).columns


def test_parquet_splits_large_batches_and_refuses_struct_partitions(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(ParquetSink(str(out), max_rows_per_file=3).add_batch(0, events(7)))
    assert sorted(p.name for p in out.glob("*.parquet")) == [
        f"batch-000000000-part-{k}.parquet" for k in range(3)
    ]
    assert read_ids(str(out)) == list(range(7))
    sink = ParquetSink(str(tmp_path / "w"), partition_by="window")
    with pytest.raises(ParquetSinkError, match="cannot partition by 'window'"):
        run(sink.add_batch(0, rows(["a"], [1], [0])))
    with pytest.raises(ColumnNotFoundError):
        run(ParquetSink(str(tmp_path / "m"), partition_by="nope").add_batch(0, events(1)))


def test_parquet_timestamp_partition_is_uri_escaped(tmp_path: Path) -> None:
    table = pa.table({"t": pa.array([datetime(2024, 1, 1, 10, 30)], pa.timestamp("us")), "v": [1]})
    sink = ParquetSink(str(tmp_path), partition_by="t", keep_partition_column=False)
    run(sink.add_batch(0, table))
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == ["t=2024-01-01 10%3A30%3A00"]
    hive = ds.dataset(str(tmp_path), format="parquet", partitioning="hive").to_table()
    assert hive.to_pylist() == [{"v": 1, "t": "2024-01-01 10:30:00"}]


# --- foreach_batch ---------------------------------------------------------------------


def test_foreach_batch_sync_runs_in_a_worker_thread() -> None:
    calls: list[tuple[int, list[int], str]] = []

    def fn(df: sk.DataFrame, batch_id: int) -> None:
        calls.append(
            (batch_id, df.to_arrow().column("v").to_pylist(), threading.current_thread().name)
        )

    sink = ForeachBatchSink(fn)
    run(sink.add_batch(4, pa.table({"v": [1, 2]})))
    run(sink.add_batch(5, pa.table({"v": [3]})))
    assert [(b, v) for b, v, _ in calls] == [(4, [1, 2]), (5, [3])]
    assert all(t != threading.main_thread().name for _, _, t in calls)


def test_foreach_batch_async_function_and_callable_are_awaited() -> None:
    seen: list[int] = []

    async def fn(df: sk.DataFrame, batch_id: int) -> None:
        await asyncio.sleep(0)
        seen.append(df.count() * 100 + batch_id)

    class Writer:
        async def __call__(self, df: sk.DataFrame, batch_id: int) -> None:
            await asyncio.sleep(0)
            seen.append(-batch_id)

    def returns_coroutine(df: sk.DataFrame, batch_id: int) -> Awaitable[None]:
        return fn(df, batch_id)

    run(ForeachBatchSink(fn).add_batch(1, pa.table({"v": [1, 2, 3]})))
    run(ForeachBatchSink(Writer()).add_batch(2, pa.table({"v": [1]})))
    run(ForeachBatchSink(returns_coroutine).add_batch(3, pa.table({"v": [1]})))
    assert seen == [301, -2, 103]


def test_foreach_batch_error_propagates() -> None:
    def fn(df: sk.DataFrame, batch_id: int) -> None:
        raise RuntimeError(f"downstream rejected batch {batch_id}")

    with pytest.raises(RuntimeError, match="rejected batch 9"):
        run(ForeachBatchSink(fn).add_batch(9, pa.table({"v": [1]})))
