"""The aggregation kernel: partial states per bucket, window assignment, merge, finalize.

Batch execution is ``finalize(merge(assign(partial(rows))))``. Streaming runs ``partial`` and
``assign`` on each micro-batch and ``merge`` against its state, then ``finalize``: the same
functions, so a stream's result equals the batch result on the same rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import polars as pl

from streamkit._lazy import lazy_module
from streamkit.aggregates import slots as S
from streamkit.windows import BUCKET, WEND, WINDOW_COLUMN, WSTART, SessionWindow, TimeWindow

if TYPE_CHECKING:
    import numpy as np

    from streamkit.aggs import AggExpr
else:
    np = lazy_module("numpy")

GLOBAL = "__all"
"""Constant key column standing in for 'no keys' in a global aggregation."""

TOUCHED = "__touched"
"""Optional state column: True for groups that received rows in the current micro-batch."""

ROWS = "__n"
"""Hidden state column: number of input rows merged into a group."""


@dataclass(frozen=True)
class AggregateSpec:
    """A resolved aggregation: key column names, window, aggregates and their input types."""

    keys: tuple[str, ...]
    window: TimeWindow | SessionWindow | None
    aggs: tuple[AggExpr, ...]
    input_dtypes: tuple[pl.DataType | None, ...]
    time_dtype: pl.Datetime | None
    output_order: tuple[str, ...]
    """Group columns in the user's order (``window`` stands for the window struct)."""

    def input_exprs(self) -> list[tuple[str, pl.Expr]]:
        """(internal name, expression) of every per-row input column the aggregates read,
        each computed once: aggregates asking for the same expression share a column."""
        return [(name, expr) for name, expr in self._inputs[0].items()]

    def inputs(self, i: int) -> list[str]:
        """Internal names of the per-row input columns of aggregate ``i``."""
        return self._inputs[1][i]

    @cached_property
    def _inputs(self) -> tuple[dict[str, pl.Expr], list[list[str]]]:
        exprs: dict[str, pl.Expr] = {}
        names: list[list[str]] = []
        for i, agg in enumerate(self.aggs):
            wanted = agg.function.inputs(agg.input.to_polars()) if agg.input is not None else []
            mine = []
            for j, expr in enumerate(wanted):
                same = [n for n, e in exprs.items() if e.meta.eq(expr)]
                name = same[0] if same else f"__in{i}_{j}"
                exprs.setdefault(name, expr)
                mine.append(name)
            names.append(mine)
        return exprs, names

    def states(self, i: int) -> list[str]:
        """Names of the partial-state columns of aggregate ``i``."""
        return [f"__p{i}_{part}" for part in self.aggs[i].function.state_parts]

    @property
    def state_keys(self) -> list[str]:
        """Columns identifying a group in merged state (window bounds, then keys)."""
        return ([WSTART, WEND] if self.window is not None else []) + list(self.keys)


def partial(rows: pl.LazyFrame, spec: AggregateSpec, last_rows: str | None = None) -> pl.DataFrame:
    """Partial states per (bucket, keys) of input rows, with windows assigned.

    ``rows`` holds the key columns, ``__bucket`` (when windowed) and the aggregates' input
    columns (see :func:`streamkit.execute.aggregate_rows`). Output rows are keyed by
    :attr:`AggregateSpec.state_keys` but not yet unique per key when windows overlap;
    :func:`merge` makes them unique. ``last_rows`` (time windows only) names a column
    added: the rows whose last window (latest end) is the row's, else 0.
    """
    group = ([BUCKET] if spec.window is not None else []) + list(spec.keys)
    exprs = [pl.len().cast(pl.Int64).alias(ROWS)]
    for i, agg in enumerate(spec.aggs):
        exprs += agg.function.partial(spec.inputs(i), spec.states(i), spec.input_dtypes[i])
    if all(agg.function.by_slots(spec.input_dtypes[i], 0) for i, agg in enumerate(spec.aggs)):
        data = rows.collect()
        by_slots = _slot_partial(data, group, spec)
        if by_slots is not None:
            return _assign(by_slots, spec, last_rows)
        rows = data.lazy()
    if not any(agg.function.reads_rows for agg in spec.aggs):
        return _assign(_group(rows, group, exprs).collect(), spec, last_rows)
    data = rows.collect()
    states = _group(data.lazy(), group, exprs).collect()
    for i, agg in enumerate(spec.aggs):
        states = agg.function.build_sketch(data, states, group, spec.inputs(i), spec.states(i))
    return _assign(states, spec, last_rows)


