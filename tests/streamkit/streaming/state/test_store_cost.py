"""The keyed store's work per batch follows the groups the batch touches and evicts, not
the groups it holds: counted in rows gathered, written and moved (no timing)."""

from __future__ import annotations

import numpy as np
import polars as pl

import streamkit as sk
from streamkit.execute import aggregate_spec
from streamkit.plan import Aggregate
from streamkit.streaming.state import KeyedStore
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
