"""Changelog checkpoints on a real folder: snapshot every N batches and deltas between,
restart = snapshot + deltas equals the state held, legacy every-batch snapshots restore,
damaged deltas and snapshots fall back like other damaged state, the folder stays
bounded, and a delta's size follows the groups the batch touched, not the groups held."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from streamkit.execute import aggregate_spec
from streamkit.streaming.checkpoint import (
    CheckpointDamagedError,
    CheckpointDamagedWarning,
    CheckpointLog,
)
from streamkit.streaming.checkpoint_store import LocalCheckpointStore
from streamkit.streaming.state import KeyedStore
from tests.streamkit.streaming.state._cases import batches, canon, partials, plan

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.filterwarnings(
    "ignore::streamkit.streaming.checkpoint.CheckpointDamagedWarning"
)


def name(bid: int) -> str:
    return f"{bid:012d}"


def fill(root: Path, snapshot_every: int, keep: int = 20) -> list[pl.DataFrame]:
    """Run 12 batches of a sliding-window aggregation through a KeyedStore, checkpointing
    each with write_changes + write_commit; returns the state after each batch."""
    rows, parts = batches(17)
    node = plan("sliding", rows)
    store = KeyedStore(aggregate_spec(node))
    log = CheckpointLog(LocalCheckpointStore(root), keep=keep, snapshot_every=snapshot_every)
    states = []
    for bid, part in enumerate(parts):
        store.merge(partials(node, part))
        store.evict(int(part.column("event_time").to_numpy().max().astype("int64")) - 3_600_000_000)
        log.write_changes(bid, store)
        log.write_commit(bid, {"s": str(bid)}, {"watermark": None, "max_event": None})
        states.append(store.rows())
    return states


def restored(root: Path) -> tuple[int, pl.DataFrame]:
    last = CheckpointLog(LocalCheckpointStore(root)).latest()
    assert last is not None
    assert last.state is not None
    return last.batch_id, last.state


KEYS = ["__wstart", "__wend", "action"]


def same(got: pl.DataFrame, want: pl.DataFrame) -> None:
    assert_frame_equal(canon(got, KEYS), canon(want, KEYS), check_dtypes=False)


def test_snapshots_every_n_and_deltas_between(tmp_path: Path) -> None:
    states = fill(tmp_path, snapshot_every=4)
    assert sorted((tmp_path / "state").iterdir()) == [
        tmp_path / "state" / name(b) for b in (0, 4, 8)
    ]
    deltas = sorted(p.name for p in (tmp_path / "deltas").iterdir())
    assert deltas == [name(b) for b in range(12) if b % 4]
    bid, state = restored(tmp_path)
    assert bid == 11
    same(state, states[11])


@pytest.mark.parametrize("upto", [5, 8, 9])
def test_every_committed_batch_restores(tmp_path: Path, upto: int) -> None:
    """Batches after ``upto`` never committed: the state of ``upto`` comes back exactly."""
    states = fill(tmp_path, snapshot_every=4)
    for bid in range(upto + 1, 12):
        (tmp_path / "commits" / name(bid)).unlink()
    bid, state = restored(tmp_path)
    assert bid == upto
    same(state, states[upto])


def test_legacy_every_batch_snapshots_restore_and_continue(tmp_path: Path) -> None:
    """A folder from before deltas (a state/N per batch) restores; the next batches
    write deltas on top of it."""
    states = fill(tmp_path, snapshot_every=1)
    assert not (tmp_path / "deltas").exists() or not any((tmp_path / "deltas").iterdir())
    rows, parts = batches(17)
    node = plan("sliding", rows)
    store = KeyedStore(aggregate_spec(node))
    log = CheckpointLog(LocalCheckpointStore(tmp_path), snapshot_every=5)
    last = log.latest()
    assert last is not None
    same(last.state if last.state is not None else pl.DataFrame(), states[11])
    store.load(last.state)
    touched = store.merge(partials(node, parts[0]))
    log.write_changes(12, store)
    log.write_commit(12, {"s": "12"}, {"watermark": None, "max_event": None})
    assert (tmp_path / "deltas" / name(12)).exists()
    assert not (tmp_path / "state" / name(12)).exists()
    assert touched.height
    same(restored(tmp_path)[1], store.rows())


def test_damaged_latest_delta_falls_back_one_batch(tmp_path: Path) -> None:
    states = fill(tmp_path, snapshot_every=4)
    path = tmp_path / "deltas" / name(11)
    path.write_bytes(path.read_bytes()[:-7])
    log = CheckpointLog(LocalCheckpointStore(tmp_path))
    with pytest.warns(CheckpointDamagedWarning, match=f"deltas/{name(11)}"):
        last = log.latest()
    assert last is not None
    assert last.state is not None
    assert last.batch_id == 10
    same(last.state, states[10])


def test_damaged_snapshot_uses_an_older_one(tmp_path: Path) -> None:
    """Snapshot 8 garbled: batch 11 = snapshot 4 + deltas 5..11 (delta 8 does not exist:
    batch 8 was a snapshot), so it cannot be rebuilt and the fallback walks back to 7."""
    states = fill(tmp_path, snapshot_every=4)
    path = tmp_path / "state" / name(8)
    raw = bytearray(path.read_bytes())
    raw[-20] ^= 0xFF
    path.write_bytes(bytes(raw))
    log = CheckpointLog(LocalCheckpointStore(tmp_path))
    with pytest.warns(CheckpointDamagedWarning, match=f"state/{name(8)}"):
        last = log.latest()
    assert last is not None
    assert last.state is not None
    assert last.batch_id == 7
    same(last.state, states[7])


def test_no_intact_chain_refuses(tmp_path: Path) -> None:
    fill(tmp_path, snapshot_every=100)
    (tmp_path / "state" / name(0)).write_bytes(b"garbage")
    with pytest.raises(CheckpointDamagedError, match="no intact committed batch"):
        CheckpointLog(LocalCheckpointStore(tmp_path)).latest()


def test_folder_stays_bounded(tmp_path: Path) -> None:
    """keep=5, a snapshot every 4 batches: after 12 batches only what batches 6..11 need is
    left (snapshots 4 and 8, deltas 5..7 and 9..11), and the oldest of them restores."""
    states = fill(tmp_path, snapshot_every=4, keep=5)
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == [name(4), name(8)]
    deltas = sorted(p.name for p in (tmp_path / "deltas").iterdir())
    assert deltas == [name(b) for b in (5, 6, 7, 9, 10, 11)]
    same(restored(tmp_path)[1], states[11])
    for bid in range(7, 12):
        (tmp_path / "commits" / name(bid)).unlink()
    assert restored(tmp_path)[0] == 6
    same(restored(tmp_path)[1], states[6])


def test_rerun_as_delta_replaces_a_stale_snapshot(tmp_path: Path) -> None:
    """Batch 8 wrote a snapshot but never committed; run again (snapshot_every now 5) on
    other rows it writes a delta, and the restored state is the rerun's, not the stale
    snapshot's."""
    fill(tmp_path, snapshot_every=4)
    for bid in range(8, 12):
        (tmp_path / "commits" / name(bid)).unlink()
    rows, parts = batches(17)
    node = plan("sliding", rows)
    store = KeyedStore(aggregate_spec(node))
    log = CheckpointLog(LocalCheckpointStore(tmp_path), snapshot_every=5)
    last = log.latest()
    assert last is not None
    assert last.batch_id == 7
    store.load(last.state)
    store.merge(partials(node, parts[2]))
    log.write_changes(8, store)
    log.write_commit(8, {"s": "8"}, {"watermark": None, "max_event": None})
    assert (tmp_path / "deltas" / name(8)).exists()
    same(restored(tmp_path)[1], store.rows())