SLOT_MIN_ROWS = 1 << 16
"""Fewest rows for which :func:`partial` reduces by dense slots instead of a group-by."""


def _slot_partial(data: pl.DataFrame, group: list[str], spec: AggregateSpec) -> pl.DataFrame | None:
    """:func:`partial`'s states (before windows are assigned) computed over dense group
    slots (:mod:`streamkit.aggregates.slots`), in the group-by's columns and types; None
    when the chunk is small, the keys don't code compactly (more combinations than rows)
    or an aggregate can't take that many slots."""
    if data.height < SLOT_MIN_ROWS:
        return None
    slots = S.fit(data, group, max_slots=data.height)
    dtypes = spec.input_dtypes
    if slots is None or not all(
        agg.function.by_slots(dtypes[i], slots.size) for i, agg in enumerate(spec.aggs)
    ):
        return None
    columns = [*slots.keys(data), pl.Series(ROWS, slots.rows, dtype=pl.Int64)]
    sketches: list[pl.Series] = []
    for i, agg in enumerate(spec.aggs):
        states = agg.function.slot_states(slots, [data[n] for n in spec.inputs(i)], dtypes[i])
        named = [s.alias(n) for s, n in zip(states, spec.states(i), strict=True)]
        (sketches if agg.function.reads_rows else columns).extend(named)  # the group-by's order
    return pl.DataFrame([*columns, *sketches])


def _group(frame: pl.LazyFrame, group: list[str], exprs: list[pl.Expr]) -> pl.LazyFrame:
    """``exprs`` per ``group`` (never empty: a keyless query groups by ``GLOBAL``)."""
    return frame.group_by(group).agg(exprs)


def _assign(states: pl.DataFrame, spec: AggregateSpec, last_rows: str | None) -> pl.DataFrame:
    window, dtype = spec.window, spec.time_dtype
    if isinstance(window, TimeWindow):
        assert dtype is not None
        if last_rows is None:
            return window.expand(states, dtype)
        expanded = window.expand(states, dtype, last_flag=last_rows)
        counted = pl.when(pl.col(last_rows)).then(pl.col(ROWS)).otherwise(0)
        return expanded.with_columns(counted.alias(last_rows))
    if isinstance(window, SessionWindow):
        assert dtype is not None
        gap = window.gap_ticks(dtype)
        return states.rename({BUCKET: WSTART}).with_columns((pl.col(WSTART) + gap).alias(WEND))
    return states


def merge(states: pl.DataFrame, spec: AggregateSpec, sums: tuple[str, ...] = ()) -> pl.DataFrame:
    """Combine states so there is exactly one row per group (sessions merge when they
    overlap or touch); ``sums`` (not for sessions) name extra columns summed per group."""
    if isinstance(spec.window, SessionWindow):
        return _merge_sessions(states, spec)
    return _merge_by(states, spec.state_keys, spec, tuple(pl.col(c).sum() for c in sums))


def _merge_by(
    states: pl.DataFrame, group: list[str], spec: AggregateSpec, extra: tuple[pl.Expr, ...] = ()
) -> pl.DataFrame:
    exprs = [pl.col(ROWS).sum(), *extra]
    if TOUCHED in states.columns:
        exprs.append(pl.col(TOUCHED).max())
    for i, agg in enumerate(spec.aggs):
        exprs += agg.function.merge(spec.states(i))
    merged = _group(states.lazy(), group, exprs).collect()
    for i, agg in enumerate(spec.aggs):
        merged = agg.function.merge_sketch(states, merged, group, spec.states(i))
    return merged


