"""The keyed store's work per batch follows the groups the batch touches and evicts, not
the groups it holds: counted in rows gathered, written and moved, and in the sizes of the
frames every Polars operation of a batch runs on (no timing)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import polars as pl

import streamkit as sk
from streamkit.execute import aggregate_spec
from streamkit.plan import Aggregate
from streamkit.streaming.state import KeyedStore
from streamkit.streaming.state.row_log import RowLog
from tests.streamkit.streaming.state._cases import batches, partials

HELD = 200_000
TOUCHED = 1_000


def table(users: np.ndarray, hour: int) -> pl.DataFrame:
    """One row per user id, all in hour ``hour`` of the test data."""
    template = pl.from_arrow(batches(1, n=50)[0].slice(0, 1))
    assert isinstance(template, pl.DataFrame)
    start = template["event_time"].dt.truncate("1h")[0]
    return pl.DataFrame(
        {
            "event_time": pl.Series([start] * users.size).dt.offset_by(f"{hour}h"),
            "action": ["view"] * users.size,
            "user_id": users,
            "value": np.ones(users.size),
        }
    ).cast(template.schema)


def test_work_follows_touched_and_evicted_groups() -> None:
    empty = sk.from_arrow(table(np.arange(1), 0).to_arrow().slice(0, 0))
    node = empty.group_by(sk.window("event_time", "30 minutes"), "user_id").agg(sk.count()).plan
    assert isinstance(node, Aggregate)
    spec = aggregate_spec(node)
    store = KeyedStore(spec)
    rng = np.random.default_rng(8)
    store.merge(partials(node, table(np.arange(HELD), 1).to_arrow()))
    before = store.work
    for _ in range(30):
        users = rng.choice(HELD, TOUCHED, replace=False)
        store.merge(partials(node, table(users, 1).to_arrow()))
    per_batch = (store.work - before) / 30
    assert store.height == HELD
    assert per_batch <= 4 * TOUCHED  # gather + write, plus amortised rewrites
    start = int(table(np.arange(1), 0)["event_time"].dt.epoch("us")[0])
    store.merge(partials(node, table(np.arange(TOUCHED), 0).to_arrow()))
    before = store.work
    gone = store.evict(start + 30 * 60_000_000)  # the end of hour 0's window
    assert gone.height == TOUCHED
    assert store.height == HELD
    assert store.work - before <= 4 * TOUCHED  # the evicted groups, not the 200,000 held


BIG = 1_000_000


@contextmanager
def frame_sizes() -> Iterator[list[tuple[str, int]]]:
    """While active, records (method, rows) for every Polars DataFrame and Series method
    called and every ``pl.concat``: the rows of the frame it ran on (a lazy query over a
    frame counts that frame's rows), or for row selection by index (``frame[idx]``) the
    rows it returned, since that costs what it returns."""
    seen: list[tuple[str, int]] = []
    busy: list[bool] = []
    patches: list[tuple[Any, str, Any]] = []

    def size(obj: Any) -> int:
        return obj.height if isinstance(obj, pl.DataFrame) else len(obj)

    def wrap(owner: Any, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def recorded(*args: Any, **kwargs: Any) -> Any:
            if busy:  # a call made by the instrument itself or by a recorded method
                return fn(*args, **kwargs)
            busy.append(True)
            try:
                out = fn(*args, **kwargs)
                note(args, out)
            finally:
                busy.pop()
            return out

        def note(args: tuple[Any, ...], out: Any) -> None:
            if name == "__getitem__":
                if isinstance(out, pl.DataFrame | pl.Series):
                    seen.append((f"{owner.__name__}[]", size(out)))
            elif name == "concat":
                seen.append(("concat", sum(size(f) for f in args[0])))
            elif args and isinstance(args[0], pl.DataFrame | pl.Series):
                seen.append((f"{owner.__name__}.{name}", size(args[0])))

        return recorded

    skip = {"__init__", "__len__", "__repr__", "__str__", "__getattr__", "__hash__"}
    for owner in (pl.DataFrame, pl.Series):
        for name, fn in vars(owner).items():
            if (
                inspect.isfunction(fn)
                and name not in skip
                and (not name.startswith("_") or name == "__getitem__")
            ):
                patches.append((owner, name, fn))
    patches.append((pl, "concat", pl.concat))
    for owner, name, fn in patches:
        setattr(owner, name, wrap(owner if owner is not pl else pl.DataFrame, name, fn))
    try:
        yield seen
    finally:
        for owner, name, fn in patches:
            setattr(owner, name, fn)


def test_a_batch_never_handles_a_frame_the_size_of_the_state() -> None:
    """Merge, evict and delta of a batch touching 1,000 of 1,000,000 groups: no Polars
    operation runs on more than a few thousand rows (a whole-state copy, filter, join or
    regroup would run on a million)."""
    empty = sk.from_arrow(table(np.arange(1), 0).to_arrow().slice(0, 0))
    node = empty.group_by(sk.window("event_time", "30 minutes"), "user_id").agg(
        sk.count(), sk.sum("value"), sk.min("value")
    )
    plan = node.plan
    assert isinstance(plan, Aggregate)
    store = KeyedStore(aggregate_spec(plan))
    store.merge(partials(plan, table(np.arange(BIG), 1).to_arrow()))
    store.merge(partials(plan, table(np.arange(TOUCHED), 0).to_arrow()))
    store.take_changes()
    rng = np.random.default_rng(3)
    start = int(table(np.arange(1), 0)["event_time"].dt.epoch("us")[0])
    users = np.concatenate([rng.choice(BIG, TOUCHED - 10, replace=False), BIG + np.arange(10)])
    fresh = partials(plan, table(users, 1).to_arrow())
    with frame_sizes() as seen:
        touched = store.merge(fresh)
        gone = store.evict(start + 30 * 60_000_000)
        delta = store.take_changes()
    assert touched.height == TOUCHED
    assert gone.height == TOUCHED
    assert delta is not None
    assert delta.height == 2 * TOUCHED
    assert store.height == BIG + 10
    assert seen, "the instrument recorded nothing"
    big = sorted({(name, rows) for name, rows in seen if rows > 4 * TOUCHED})
    assert not big, f"operations on state-sized frames: {big}"


def test_log_segments_are_contiguous() -> None:
    """A segment is stored in one chunk whatever the chunks of the rows appended (a
    group-by leaves dozens), so that a gather from it costs what it returns."""
    log = RowLog()
    pieces = [pl.DataFrame({"k": np.arange(i * 10, i * 10 + 10)}) for i in range(8)]
    rows = pl.concat(pieces, rechunk=False)
    assert rows.n_chunks() == 8
    log.append(rows, np.arange(1, 81, dtype=np.uint64))
    (segment,) = log.rows()
    assert segment.n_chunks() == 1
    assert segment["k"].to_list() == list(range(80))


def test_a_gather_across_segments_comes_back_in_one_chunk() -> None:
    """Rows gathered from several segments come back contiguous and in slot order: the
    merge's key check, sums and append all run on them, and on a frame of a chunk per
    segment each of those steps costs more."""
    log = RowLog()
    slots = [
        log.append(
            pl.DataFrame({"k": np.arange(i * 10, i * 10 + 10)}),
            np.arange(1, 11, dtype=np.uint64) + 10 * i,
        )
        for i in range(5)
    ]
    picked = np.concatenate([s[[1, 7]] for s in slots])  # sorted: segment by segment
    rows = log.gather(picked)
    assert rows.n_chunks() == 1
    assert rows["k"].to_list() == [k for i in range(5) for k in (i * 10 + 1, i * 10 + 7)]