def test_delta_size_follows_touched_groups(tmp_path: Path) -> None:
    """50,000 groups held, 100 touched: the delta is under 1% of the snapshot."""
    node = plan("keys", batches(1)[0])
    spec = aggregate_spec(node)
    rows, _ = batches(1, n=50)
    store = KeyedStore(spec)
    big = pl.from_arrow(rows)
    assert isinstance(big, pl.DataFrame)
    many = pl.concat([big] * 1000).with_columns(pl.Series("user_id", np.arange(50_000)))
    log = CheckpointLog(LocalCheckpointStore(tmp_path), snapshot_every=10)
    store.merge(partials(node, many.to_arrow()))
    log.write_changes(0, store)
    store.merge(partials(node, many.head(100).to_arrow()))
    log.write_changes(1, store)
    snapshot = (tmp_path / "state" / name(0)).stat().st_size
    delta = (tmp_path / "deltas" / name(1)).stat().st_size
    assert store.height == 50_000
    assert delta * 100 < snapshot


def test_snapshot_every_is_a_writer_option(tmp_path: Path) -> None:
    """``checkpoint(location, snapshot_every=3)``: snapshots after batches 0, 3, 6 and
    deltas between them; a bad value is refused at once."""
    import pyarrow as pa

    import streamkit as sk

    schema = pa.schema([("t", pa.timestamp("us", "UTC")), ("k", pa.int64())])
    events = sk.read_stream.memory(schema)
    counts = events.group_by(sk.session_window("t", "1 minute"), "k").agg(sk.count())
    with pytest.raises(ValueError, match="snapshot_every must be an integer >= 1"):
        counts.write_stream.checkpoint(str(tmp_path / "ck"), snapshot_every=0)
    writer = counts.write_stream.output_mode("complete").checkpoint(str(tmp_path / "ck"), 3)
    q = writer.memory("sessions_snapshot_every").start()
    try:
        for i in range(7):
            events.stream.add_rows([{"t": 1_700_000_000_000_000 + i * 10**6, "k": i % 2}])
            q.process_all_available()
    finally:
        q.stop()
    snapshots = {p.name for p in (tmp_path / "ck" / "state").iterdir() if p.name.isdigit()}
    deltas = {p.name for p in (tmp_path / "ck" / "deltas").iterdir()}
    assert snapshots == {name(b) for b in (0, 3, 6)}
    assert deltas == {name(b) for b in (1, 2, 4, 5)}