def state_columns(spec: AggregateSpec) -> list[str]:
    """The columns of merged state, in :func:`merge`'s order: the state keys, the row
    count, then each aggregate's state parts."""
    states = [n for i in range(len(spec.aggs)) for n in spec.states(i)]
    return [*spec.state_keys, ROWS, *states]


def combine(old: pl.DataFrame, new: pl.DataFrame, spec: AggregateSpec) -> pl.DataFrame | None:
    """Row ``i`` of ``old`` merged with row ``i`` of ``new`` (two states of one group each,
    the same columns and types), as :func:`merge` gives it, without a group-by: O(rows).
    The columns are ``old``'s, in its order. None when an aggregate merges by group only
    (sketches, exact distinct sets) or the two frames differ in columns or types."""
    columns = state_columns(spec)
    if set(old.columns) != set(columns) or dict(old.schema) != dict(new.schema):
        return None
    exprs = [pl.sum_horizontal(pl.col(ROWS), pl.lit(new[ROWS])).alias(ROWS)]
    for i, agg in enumerate(spec.aggs):
        names = spec.states(i)
        theirs = [pl.lit(new[n]) for n in names]
        more = agg.function.combine([pl.col(n) for n in names], theirs)
        if more is None:
            return None
        exprs += [e.alias(n) for e, n in zip(more, names, strict=True)]
    return old.with_columns(exprs)


