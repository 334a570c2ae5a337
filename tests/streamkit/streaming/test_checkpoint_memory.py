"""Writing a join's state to the checkpoint allocates nothing from Arrow's default memory
pool (issue 13): pyarrow's IPC writer took its LZ4 buffers from it (mimalloc), which kept
the pages, and a checkpointed stream join grew RSS by 7-14 MB/min with Arrow's allocated
bytes flat. Counted with the pool's total of bytes ever allocated, not with RSS, in a fresh
interpreter: the pool is process-wide, so threads left by other tests (or other modules of a
pytest-xdist worker) must not add to the count."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from streamkit.streaming.checkpoint import CheckpointLog
from streamkit.streaming.checkpoint_store import LocalCheckpointStore
from streamkit.streaming.state.join_store import JoinStore
from tests.streamkit.arrow_pool import default_pool_bytes_in_child

TS = pl.Datetime("us", "UTC")
LEFT = pl.Schema({"it": TS, "id": pl.Int64(), "ad": pl.Int64()})
RIGHT = pl.Schema({"ct": TS, "click_id": pl.Int64(), "cost": pl.Int64()})
BATCHES = 25
ROWS = 2_000


def start_us(batch: int) -> int:
    return 1_704_067_200_000_000 + batch * 10_000_000


def impressions(rng: np.random.Generator, batch: int) -> pl.DataFrame:
    start = start_us(batch)
    return pl.DataFrame(
        {
            "it": start + rng.integers(0, 10_000_000, ROWS),
            "id": rng.integers(0, 1 << 40, ROWS),
            "ad": rng.integers(0, 99, ROWS),
        }
    ).with_columns(pl.col("it").cast(TS))


def checkpoint_batches(directory: Path) -> tuple[JoinStore, CheckpointLog, int]:
    """Checkpoint 25 batches of join state; the store, its log and the default-pool bytes."""
    rng = np.random.default_rng(13)
    store = JoinStore(LEFT, RIGHT)
    log = CheckpointLog(LocalCheckpointStore(directory), snapshot_every=10)
    pool = pa.default_memory_pool()
    before = pool.total_bytes_allocated()
    for batch in range(BATCHES):  # snapshots at 0, 10, 20; deltas (adds, evictions) between
        rows = impressions(rng, batch)
        store.add(0, store.with_ids(0, rows, pl.Series([False] * ROWS)))
        store.evict(0, pl.col("it") < pl.lit(start_us(batch - 5)).cast(TS))
        log.write_changes(batch, store)
    return store, log, pool.total_bytes_allocated() - before



def test_join_state_checkpoints_take_nothing_from_arrows_default_pool(tmp_path: Path) -> None:
    taken = default_pool_bytes_in_child(f"{__name__}:checkpoint_batches", tmp_path / "child")
    assert taken < 2**20  # pyarrow's writer: ~8 MB here
    # what was written is the state: the last batch restores to the buffered rows
    store, log, _ = checkpoint_batches(tmp_path / "here")
    restored = JoinStore(LEFT, RIGHT)
    restored.load(log.state_at(BATCHES - 1))
    assert restored.buffer(0).sort("__id").equals(store.buffer(0).sort("__id"))
    assert restored.buffer(0).height == 6 * ROWS  # the last 6 batches: evicted, not all 25