def test_state_files_round_trip_every_column_type_lz4(tmp_path: Path) -> None:
    """A state written by the checkpoint's IPC writer reads back equal, whatever its column
    types (strings, nulls, lists, structs, dates, decimals, booleans), and is LZ4-compressed
    (an uncompressed delta would be ~5x the bytes the W4 target allows)."""
    import io

    from pyarrow import ipc

    from streamkit.streaming import _envelope as envelope

    n = 5000
    rng = np.random.default_rng(5)
    state = pl.DataFrame(
        {
            "k": np.arange(n),
            "s": [None if i % 7 == 0 else f"user-{i % 50}" for i in range(n)],
            "f": np.where(rng.random(n) < 0.1, np.nan, np.round(rng.random(n), 3)),
            "b": [i % 3 == 0 for i in range(n)],
            "l": [[i, i + 1] if i % 5 else None for i in range(n)],
            "st": [{"a": i, "b": f"x{i % 9}"} for i in range(n)],
        }
    ).with_columns(
        pl.date(2024, 1, 1).dt.offset_by(pl.format("{}d", pl.col("k") % 30)).alias("d"),
        pl.col("k").cast(pl.Decimal(12, 2)).alias("dec"),
        pl.when(pl.col("k") % 4 == 0).then(None).otherwise(pl.col("k")).alias("nk"),
    )
    log = CheckpointLog(LocalCheckpointStore(tmp_path))
    log.write_state(0, state)
    log.write_commit(0, {"s": "0"}, {"watermark": None, "max_event": None})
    last = CheckpointLog(LocalCheckpointStore(tmp_path)).latest()
    assert last is not None
    assert last.state is not None
    assert_frame_equal(last.state, state)
    raw = (tmp_path / "state" / name(0)).read_bytes()
    body = envelope.open_(raw, "state", ValueError)
    reader = ipc.open_file(io.BytesIO(body))
    assert reader.read_all().num_rows == n  # an Arrow IPC file, as pyarrow reads it
    assert body.count(b"\x04\x22\x4d\x18") >= state.width  # an LZ4 frame per column buffer
