"""The session store gives exactly the whole-state regroup's sessions, batch for batch
(touched, evicted, held), with Polars' hash and a 3-bit hash (the overflow path), with one
session per key, several, and no group key; its deltas replay to the state; a restart
from snapshot + deltas on a real folder continues exactly like an uninterrupted run; a
batch row that touches two stored sessions of a key joins them; eviction closes only the
sessions ended by the watermark; and its work follows the keys touched and the sessions
closed, not the sessions held (counted in rows handled, no timing)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import pytest

import streamkit as sk
from streamkit.execute import aggregate_spec
from streamkit.plan import Aggregate
from streamkit.streaming.checkpoint import CheckpointLog
from streamkit.streaming.checkpoint_store import LocalCheckpointStore
from streamkit.streaming.state import SessionStore, make_store
from streamkit.streaming.state.changelog import apply
from streamkit.streaming.state.indexed import Hasher, row_hash
from tests.streamkit.streaming.state._cases import batches, partials, plan
from tests.streamkit.streaming.state.test_keyed_store import run, same, watermark, weak_hash

if TYPE_CHECKING:
    from pathlib import Path

KINDS = ["session", "session-users", "session-global"]
T0 = datetime(2024, 1, 1, tzinfo=UTC)
MIN_US = 60_000_000


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("hasher", [row_hash, weak_hash], ids=["polars", "weak"])
@pytest.mark.parametrize("seed", [3, 11])
def test_session_store_equals_regroup(kind: str, hasher: Hasher, seed: int) -> None:
    rows, _ = batches(seed)
    store = SessionStore(aggregate_spec(plan(kind, rows)), hasher)
    assert run(kind, seed, store) > 0


@pytest.mark.parametrize("hasher", [row_hash, weak_hash], ids=["polars", "weak"])
def test_reload_mid_stream(hasher: Hasher) -> None:
    rows, _ = batches(5)
    store = SessionStore(aggregate_spec(plan("session-users", rows)), hasher)
    assert run("session-users", 5, store, reload_at=4) > 0


def test_make_store_picks_the_session_store() -> None:
    rows, _ = batches(7)
    assert isinstance(make_store(aggregate_spec(plan("session", rows))), SessionStore)


@pytest.mark.parametrize("kind", ["session", "session-users"])
@pytest.mark.parametrize("hasher", [row_hash, weak_hash], ids=["polars", "weak"])
def test_deltas_replay_to_the_state(kind: str, hasher: Hasher) -> None:
    """A snapshot plus every later delta, applied in order, is the state held."""
    rows, parts = batches(13)
    node = plan(kind, rows)
    spec = aggregate_spec(node)
    store = SessionStore(spec, hasher)
    snapshot = pl.DataFrame()
    for i, part in enumerate(parts):
        store.merge(partials(node, part))
        store.evict(watermark(parts[: i + 1]))
        delta = store.take_changes()
        assert delta is not None
        if i == 3:
            snapshot = store.rows()
        elif i > 3:
            snapshot = apply(snapshot, delta, store.change_keys)
            same(snapshot, store.rows(), spec.state_keys)
    store.evict(2**62)  # every session closes: a delta of deletions only
    delta = store.take_changes()
    assert delta is not None
    assert store.height == 0
    assert apply(snapshot, delta, store.change_keys).height == 0


def test_without_group_keys_checkpoints_are_snapshots() -> None:
    rows, parts = batches(3)
    node = plan("session-global", rows)
    store = SessionStore(aggregate_spec(node))
    store.merge(partials(node, parts[0]))
    assert store.take_changes() is None


def test_restart_from_snapshot_and_deltas_continues_exactly(tmp_path: Path) -> None:
    """Batches 0-9 checkpointed (snapshot every 4: snapshots 0, 4, 8; deltas between); a
    new store loads the last committed state (snapshot 8 + delta 9) and runs batches
    10-11 with the same output and state as the store that never stopped."""
    rows, parts = batches(21)
    node = plan("session-users", rows)
    spec = aggregate_spec(node)
    steady, log = SessionStore(spec), CheckpointLog(LocalCheckpointStore(tmp_path), 20, 4)
    for bid, part in enumerate(parts[:10]):
        steady.merge(partials(node, part))
        steady.evict(watermark(parts[: bid + 1]))
        log.write_changes(bid, steady)
        log.write_commit(bid, {"s": str(bid)}, {"watermark": None, "max_event": None})
    names = {p.name for p in (tmp_path / "deltas").iterdir()}
    assert {f"{b:012d}" for b in (9,)} <= names
    last = CheckpointLog(LocalCheckpointStore(tmp_path)).latest()
    assert last is not None
    assert last.batch_id == 9
    resumed = SessionStore(spec)
    resumed.load(last.state)
    for bid in (10, 11):
        fresh = partials(node, parts[bid])
        same(resumed.merge(fresh), steady.merge(fresh), spec.state_keys)
        mark = watermark(parts[: bid + 1])
        same(resumed.evict(mark), steady.evict(mark), spec.state_keys)
        same(resumed.rows(), steady.rows(), spec.state_keys)


def _sessions(rows: list[tuple[str, int]]) -> tuple[Aggregate, pl.DataFrame]:
    """A count per 10-minute session of ``user``; ``rows`` are (user, minute after T0)."""
    frame = pl.DataFrame(
        {
            "user": [u for u, _ in rows],
            "t": [T0.timestamp() * 1e6 + m * MIN_US for _, m in rows],
        }
    ).with_columns(pl.from_epoch(pl.col("t").cast(pl.Int64), "us").dt.replace_time_zone("UTC"))
    empty = sk.from_arrow(frame.head(0).to_arrow())
    node = empty.group_by(sk.session_window("t", "10 minutes"), "user").agg(sk.count()).plan
    assert isinstance(node, Aggregate)
    return node, frame


def _minutes(frame: pl.DataFrame) -> list[tuple[str, int, int, int]]:
    """(user, start minute, end minute, count) of state rows, sorted."""
    if not frame.width:
        return []
    t0 = int(T0.timestamp() * 1e6)
    out = frame.select(
        "user",
        (pl.col("__wstart") - t0) // MIN_US,
        (pl.col("__wend") - t0) // MIN_US,
        pl.col("__n"),
    )
    return sorted(out.iter_rows())


@pytest.mark.parametrize("hasher", [row_hash, weak_hash], ids=["polars", "weak"])
def test_a_row_between_two_stored_sessions_joins_them(hasher: Hasher) -> None:
    """Sessions [0, 10) and [20, 30) of ``a`` are held; a row at minute 10 has session
    [10, 20), which touches both (Spark merges when t_next <= last + gap): ``a`` then holds
    one session [0, 30) of 3 rows. ``b`` (other hash, or the same under the weak hash) is
    untouched. The delta replaces ``a``'s two sessions by the one."""
    node, held = _sessions([("a", 0), ("a", 20), ("b", 0), ("b", 40)])
    store = SessionStore(aggregate_spec(node), hasher)
    store.merge(partials(node, held.to_arrow()))
    before = store.rows()
    store.take_changes()
    held_before = [("a", 0, 10, 1), ("a", 20, 30, 1), ("b", 0, 10, 1), ("b", 40, 50, 1)]
    assert _minutes(before) == held_before
    _, batch = _sessions([("a", 10)])
    assert _minutes(store.merge(partials(node, batch.to_arrow()))) == [("a", 0, 30, 3)]
    want = [("a", 0, 30, 3), ("b", 0, 10, 1), ("b", 40, 50, 1)]
    assert _minutes(store.rows()) == want
    delta = store.take_changes()
    assert delta is not None
    assert _minutes(apply(before, delta, store.change_keys)) == want


