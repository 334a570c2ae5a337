"""The steps of a streaming aggregation shared by the single-process engine
(:class:`~streamkit.streaming.incremental.IncrementalQuery`) and the fleet's aggregation
task (:mod:`streamkit.fleet.aggregation_stage`): one definition of each rule, so both
give the same rows.

- :func:`partial_states`: a batch's rows -> partial states (the batch job's kernel);
- :func:`input_rows`: what that kernel reads of a batch (for the keyed store's `merge_rows`);
- :func:`drops_late`: whether late partial states are dropped at all;
- :func:`emit`: what a batch hands the sink under the output mode, and eviction;
- :func:`next_watermark`: Spark's watermark arithmetic (whole ms, never decreasing);
- :func:`watermark_moved`: whether a no-data batch is owed.
"""

from __future__ import annotations

from typing import Literal

import polars as pl

from streamkit import aggregate as K
from streamkit.execute import aggregate_rows, compile_plan, given
from streamkit.plan import Aggregate, Watermark
from streamkit.streaming.state import StateStore
from streamkit.windows import SessionWindow

OutputMode = Literal["append", "update", "complete"]
TICKS_PER_MS = {"ns": 1_000_000, "us": 1_000, "ms": 1}


def partial_states(agg: Aggregate, spec: K.AggregateSpec, rows: pl.DataFrame) -> pl.DataFrame:
    """The partial states of ``rows`` (the stream's rows as read) for ``agg``: the plan
    below the aggregation, then the kernel's ``partial`` with windows assigned."""
    lazy = compile_plan(agg.input, None, set(), given(rows))
    return K.partial(aggregate_rows(lazy, agg, spec), spec)


def input_rows(agg: Aggregate, spec: K.AggregateSpec, rows: pl.DataFrame) -> pl.DataFrame:
    """What ``partial`` reads of ``rows`` (the stream's rows as read) for ``agg``: the
    plan below the aggregation, then keys, ``__bucket`` and the aggregates' inputs."""
    lazy = compile_plan(agg.input, None, set(), given(rows))
    return aggregate_rows(lazy, agg, spec).collect()


def drops_late(mark: Watermark | None, agg: Aggregate | None, mode: OutputMode) -> bool:
    """Whether late rows are dropped: windowed aggregations with a watermark, except time
    windows in complete mode (Spark keeps them there)."""
    window = agg.window if agg is not None else None
    if mark is None or window is None:
        return False
    return isinstance(window, SessionWindow) or mode != "complete"


def final(states: pl.DataFrame, agg: Aggregate, spec: K.AggregateSpec) -> pl.DataFrame:
    """Result rows of merged ``states``, sorted by the state keys."""
    if spec.state_keys and states.height:
        states = K.sort_groups(states, spec.state_keys)
    if not states.height:
        return pl.DataFrame(schema=agg.schema)
    return K.finalize(states, spec)


def emit(  # noqa: PLR0917
    store: StateStore,
    agg: Aggregate,
    spec: K.AggregateSpec,
    mode: OutputMode,
    touched: pl.DataFrame,
    in_force: int | None,
) -> pl.DataFrame:
    """Complete: every group; update: the groups touched; append: the groups closed.
    Groups whose window ended at or before ``in_force`` (None: no eviction) leave the
    state (not in complete mode); without a window, those whose watermarked key is at or
    before it (a store made with ``expiry``)."""
    if mode == "complete":
        return final(store.rows(), agg, spec)
    closed = store.evict(in_force) if in_force is not None else touched.head(0)
    return final(touched if mode == "update" else closed, agg, spec)


def next_watermark(
    current: int | None, basis: int | None, delay_ns: int, unit: Literal["ns", "us", "ms"]
) -> int | None:
    """W = ``basis`` in whole ms minus the delay in whole ms (Spark's arithmetic), in ticks
    of the column; never below ``current``."""
    if basis is None:
        return current
    per = TICKS_PER_MS[unit]
    candidate = (basis // per - delay_ns // 1_000_000) * per
    if current is None or candidate > current:
        return candidate
    return current


def watermark_moved(watermark: int | None, in_force: int | None, restored: bool) -> bool:
    """Whether the watermark moved past the one in force in the last batch (a no-data
    batch is then owed); never right after a restore."""
    if watermark is None or restored:
        return False
    return in_force is None or watermark > in_force
