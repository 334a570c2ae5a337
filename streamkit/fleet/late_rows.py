"""How many rows read each exchange row stands for in the late-row count.

The single-process engine counts late rows as read: a row is late when all its windows
are dropped (on its last window: for a sliding window the one with the latest end), and a
row that a stream-static join repeats is one row. An aggregation task sees partial states
(``__n`` rows each) or, for ``drop_duplicates``, the rows below it, so where ``__n`` (or
one per row) is not that count the source task, which sees the rows, adds a column
:data:`LATE` to what it sends:

- aggregation: per partial state, the rows read whose last window (and key) it is;
  a row is late exactly when that state is, so the late count is ``LATE`` summed over
  the late states. Added when the plan drops late rows, for a sliding window (a row is in
  several states: the kernel marks each bucket's last window, ``aggregate.partial(...,
  last_rows)``, at no pass over the rows) and below a stream-static join (a row may be in
  several: :func:`aggregation_counts`, from the joined rows);
- ``drop_duplicates``: per row sent, the rows read it stands for: those of its key in the
  batch when the source keeps the first row of each key (their event time is one, so is
  their verdict), one otherwise; 0 for a repeat of a row by a join.

Only a join whose static side repeats a join key can repeat a row read
(:func:`joins_may_repeat`, checked once: a fleet's static tables are fixed for the query's
life); for the others the row index is not threaded and nothing is added for the join.
Of the copies a join makes of one row read, the one counted is the first in the order of
(its group or ``drop_duplicates`` keys, then its window end): the same on every re-read, so
a range re-emitted after a takeover counts each row in the same partition. Vectorised: one
select and a group-by over the joined rows; the copies are sorted only when a row repeats.
The column is ``UInt32`` on the exchange (a count of one batch's rows).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from streamkit import aggregate as K
from streamkit.execute import compile_plan, given
from streamkit.join_plan import Join
from streamkit.streaming.watermark_input import ROW
from streamkit.windows import WEND, WSTART, SessionWindow, TimeWindow, last_window_end

if TYPE_CHECKING:
    from streamkit.plan import Aggregate, Plan

LATE = "__late_rows"
"""Exchange column: the rows read an exchange row stands for in the late-row count
(absent: ``__n`` of a partial state, one per ``drop_duplicates`` row)."""

_WEIGHT = "__streamkit_late_weight"
_INDEX = "__streamkit_late_index"


def joins_may_repeat(below: Plan) -> bool:
    """Whether a stream-static join in ``below`` (the plan under the stateful operator,
    its static sides pinned) may give one row read more than one row: its static side's
    rows repeat a join key (not null), or it has no equality to join on. Semi
    and anti joins never repeat a row. One read of each static side (its join keys)."""
    for node in below.chain():
        if not isinstance(node, Join) or node.how in ("left_semi", "left_anti"):
            continue
        if not node.pairs:
            return True
        stream, static = node.children
        keys = [right if stream is node.left else left for left, right in node.pairs]
        table = compile_plan(static, set(keys), set(), given(pl.DataFrame())).select(keys)
        found = table.collect().drop_nulls()  # a null key matches no row
        if found.height and found.is_duplicated().any():
            return True
    return False


def weights(frame: pl.DataFrame, order: list[str]) -> pl.Series:
    """Per row of ``frame`` (the operator's input rows, with :data:`ROW` when a join may
    repeat a row read), 1 for the copy of its row read that counts, else 0: the first in
    the order of ``order``, then the position (all copies when ``frame`` has no
    :data:`ROW`)."""
    ones = pl.Series(_WEIGHT, [1], dtype=pl.Int64).new_from_index(0, frame.height)
    if ROW not in frame.columns or not frame.height:
        return ones
    repeated = frame[ROW].is_duplicated()
    if not repeated.any():
        return ones
    copies = frame.select(ROW, *order).with_row_index(_INDEX).filter(repeated)
    copies = copies.sort([ROW, *order, _INDEX], nulls_last=True)
    dropped = copies.filter(~pl.col(ROW).is_first_distinct())[_INDEX]
    hit = pl.int_range(frame.height, dtype=pl.UInt32).is_in(dropped.implode())
    weight = pl.when(hit).then(0).otherwise(1).cast(pl.Int64).alias(_WEIGHT)
    return frame.select(weight).to_series()


def aggregation_counts(frame: pl.DataFrame, agg: Aggregate, spec: K.AggregateSpec) -> pl.DataFrame:
    """Per state key (window bounds in ticks, then group keys), the rows of ``frame`` (the
    aggregation's input rows, with :data:`ROW` below a join) whose last window it is, as
    :data:`LATE`; rows with a null event time belong to no window and are left out, as the
    kernel leaves them."""
    keys = [k.to_polars().alias(k.output_name) for k in agg.keys]
    if spec.keys == (K.GLOBAL,):
        keys.append(pl.lit(0, dtype=pl.Int32).alias(K.GLOBAL))
    window, dtype = spec.window, spec.time_dtype
    bounds: list[pl.Expr] = []
    if window is not None:
        assert dtype is not None
        frame = frame.filter(window.column.to_polars().is_not_null())
        end = last_window_end(window, dtype).cast(pl.Int64)
        if isinstance(window, SessionWindow):
            width = window.gap_ticks(dtype)
        else:
            assert isinstance(window, TimeWindow)
            width = window.ticks(dtype)[0]
        bounds = [(end - width).alias(WSTART), end.alias(WEND)]
    extra = [ROW] if ROW in frame.columns else []
    keyed = frame.select(*bounds, *keys, *extra)
    order = [c for c in keyed.columns if c != ROW]
    keyed = keyed.with_columns(weights(keyed, order))
    return keyed.group_by(spec.state_keys).agg(pl.col(_WEIGHT).sum().alias(LATE))


def with_counts(states: pl.DataFrame, counts: pl.DataFrame, spec: K.AggregateSpec) -> pl.DataFrame:
    """``states`` (one row per state key) with :data:`LATE` from ``counts`` (0 where none
    of the rows' last window is the state's)."""
    joined = states.join(
        counts, on=spec.state_keys, how="left", nulls_equal=True, maintain_order="left"
    )
    return joined.with_columns(pl.col(LATE).fill_null(0))


def dedup_counts(frame: pl.DataFrame, keys: list[str], first_only: bool) -> pl.DataFrame:
    """The ``drop_duplicates`` input rows ``frame`` (with :data:`ROW` below a join) to send,
    with :data:`LATE`: the first row of each key with the rows of its key when
    ``first_only``, else every row with its own weight; :data:`ROW` dropped."""
    weighted = frame.with_columns(weights(frame, keys).alias(LATE))
    if first_only:
        weighted = weighted.with_columns(pl.col(LATE).sum().over(keys))
        weighted = weighted.filter(pl.struct(keys).is_first_distinct())
    return weighted.with_columns(pl.col(LATE).cast(pl.UInt32)).drop(ROW, strict=False)