def sort_groups(states: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """``states`` sorted by ``keys``, nulls last. An integer or temporal key column that
    holds a single value and no null cannot change the order, so it is left out of the
    sort (a micro-batch's groups often share one window): O(rows) checks, then a sort on
    fewer columns."""
    varying = [k for k in keys if not _constant(states[k])]
    if not varying:
        return states
    return states.sort(varying, nulls_last=True)


def _constant(column: pl.Series) -> bool:
    dtype = column.dtype
    if not (dtype.is_integer() or dtype.is_temporal()) or column.null_count():
        return False
    return bool(column.min() == column.max())


def _merge_sessions(states: pl.DataFrame, spec: AggregateSpec) -> pl.DataFrame:
    keys = list(spec.keys)
    ordered = states.sort([*keys, WSTART], nulls_last=True)
    ordered = ordered.with_columns(pl.Series("__sid", _session_ids(ordered, keys)))
    bounds = (pl.col(WSTART).min(), pl.col(WEND).max())
    return _merge_by(ordered, [*keys, "__sid"], spec, bounds).drop("__sid")


def _session_ids(ordered: pl.DataFrame, keys: list[str]) -> np.ndarray:
    """Per row of ``ordered`` (sorted by keys, then start): the id of its merged session.
    A row starts a session when its key differs from the previous row's or it starts
    after the largest end so far of its key; touching sessions merge (``[s, e)`` and
    ``[e, ...)`` are one: Spark's ``t_next <= last + gap``)."""
    n = ordered.height
    if not n:
        return np.empty(0, np.int64)
    new_key = np.zeros(n, np.bool_)
    new_key[0] = True
    if keys:
        differs = pl.any_horizontal(pl.col(k).ne_missing(pl.col(k).shift(1)) for k in keys)
        new_key[1:] = ordered.select(differs).to_series().to_numpy()[1:]
    group = np.cumsum(new_key) - 1
    starts = ordered[WSTART].to_numpy().astype(np.int64, copy=False)
    ends = ordered[WEND].to_numpy().astype(np.int64, copy=False)
    low, span = int(ends.min()), int(ends.max()) - int(ends.min()) + 1
    if span * (int(group[-1]) + 1) < 2**62:  # a running max per key, as one running max
        offset = group * span - low
        running = np.maximum.accumulate(ends + offset)
        prev_end = np.zeros(n, np.int64)
        prev_end[1:] = running[:-1] - offset[1:]
        breaks = new_key | (starts > prev_end)
    else:  # ends too far apart to offset in 64 bits: Polars' per-key running max
        prev = pl.col(WEND).cum_max().shift(1).over("__g")
        flags = ordered.select(WSTART, WEND).with_columns(pl.Series("__g", group))
        breaks = flags.select(prev.is_null() | (pl.col(WSTART) > prev)).to_series().to_numpy()
    return np.cumsum(breaks)


def finalize(states: pl.DataFrame, spec: AggregateSpec) -> pl.DataFrame:
    """Result rows: the window struct (if any), keys in the user's order, then aggregates."""
    cols: list[pl.Expr] = []
    for name in spec.output_order:
        if name == WINDOW_COLUMN and spec.window is not None:
            assert spec.time_dtype is not None
            bounds = [pl.col(WSTART).alias("start"), pl.col(WEND).alias("end")]
            typed = [b.cast(spec.time_dtype) for b in bounds]
            cols.append(pl.struct(typed).alias(WINDOW_COLUMN))
        else:
            cols.append(pl.col(name))
    cols += [
        agg.function.finalize(spec.states(i), spec.input_dtypes[i]).alias(agg.output_name)
        for i, agg in enumerate(spec.aggs)
    ]
    if spec.keys == (GLOBAL,) and states.height == 0:
        states = _empty_global_state(states, spec)
    return states.select(cols)


def _empty_global_state(states: pl.DataFrame, spec: AggregateSpec) -> pl.DataFrame:
    """A global aggregate over no rows is one row: counts 0, everything else null."""
    row: dict[str, Any] = {ROWS: 0, GLOBAL: 0}
    for i, agg in enumerate(spec.aggs):
        empty = agg.function.empty_state(spec.input_dtypes[i])
        row.update(zip(spec.states(i), empty, strict=True))
    return pl.DataFrame({n: [row[n]] for n in states.columns}, schema=states.schema)


PARTIAL_WORKERS = 2
"""Chunks of a batch aggregation reduced to partial states at once (threads: Polars and
numpy release the GIL, so two chunks use two cores while the reader prefetches)."""


def _partials(chunks: Iterable[pl.LazyFrame], spec: AggregateSpec) -> list[pl.DataFrame]:
    """:func:`partial` of each chunk, in chunk order, up to :data:`PARTIAL_WORKERS` at
    once; the next chunk is taken from ``chunks`` only once a worker is free, so no chunk
    waits in hand for one (bounded memory: a source reading ahead holds one more)."""
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    parts: list[pl.DataFrame] = []
    rest = iter(chunks)
    with ThreadPoolExecutor(PARTIAL_WORKERS) as pool:
        pending: deque[Future[pl.DataFrame]] = deque()
        while True:
            if len(pending) == PARTIAL_WORKERS:
                parts.append(pending.popleft().result())
            rows = next(rest, None)
            if rows is None:
                break
            pending.append(pool.submit(partial, rows, spec))
        parts.extend(future.result() for future in pending)
    return parts


def run_batch(chunks: Iterable[pl.LazyFrame], spec: AggregateSpec) -> pl.DataFrame:
    """The whole aggregation over a table given as chunks of rows: partial states per
    chunk, one merge, one finalize. Needs at least one (possibly empty) chunk."""
    parts = _partials(chunks, spec)
    if not parts:
        raise ValueError("run_batch needs at least one chunk of rows")
    states = pl.concat(parts, how="vertical_relaxed") if len(parts) > 1 else parts[0]
    tumbling_once = isinstance(spec.window, TimeWindow) and spec.window.is_tumbling
    if len(parts) > 1 or (spec.window is not None and not tumbling_once):
        states = merge(states, spec)
    if spec.state_keys:
        states = sort_groups(states, spec.state_keys)
    return finalize(states, spec)
