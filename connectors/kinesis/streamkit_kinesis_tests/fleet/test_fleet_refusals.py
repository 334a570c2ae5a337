"""Fleet mode refuses at start, naming the fix, what it cannot run (no server needed), and
fleet tasks sharing one sink directory never touch each other's files."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from streamkit_kinesis.source import KinesisStreamSource

import streamkit as sk
from streamkit.config import AwsEndpoint
from streamkit.errors import PlanError
from streamkit.streaming.sinks import ParquetSink
from streamkit.testing.events import SCHEMA


@pytest.fixture(autouse=True)
def fleet_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMKIT_FLEET", "1")


def kinesis_df() -> sk.DataFrame:
    """A Kinesis stream (nothing is contacted until a query starts)."""
    endpoint = AwsEndpoint.local("http://127.0.0.1:9")
    return sk.read_stream.source(KinesisStreamSource("s", "app", endpoint, schema=SCHEMA))


def counts(df: sk.DataFrame) -> sk.DataFrame:
    marked = df.with_watermark("event_time", "1 minute")
    return marked.group_by(sk.window("event_time", "1 minute"), "action").agg(sk.count())


def test_a_source_other_than_kinesis_is_refused_naming_the_fix(tmp_path: Path) -> None:
    df = sk.read_stream.memory(SCHEMA)
    writer = counts(df).write_stream.checkpoint(str(tmp_path / "ck")).parquet(str(tmp_path / "o"))
    with pytest.raises(PlanError, match=r"sk\.read_stream\.kinesis.*unset STREAMKIT_FLEET"):
        writer.start()


def test_a_sink_tasks_cannot_share_is_refused(tmp_path: Path) -> None:
    writer = counts(kinesis_df()).write_stream.checkpoint(str(tmp_path / "ck")).memory("m")
    with pytest.raises(PlanError, match=r"\.parquet\(path\) or \.json\(path\)"):
        writer.start()


def test_no_checkpoint_root_is_refused() -> None:
    writer = counts(kinesis_df()).write_stream.foreach_batch(lambda df, bid: None)
    with pytest.raises(PlanError, match=r"checkpoint root shared by its workers"):
        writer.start()


def test_a_trigger_that_stops_by_itself_is_refused(tmp_path: Path) -> None:
    writer = (
        counts(kinesis_df())
        .write_stream.trigger(available_now=True)
        .checkpoint(str(tmp_path / "ck"))
        .parquet(str(tmp_path / "o"))
    )
    with pytest.raises(PlanError, match=r"processing-time trigger"):
        writer.start()


def test_tasks_sharing_a_parquet_directory_keep_their_own_files(tmp_path: Path) -> None:
    """Two tasks write batch 0 and batch 1 into one directory, one of them writes its batch
    1 again (a re-run after a crash): the directory read as one dataset holds each task's
    latest attempt of each batch, nothing twice."""
    out = str(tmp_path / "out")
    a, b = ParquetSink(out).for_task("shard-a"), ParquetSink(out).for_task("shard-b")

    def rows(task: str, bid: int, n: int) -> pa.Table:
        return pa.table({"task": [task] * n, "batch": [bid] * n})

    async def write() -> None:
        for bid in (0, 1):
            await a.add_batch(bid, rows("a", bid, 2))
            await b.add_batch(bid, rows("b", bid, 3))
        again = ParquetSink(out).for_task("shard-a")  # a new owner of task a re-runs batch 1
        await again.add_batch(1, rows("a", 1, 1))

    asyncio.run(write())
    got = sorted(ds.dataset(out, format="parquet").to_table().to_pylist(), key=str)
    want = [{"task": "a", "batch": 0}] * 2 + [{"task": "a", "batch": 1}]
    want += [{"task": "b", "batch": 0}] * 3 + [{"task": "b", "batch": 1}] * 3
    assert got == sorted(want, key=str)
    names = sorted(p.name for p in Path(out).iterdir())
    assert "part-shard-a-000000000-0.parquet" in names
    assert "_streamkit_pending-shard-a.json" in names
