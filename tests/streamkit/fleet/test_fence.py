"""The fence of a fleet task's log (streamkit.fleet.fence, streamkit.fleet.task_log) on a
local checkpoint folder: a later claim refuses every later commit of an earlier owner, a
restore reads only what the fence names, and earlier epochs' folders are deleted."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from streamkit.fleet.fence import FENCE_FILE, FenceRecord, TaskFence, TaskFencedError
from streamkit.fleet.task_log import FencedTaskLog
from streamkit.streaming.checkpoint import CheckpointLog
from streamkit.streaming.checkpoint_store import LocalCheckpointStore


def _batch(task: FencedTaskLog, bid: int, rows: list[int], offset: str) -> None:
    """One batch as an aggregation task runs it, up to (not including) the commit."""
    assert task.log is not None
    task.log.write_offsets(bid, {"s": offset})
    task.stage(bid, pa.table({"x": rows}))
    task.log.write_state(bid, pl.DataFrame({"x": rows}))
    task.log.write_commit(bid, {"s": offset}, {})


def test_later_claim_refuses_the_earlier_owners_commit(tmp_path: Path) -> None:
    store = LocalCheckpointStore(tmp_path)
    old, new = TaskFence(store, "t", "w1"), TaskFence(store, "t", "w2")
    assert old.claim(3) == FenceRecord(0, "")
    old.commit(0, "10")
    taken = new.claim(8)
    assert (taken.epoch, taken.batch, taken.offset) == (3, 0, "10")
    with pytest.raises(TaskFencedError, match="epoch 8"):
        old.commit(1, "20")
    # a late claim with a lower epoch; the message says what to do if the lease table was
    # recreated under a kept checkpoint root (counters restarting below the fence's epoch)
    with pytest.raises(TaskFencedError, match=r"epoch 8 .*restore the table, or delete"):
        TaskFence(store, "t", "w1").claim(5)
    with pytest.raises(TaskFencedError):  # the same epoch again
        TaskFence(store, "t", "w3").claim(8)
    new.commit(1, "30")
    raw = store.read_bytes(FENCE_FILE)
    assert raw is not None
    now = FenceRecord.from_bytes(raw, "t")
    assert (now.epoch, now.owner, now.batch, now.log, now.offset) == (8, "w2", 1, 8, "30")


def test_restore_reads_only_the_committed_batch_and_its_staged_output(tmp_path: Path) -> None:
    a = FencedTaskLog(str(tmp_path), "a", "s")
    a.claim(4)
    _batch(a, 0, [1, 2], "100")
    a.commit(0, "100")
    a.published(0, 2)
    _batch(a, 1, [3], "200")  # a pauses here, before its commit of batch 1
    b = FencedTaskLog(str(tmp_path), "b", "s")
    taken = b.claim(9)
    assert (taken.batch, taken.offset, taken.log) == (0, "100", 4)
    assert b.previous is not None
    assert b.previous.state_at(0)["x"].to_list() == [1, 2]
    staged = b.staged_output()  # written to the sink again by b: a may not have
    assert staged is not None
    assert staged.column("x").to_pylist() == [1, 2]
    _batch(b, 1, [7, 8, 9], "300")
    b.commit(1, "300")
    b.published(1, 3)
    with pytest.raises(TaskFencedError):  # a resumes: refused, its batch 1 never counts
        a.commit(1, "200")
    assert not (tmp_path / "epochs" / f"{4:020d}" / "state").exists() or not list(
        (tmp_path / "epochs" / f"{4:020d}" / "state").iterdir()
    ), "the taken-over epoch's folder is deleted after the new owner's first commit"
    c = FencedTaskLog(str(tmp_path), "c", "s")
    taken = c.claim(12)
    assert (taken.batch, taken.offset, taken.log) == (1, "300", 9)
    assert c.previous is not None
    assert c.previous.state_at(1)["x"].to_list() == [7, 8, 9]


def test_uncommitted_claim_leaves_a_folder_the_next_owner_deletes(tmp_path: Path) -> None:
    a = FencedTaskLog(str(tmp_path), "a", "s")
    a.claim(2)
    _batch(a, 0, [1], "1")
    a.commit(0, "1")
    a.published(0, 1)
    b = FencedTaskLog(str(tmp_path), "b", "s")
    b.claim(5)
    _batch(b, 1, [2], "2")  # b dies before its commit
    c = FencedTaskLog(str(tmp_path), "c", "s")
    taken = c.claim(7)
    assert taken.batch == 0
    assert c.fence.record is not None
    assert 5 in c.fence.record.stale
    _batch(c, 1, [3], "3")
    c.commit(1, "3")
    c.published(1, 1)
    for epoch in (2, 5):
        folder = tmp_path / "epochs" / f"{epoch:020d}"
        files = [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")]
        assert files == [], files
    c.commit(2, "4")  # the fence no longer lists them
    raw = (tmp_path / FENCE_FILE).read_bytes()
    assert FenceRecord.from_bytes(raw, "t").stale == ()


def test_a_log_from_before_fencing_is_resumed(tmp_path: Path) -> None:
    legacy = CheckpointLog(LocalCheckpointStore(tmp_path))
    legacy.write_offsets(3, {"s": "42"})
    legacy.write_state(3, pl.DataFrame({"x": [5]}))
    legacy.write_commit(3, {"s": "42"}, {})
    task = FencedTaskLog(str(tmp_path), "w", "s")
    taken = task.claim(1)
    assert (taken.batch, taken.offset, taken.log) == (3, "42", 0)
    assert task.previous is not None
    assert task.previous.state_at(3)["x"].to_list() == [5]
    assert task.staged_output() is None


async def test_a_committed_only_task_sink_keeps_no_pending_list(tmp_path: Path) -> None:
    """A fenced task writes only committed batches, each with one content: writing batch
    N again (a roll-forward, or a paused owner that committed it) rewrites equal files and
    deletes nothing; no pending list is written."""
    import pyarrow.dataset as ds

    from streamkit.streaming.sinks.parquet import ParquetSink

    sink = ParquetSink(str(tmp_path)).for_task("shard-1", committed_only=True)
    await sink.add_batch(3, pa.table({"x": [1, 2]}))
    late = ParquetSink(str(tmp_path)).for_task("shard-1", committed_only=True)
    await sink.add_batch(4, pa.table({"x": [3]}))
    await late.add_batch(3, pa.table({"x": [1, 2]}))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["part-shard-1-000000003-0.parquet", "part-shard-1-000000004-0.parquet"]
    rows = ds.dataset(str(tmp_path), format="parquet").to_table().column("x").to_pylist()
    assert sorted(rows) == [1, 2, 3]
