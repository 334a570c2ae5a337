"""An aggregation task's fence commit runs to its end once its batch reached it (no server).

A zombie owner continued after a pause reaches its commit while the process's thread pool
is busy (every thread resumed with it); its lease is found lost meanwhile and the batch is
cancelled (``ShardTask.lose``). The commit must still be attempted, and refused by the
fence (logged, naming the stale epoch), and ``lease_lost`` must return only after that:
this worker's next claim of the task comes after the refusal. (When the commit was a
plain ``asyncio.to_thread``, the cancel also cancelled its queued work item: no attempt,
nothing logged, and the fleet fence test waited in vain for the refusal.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, cast

import polars as pl
import pyarrow as pa
import pytest
from streamkit_kinesis.fleet.aggregation_task import AggregationTask

from streamkit.fleet.fence import FENCE_FILE, FenceRecord
from streamkit.fleet.task_log import FencedTaskLog

if TYPE_CHECKING:
    from pathlib import Path


def _staged(task: FencedTaskLog, bid: int, offset: str) -> None:
    """Batch ``bid`` as an aggregation task runs it, up to (not including) the commit."""
    assert task.log is not None
    task.log.write_offsets(bid, {"s": offset})
    task.stage(bid, pa.table({"x": [bid]}))
    task.log.write_state(bid, pl.DataFrame({"x": [bid]}))
    task.log.write_commit(bid, {"s": offset}, {})


async def test_a_cancelled_batch_still_attempts_its_commit_before_lease_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    zombie = FencedTaskLog(str(tmp_path), "zombie", "s")
    zombie.claim(1)
    _staged(zombie, 0, "10")
    zombie.commit(0, "10")
    _staged(zombie, 1, "20")  # the zombie pauses here, before its commit of batch 1
    FencedTaskLog(str(tmp_path), "heir", "s").claim(6)
    task = AggregationTask(cast("Any", None), cast("Any", None), lambda _: None, frozenset)
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(1)
    loop.set_default_executor(pool)
    busy = threading.Event()
    blocker = loop.run_in_executor(None, busy.wait)  # the pool's thread is taken
    try:
        with caplog.at_level(logging.WARNING, "streamkit.fleet.fence"):
            batch = asyncio.ensure_future(task._commit_batch(zombie, 1, "20"))
            await asyncio.sleep(0.1)  # the batch awaits its commit, queued behind the blocker
            assert not batch.done()
            batch.cancel()  # the lease was found lost
            with contextlib.suppress(asyncio.CancelledError):
                await batch
            assert batch.cancelled()
            lost = asyncio.ensure_future(task.lease_lost("s"))
            await asyncio.sleep(0.1)
            assert not lost.done(), "lease_lost returned before the commit attempt ended"
            busy.set()
            await asyncio.wait_for(lost, 60)
            refusals = [r.getMessage() for r in caplog.records if "not committed" in r.getMessage()]
        assert len(refusals) == 1, caplog.text
        assert "batch 1 of epoch 1 not committed: epoch 6 (worker 'heir')" in refusals[0]
        assert zombie.fence.record is None  # refused: this owner writes nothing more
        raw = zombie.root.read_bytes(FENCE_FILE)
        assert raw is not None
        now = FenceRecord.from_bytes(raw, "fence")
        assert (now.epoch, now.owner, now.batch) == (6, "heir", 0)
    finally:
        busy.set()
        await blocker
        pool.shutdown()
