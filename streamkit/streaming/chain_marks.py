"""Which watermark each operator of a chain (:mod:`~streamkit.streaming.chain`) sees, and
on which column: the columns the operator below passes it on (its event time, a group key
carrying it, plain renames of them in between, as Spark's event-time metadata:
:mod:`~streamkit.streaming.watermark_lineage`), and the unit its ticks are counted in."""

from __future__ import annotations

import polars as pl

from streamkit.conditional import WindowTime
from streamkit.expr import Col
from streamkit.join_plan import Join
from streamkit.plan import Aggregate, Deduplicate, Plan, Watermark
from streamkit.stateful import FlatMapGroupsWithState
from streamkit.streaming.chain_rules import Operator
from streamkit.streaming.incremental import IncrementalQuery, OutputMode
from streamkit.streaming.output_modes import check_one_event_time
from streamkit.streaming.watermark_lineage import (
    carried,
    carried_from,
    plain_reference,
    watermarked_keys,
    window_watermark,
)
from streamkit.transform_state import TransformWithState
from streamkit.windows import WINDOW_COLUMN

STATEFUL = Aggregate | Deduplicate | Join | FlatMapGroupsWithState | TransformWithState


def event_time_window(node: Aggregate, below: Plan, times: tuple[str, ...]) -> bool:
    """Whether ``node`` groups by a window over an event time the operator below passes
    on (``times``: the watermarked columns it keeps)."""
    if node.window is None:
        return False
    column = node.window.column
    if isinstance(below, Aggregate):
        return isinstance(column, WindowTime) and column.columns() == {WINDOW_COLUMN}
    return isinstance(column, Col) and column.name in times


def watermarked_key(
    node: Aggregate, times: tuple[str, ...], timed: bool, mode: OutputMode
) -> str | None:
    """The first plain group key of ``node`` that is one of ``times`` (the watermarked
    columns the operator below passes on) when no window carries the watermark (``timed``),
    or None; refuses several such keys (or one beside the window) as Spark fails them."""
    keys = [k.output_name for k in node.keys if plain_reference(k) in times]
    check_one_event_time(([WINDOW_COLUMN] if timed else []) + keys, mode)
    return keys[0] if keys and not timed else None


def key_times(node: Aggregate, below: Aggregate) -> tuple[str, ...]:
    """The columns of ``node``'s input that carry the watermark through ``below``, the
    first operator: its plain group keys carrying it (a group key keeps the watermark
    column's metadata in Spark; an aggregate's output, even named ``ts``, has none), and
    plain renames of them after it. None for a deeper chain (not followed yet)."""
    marks = [n for n in below.chain() if isinstance(n, Watermark)]
    if not marks or any(isinstance(n, STATEFUL) for n in below.chain()[1:]):
        return ()
    if window_watermark(below, marks[0]) is not None:
        return ()
    keyed = tuple(watermarked_keys(below, marks[0]))
    return (carried_from(node.input, below, keyed) or ()) if keyed else ()


def first_times(first: Plan) -> tuple[str, ...]:
    """The columns of the first operator's output that carry the watermark (an
    aggregation's window carries it in its struct, not in a column; see
    :mod:`~streamkit.streaming.watermark_lineage`)."""
    marks = [n for n in first.chain() if isinstance(n, Watermark)]
    if not marks:
        return ()
    if isinstance(first, Aggregate):
        return (marks[0].column,)
    return carried(first, marks[0]) or ()


def passed_marks(
    below: Operator, times: tuple[str, ...], join_marks: tuple[Watermark, ...]
) -> tuple[Watermark, ...]:
    """The watermarks ``below`` passes on, on columns of its output (a join's are
    ``join_marks``; else :func:`marks_below`). The operator above sees them on the columns
    of its input that carry them (:func:`~streamkit.streaming.downstream.marks_above`):
    the column itself or a plain rename of it in between, as Spark's event-time metadata,
    a function on the first of them in its input's column order (Spark's
    ``child.output.find``); a column computed from one, or one that replaced it, carries
    none."""
    return join_marks if isinstance(below, Join) else marks_below(below, times)


def marks_below(below: Operator, times: tuple[str, ...]) -> tuple[Watermark, ...]:
    """The watermarks the operator ``below`` (not a join: :func:`passed_marks`) passes
    on, on columns of its output: ``transform_with_state_in_pandas``'
    ``event_time_column_name``; an aggregation's group keys carrying it
    (:func:`agg_key_times`; none on its window); else those of ``times`` (its watermarked
    columns) it outputs as timestamps."""
    if isinstance(below, TransformWithState):
        mark = below.output_watermark()
        return () if mark is None else (mark,)
    marks = [n for n in below.chain() if isinstance(n, Watermark)]
    if not marks:
        return ()
    if isinstance(below, Aggregate):
        times = agg_key_times(below, marks[0], times)
    schema = below.schema
    return tuple(
        Watermark(below, c, marks[0].delay_ns)
        for c in times
        if c in schema and isinstance(schema[c], pl.Datetime)
    )


def agg_key_times(agg: Aggregate, mark: Watermark, times: tuple[str, ...]) -> tuple[str, ...]:
    """The group keys of ``agg`` (output names) that carry the watermark: a plain
    reference to a column of its input that carries it, under any alias
    (``group_by(col("ts").alias("t"))`` as ``select(col("ts").alias("t")).group_by("t")``,
    as Spark's alias keeps the column's metadata; an aggregate output, even named ``ts``,
    carries none). Its input's carrying columns: ``mark``'s lineage for the first operator,
    else ``times`` (those of the stateful operator below it) through the renames between."""
    below = next((n for n in agg.input.chain() if isinstance(n, STATEFUL)), None)
    marked = carried(agg.input, mark) if below is None else carried_from(agg.input, below, times)
    return tuple(k.output_name for k in agg.keys if plain_reference(k) in (marked or ()))


def ticks_per_ms(dtype: pl.Datetime | None) -> int:
    """Ticks of ``dtype`` in a millisecond (the join's watermark unit)."""
    unit = dtype.time_unit if dtype is not None else "ms"
    return {"ns": 1_000_000, "us": 1_000, "ms": 1}[unit]


def scaled(mark: int | None, scale: tuple[int, int]) -> int | None:
    """``mark`` (whole ms, in ticks of ``scale[0]`` per ms) in ticks of ``scale[1]``."""
    return None if mark is None else mark // scale[0] * scale[1]


def first_ticks(first: IncrementalQuery) -> int:
    """Ticks per ms of the watermark of the chain's first operator (1 without one)."""
    return ticks_per_ms(pl.Datetime(first.time_unit())) if first._mark is not None else 1