def test_eviction_closes_only_ended_sessions() -> None:
    """A key keeps its open session when another of its sessions closes; a key whose only
    session closed leaves the state and the delta deletes it."""
    node, held = _sessions([("a", 0), ("a", 30), ("b", 5), ("c", 40)])
    store = SessionStore(aggregate_spec(node))
    store.merge(partials(node, held.to_arrow()))
    snapshot = store.rows()
    store.take_changes()
    t0 = int(T0.timestamp() * 1e6)
    assert _minutes(store.evict(t0 + 9 * MIN_US)) == []  # nothing ends by minute 9
    assert _minutes(store.evict(t0 + 15 * MIN_US)) == [("a", 0, 10, 1), ("b", 5, 15, 1)]
    assert _minutes(store.rows()) == [("a", 30, 40, 1), ("c", 40, 50, 1)]
    delta = store.take_changes()
    assert delta is not None
    assert _minutes(apply(snapshot, delta, store.change_keys)) == _minutes(store.rows())
    assert _minutes(store.evict(t0 + 50 * MIN_US)) == [("a", 30, 40, 1), ("c", 40, 50, 1)]
    assert store.height == 0


HELD, TOUCHED = 200_000, 1_000


def test_work_follows_touched_keys_and_closed_sessions() -> None:
    """200,000 users hold a session each; batches touching 1,000 of them, and an eviction
    closing 1,000 sessions, handle a few rows per touched or closed session, not 200,000."""
    rng = np.random.default_rng(8)
    users = [f"u{i}" for i in range(HELD)]
    node, _ = _sessions([("x", 0)])
    store = SessionStore(aggregate_spec(node))
    fill = [(u, 0) for u in users[TOUCHED:]] + [(u, -30) for u in users[:TOUCHED]]
    store.merge(partials(node, _sessions(fill)[1].to_arrow()))
    before = store.work
    for minute in range(1, 31):
        picked = rng.choice(np.arange(TOUCHED, HELD), TOUCHED, replace=False)
        batch = _sessions([(users[i], minute % 5) for i in picked])[1]
        store.merge(partials(node, batch.to_arrow()))
    per_batch = (store.work - before) / 30
    assert store.height == HELD
    assert per_batch <= 4 * TOUCHED  # gather + write, plus amortised rewrites
    before = store.work
    t0 = int(T0.timestamp() * 1e6)
    gone = store.evict(t0 - 20 * MIN_US)  # the sessions [-30, -20) end here
    assert gone.height == TOUCHED
    assert store.height == HELD - TOUCHED
    assert store.work - before <= 4 * TOUCHED
