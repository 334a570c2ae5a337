"""Which watermark each operator of a chain (:mod:`~streamkit.streaming.chain`) sees, and
on which column: the columns the operator below passes it on (its event time, a group key
carrying it, plain renames of them in between, as Spark's event-time metadata:
:mod:`~streamkit.streaming.watermark_lineage`), followed operator by operator up the
whole chain (:func:`output_times`), and the unit its ticks are counted in."""

from __future__ import annotations

import polars as pl

from streamkit.conditional import WindowTime
from streamkit.expr import Col
from streamkit.join_plan import Join
from streamkit.plan import Aggregate, Plan, Watermark
from streamkit.stateful import FlatMapGroupsWithState
from streamkit.streaming.chain_rules import Operator
from streamkit.streaming.incremental import IncrementalQuery, OutputMode
from streamkit.streaming.output_modes import check_one_event_time
from streamkit.streaming.watermark_lineage import (
    carried,
    carried_from,
    plain_reference,
    window_watermark,
)
from streamkit.transform_state import TransformWithState
from streamkit.windows import WINDOW_COLUMN


def event_time_window(node: Aggregate, marked: tuple[str, ...], windowed: bool) -> bool:
    """Whether ``node`` groups by a window over the event time: on a column of its input
    carrying the watermark (``marked``), or on ``window_time`` of a window struct carrying
    it (in ``marked``): the window of the aggregation below when that one's window carries
    it (``windowed``), a rename of it, or a window struct passed on as a group key by
    aggregations in between."""
    if node.window is None:
        return False
    column = node.window.column
    if isinstance(column, WindowTime):
        names = column.columns()
        if len(names) != 1 or not names <= set(marked):
            return False
        return windowed or isinstance(node.input.schema.get(next(iter(names))), pl.Struct)
    return isinstance(column, Col) and column.name in marked


def watermarked_key(
    node: Aggregate, times: tuple[str, ...], timed: bool, mode: OutputMode
) -> str | None:
    """The first plain group key of ``node`` that is one of ``times`` (the watermarked
    columns of its input) when no window carries the watermark (``timed``), or None;
    refuses several such keys (or one beside the window) as Spark fails them."""
    keys = [k.output_name for k in node.keys if plain_reference(k) in times]
    check_one_event_time(([WINDOW_COLUMN] if timed else []) + keys, mode)
    return keys[0] if keys and not timed else None


def first_times(first: Plan) -> tuple[str, ...]:
    """The columns of the first operator's output that carry the watermark: an
    aggregation's window struct when its window carries it (:func:`first_windowed`; its
    ``end`` is the event time above, as in Spark), else its plain group keys carrying it;
    else the columns it passes on (see :mod:`~streamkit.streaming.watermark_lineage`)."""
    marks = [n for n in first.chain() if isinstance(n, Watermark)]
    if not marks:
        return ()
    if isinstance(first, Aggregate):
        if window_watermark(first, marks[0]) is not None:
            return (WINDOW_COLUMN,)
        return agg_key_times(first, carried(first.input, marks[0]) or ())
    return carried(first, marks[0]) or ()


def first_windowed(first: Plan) -> bool:
    """Whether the first operator is an aggregation whose window carries the watermark."""
    marks = [n for n in first.chain() if isinstance(n, Watermark)]
    if not isinstance(first, Aggregate) or not marks:
        return False
    return window_watermark(first, marks[0]) is not None


def output_times(
    node: Operator, below: Plan, times: tuple[str, ...], timed: bool = False
) -> tuple[str, ...]:
    """The columns of ``node``'s output that carry the watermark, given ``times``, those of
    the output of ``below`` (the operator under it), through the renames between them:
    ``transform_with_state_in_pandas``' ``event_time_column_name``; none after
    ``apply_in_pandas_with_state``; an aggregation's window struct when its window carries
    it (``timed``), else its plain group keys carrying it (a window struct of the one
    below among them: as Spark's grouping attributes keep their metadata, at any depth of
    a chain); ``drop_duplicates``' carrying input columns (it passes every column on)."""
    if isinstance(node, TransformWithState):
        return () if node.event_time_column is None else (node.event_time_column,)
    if isinstance(node, FlatMapGroupsWithState | Join):  # a join is never above (refused)
        return ()
    if isinstance(node, Aggregate) and timed:
        return (WINDOW_COLUMN,)
    marked = carried_from(node.input, below, times) or ()
    return agg_key_times(node, marked) if isinstance(node, Aggregate) else marked


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
    ``event_time_column_name``; else those of ``times`` (the columns of its output
    carrying the watermark: :func:`output_times`; an aggregation's group keys) that are
    timestamps (a window struct passes none on to a function or a deduplication)."""
    if isinstance(below, TransformWithState):
        mark = below.output_watermark()
        return () if mark is None else (mark,)
    marks = [n for n in below.chain() if isinstance(n, Watermark)]
    if not marks:
        return ()
    schema = below.schema
    return tuple(
        Watermark(below, c, marks[0].delay_ns)
        for c in times
        if c in schema and isinstance(schema[c], pl.Datetime)
    )


def agg_key_times(agg: Aggregate, marked: tuple[str, ...]) -> tuple[str, ...]:
    """The group keys of ``agg`` (output names) that carry the watermark, given ``marked``,
    the columns of its input that do: a plain reference to one, under any alias
    (``group_by(col("ts").alias("t"))`` as ``select(col("ts").alias("t")).group_by("t")``,
    as Spark's alias keeps the column's metadata; an aggregate output, even named ``ts``,
    carries none)."""
    return tuple(k.output_name for k in agg.keys if plain_reference(k) in marked)


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
