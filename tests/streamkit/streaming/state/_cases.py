"""Shared inputs for the state store tests: plans, micro-batches of partial states, and the
reference regroup (the engine's path before the stores: concatenate all state with the
batch, merge, drop closed windows), written here independently of the stores."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

import streamkit as sk
from streamkit import aggregate as K
from streamkit.execute import aggregate_rows, aggregate_spec, compile_plan, given
from streamkit.plan import Aggregate
from streamkit.windows import WEND
from tests.oracle.events import events

WINDOWS: dict[str, Any] = {
    "tumbling": sk.window("event_time", "30 minutes"),
    "sliding": sk.window("event_time", "1 hour", "20 minutes"),
    "offset": sk.window("event_time", "45 minutes", "15 minutes", "5 minutes"),
    "session": sk.session_window("event_time", "10 minutes"),
    "session-users": sk.session_window("event_time", "10 minutes"),
    "session-global": sk.session_window("event_time", "10 minutes"),
    "keys": None,
    "global": None,
}
HOUR_US = 3_600_000_000


def plan(kind: str, schema_rows: pa.Table, row_wise: bool = False) -> Aggregate:
    """count/sum/avg/min/max/count_distinct/approx_count_distinct per window and action
    (``session-users``: per session and user; ``session-global``: per session).
    ``row_wise``: only aggregates whose states also merge row by row (``combine``):
    count, count(col), sum and avg of a float and an integer, min and max of a float and
    a string."""
    base = sk.from_arrow(schema_rows.slice(0, 0))
    aggs = [
        sk.count().alias("n"),
        sk.sum("value").alias("s"),
        sk.avg("value").alias("a"),
        sk.min("value").alias("lo"),
        sk.max("value").alias("hi"),
    ]
    if row_wise:
        aggs += [
            sk.count("value").alias("nv"),
            sk.sum("user_id").alias("su"),
            sk.avg("user_id").alias("au"),
            sk.min("action").alias("la"),
            sk.max("action").alias("ha"),
        ]
    else:
        aggs += [
            sk.count_distinct("user_id").alias("d"),
            sk.approx_count_distinct("user_id").alias("ad"),
        ]
    if kind == "global":
        frame = base.agg(*aggs)
    elif kind == "keys":
        frame = base.group_by("action", "user_id").agg(*aggs)
    elif kind == "session-users":  # many keys, several sessions each
        frame = base.group_by(WINDOWS[kind], "user_id").agg(*aggs)
    elif kind == "session-global":  # no group key: every session under one key
        frame = base.group_by(WINDOWS[kind]).agg(*aggs)
    else:
        frame = base.group_by(WINDOWS[kind], "action").agg(*aggs)
    node = frame.plan
    assert isinstance(node, Aggregate)
    return node


def batches(seed: int, n: int = 2400, parts: int = 12) -> tuple[pa.Table, list[pa.Table]]:
    """Rows (nulls, duplicates, out of order) cut at random points into ``parts``."""
    rows = events(n=n, seed=seed, span_hours=8)
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, n), parts - 1, replace=False))
    bounds = [0, *cuts.tolist(), n]
    return rows, [rows.slice(a, b - a) for a, b in itertools.pairwise(bounds)]


def partials(node: Aggregate, rows: pa.Table) -> pl.DataFrame:
    """``aggregate.partial`` of one micro-batch, as the engine computes it."""
    spec = aggregate_spec(node)
    frame = pl.from_arrow(rows)
    assert isinstance(frame, pl.DataFrame)
    lazy = compile_plan(node.input, None, set(), given(frame))
    return K.partial(aggregate_rows(lazy, node, spec), spec)


class Reference:
    """The whole-state regroup the engine ran before the keyed store."""

    def __init__(self, spec: K.AggregateSpec) -> None:
        self.spec = spec
        self.state: pl.DataFrame | None = None

    def merge(self, fresh: pl.DataFrame) -> pl.DataFrame:
        new = fresh.with_columns(pl.lit(True).alias(K.TOUCHED))
        if self.state is not None and self.state.height:
            old = self.state.with_columns(pl.lit(False).alias(K.TOUCHED))
            new = pl.concat([old, new], how="diagonal_relaxed")
        merged = K.merge(new, self.spec) if new.height else new
        self.state = merged.drop(K.TOUCHED)
        return merged.filter(pl.col(K.TOUCHED)).drop(K.TOUCHED)

    def evict(self, watermark: int) -> pl.DataFrame:
        if self.state is None or self.spec.window is None or not self.state.height:
            return pl.DataFrame()
        closed = self.state[WEND] <= watermark
        out = self.state.filter(closed)
        self.state = self.state.filter(~closed)
        return out


def canon(frame: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Rows sorted by the state keys, columns by name (order is not part of the result)."""
    if not frame.height:
        return pl.DataFrame()
    return frame.select(sorted(frame.columns)).sort(keys, nulls_last=True)
