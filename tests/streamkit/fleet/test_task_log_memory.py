"""Staging a fleet task's output allocates nothing from Arrow's default memory pool (as the
checkpoint's state files since commit 32d525a): pyarrow's IPC writer took its LZ4 buffers
from it (mimalloc), which kept the pages, so RSS grew with every staged batch. Counted
with the pool's total of bytes ever allocated, not with RSS, in a fresh interpreter (the
pool is process-wide: threads left by other tests must not add to the count). What was
staged reads back as the table staged, by the reader of the files pyarrow wrote
(``pyarrow.ipc``)."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
from pyarrow import ipc

from streamkit.fleet.task_log import FencedTaskLog
from streamkit.streaming import _envelope as envelope
from tests.streamkit.arrow_pool import default_pool_bytes_in_child

BATCHES = 25
ROWS = 2_000
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def output(rng: np.random.Generator, batch: int) -> pa.Table:
    """An aggregation task's output as it stages it (``result.output.to_arrow()``):
    windows, an action, count, sum, average."""
    start = pl.lit(T0) + pl.duration(minutes=pl.int_range(ROWS) + batch * ROWS)
    frame = pl.DataFrame(
        {
            "action": rng.choice(["view", "click", "buy"], ROWS),
            "n": rng.integers(1, 99, ROWS).astype(np.uint32),
            "total": rng.integers(0, 1 << 40, ROWS),
            "mean": rng.random(ROWS),
        }
    )
    window = pl.struct(start.alias("start"), (start + pl.duration(minutes=1)).alias("end"))
    frame = frame.select(window.alias("window"), pl.all())
    return frame.to_arrow()


def stage_batches(directory: Path) -> tuple[list[pa.Table], int]:
    """Stage, commit and publish 25 outputs as an aggregation task does; the tables and the
    bytes the default pool gave meanwhile."""
    rng = np.random.default_rng(14)
    tables = [output(rng, b) for b in range(BATCHES)]
    owner = FencedTaskLog(str(directory), "a", "s")
    owner.claim(1)
    pool = pa.default_memory_pool()
    before = pool.total_bytes_allocated()
    for bid, table in enumerate(tables):
        owner.stage(bid, table)
        owner.commit(bid, str(bid))
        owner.published(bid, table.num_rows)
    return tables, pool.total_bytes_allocated() - before



def test_staged_output_takes_nothing_from_arrows_default_pool(tmp_path: Path) -> None:
    taken = default_pool_bytes_in_child(f"{__name__}:stage_batches", tmp_path / "child")
    assert taken < 2**20  # pyarrow's writer: 5.7 MB here
    tables, _ = stage_batches(tmp_path / "here")
    heir = FencedTaskLog(str(tmp_path / "here"), "b", "s")
    assert heir.claim(2).batch == BATCHES - 1
    staged = heir.staged_output()  # the sink receives it again: the same table
    assert staged is not None
    assert staged.schema.equals(tables[-1].schema)
    assert staged.equals(tables[-1])


def pyarrow_ipc_file(table: pa.Table) -> bytes:
    """``table`` staged as before: an LZ4 Arrow IPC file from pyarrow's writer."""
    sink = pa.BufferOutputStream()
    with ipc.new_file(sink, table.schema, options=ipc.IpcWriteOptions(compression="lz4")) as w:
        w.write_table(table)
    data: bytes = sink.getvalue().to_pybytes()
    return data


def test_files_of_either_writer_read_back_alike(tmp_path: Path) -> None:
    """The staged file's format did not change (an Arrow IPC file, LZ4): a staged output
    written by pyarrow's writer (before) reads as one written by Polars' (now)."""
    table = output(np.random.default_rng(7), 0)
    owner = FencedTaskLog(str(tmp_path), "a", "s")
    owner.claim(1)
    owner.stage(0, table)
    assert owner.log is not None
    raw = owner.log.store.read_bytes("output/000000000000")
    assert raw is not None
    now = envelope.open_(raw, "now", ValueError)
    for body in (now, pyarrow_ipc_file(table)):
        reader = ipc.open_file(io.BytesIO(body))
        assert reader.read_all().equals(table)
        batch = reader.get_batch(0)
        assert batch.num_rows == table.num_rows
    assert ipc.open_file(io.BytesIO(now)).schema.equals(table.schema)
