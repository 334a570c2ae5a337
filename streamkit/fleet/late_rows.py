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
  last_rows)``, at no pass over the rows) and in a batch where a stream-static join
  repeated a row read (its copies after the first are taken off the count of their last
  window's state: :func:`surplus`);
- ``drop_duplicates``: per row sent, the rows read it stands for: those of its key in the
  batch when the source keeps the first row of each key (their event time is one, so is
  their verdict), one otherwise; 0 for a repeat of a row by a join.

Only a join whose static side repeats a join key can repeat a row read
(:func:`joins_may_repeat`, checked once: a fleet's static tables are fixed for the query's
life); for the others the row index is not threaded and nothing is added for the join.
Of the copies a join makes of one row read, the one counted is the first in the order of
its group or ``drop_duplicates`` keys (its window is the row's): the same on every re-read, so
a range re-emitted after a takeover counts each row in the same partition. Vectorised: the
repeated row indices are found with one ``bincount``, and only the repeated rows' copies
are keyed, sorted and grouped. The column is ``UInt32`` on the exchange (a count of one
batch's rows).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
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

_SURPLUS = "__streamkit_late_surplus"
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


def repeated(frame: pl.DataFrame) -> pl.Series | None:
    """Per row of ``frame`` (the operator's input rows), whether its row read (:data:`ROW`)
    comes out more than once; None when none does or ``frame`` has no :data:`ROW`."""
    if ROW not in frame.columns or not frame.height:
        return None
    ids = frame[ROW].to_numpy()
    counts = np.bincount(ids)
    if counts.max() <= 1:
        return None
    return pl.Series(counts[ids] > 1)


def _later_copies(frame: pl.DataFrame, order: list[str]) -> pl.Series:
    """Per row of ``frame`` (copies of rows read, with :data:`ROW`), True for every copy of
    its row read but the first in the order of ``order`` (copies equal in it are one
    group or key: any of them may be the first)."""
    copies = frame.select(ROW, *order).with_row_index(_INDEX)
    copies = copies.sort([ROW, *order], nulls_last=True)
    later = copies.filter(~pl.col(ROW).is_first_distinct())[_INDEX].to_numpy()
    flags = np.zeros(frame.height, dtype=bool)
    flags[later] = True
    return pl.Series(flags)


def surplus(frame: pl.DataFrame, agg: Aggregate, spec: K.AggregateSpec) -> pl.DataFrame | None:
    """Per state key (window bounds in ticks, then group keys), the copies of rows read in
    ``frame`` (the aggregation's input rows, with :data:`ROW`) beyond the first whose last
    window it is, as :data:`_SURPLUS`; None when no row read repeats. Rows with a null
    event time belong to no window and are left out, as the kernel leaves them."""
    mask = repeated(frame)
    if mask is None:
        return None
    frame = frame.filter(mask)
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
    keyed = frame.select(*bounds, *keys, ROW)  # the copies of a row have one window
    later = keyed.filter(_later_copies(keyed, [k.meta.output_name() for k in keys]))
    return later.group_by(spec.state_keys).agg(pl.len().cast(pl.Int64).alias(_SURPLUS))


def with_counts(states: pl.DataFrame, extra: pl.DataFrame, spec: K.AggregateSpec) -> pl.DataFrame:
    """``states`` (one row per state key) with :data:`LATE`: theirs (the kernel's, for a
    sliding window) or ``__n``, less the copies of :func:`surplus` ``extra``."""
    base = LATE if LATE in states.columns else K.ROWS
    joined = states.join(
        extra, on=spec.state_keys, how="left", nulls_equal=True, maintain_order="left"
    )
    count = pl.col(base) - pl.col(_SURPLUS).fill_null(0)
    return joined.with_columns(count.alias(LATE)).drop(_SURPLUS)


def dedup_counts(frame: pl.DataFrame, keys: list[str], first_only: bool) -> pl.DataFrame:
    """The ``drop_duplicates`` input rows ``frame`` (with :data:`ROW` below a join) to send,
    with :data:`LATE`: the first row of each key with the rows of its key when
    ``first_only``, else every row with its own weight; :data:`ROW` dropped."""
    mask = repeated(frame)
    if mask is None:
        weighted = frame.with_columns(pl.lit(1, dtype=pl.Int64).alias(LATE))
    else:  # copies of a row read beyond the first stand for none
        later = np.zeros(frame.height, dtype=bool)
        picked = frame.with_row_index(_INDEX).filter(mask)
        later[picked[_INDEX].to_numpy()] = _later_copies(picked.drop(_INDEX), keys).to_numpy()
        weighted = frame.with_columns(pl.Series(LATE, (~later).astype(np.int64)))
    if first_only:
        weighted = weighted.with_columns(pl.col(LATE).sum().over(keys))
        weighted = weighted.filter(pl.struct(keys).is_first_distinct())
    return weighted.with_columns(pl.col(LATE).cast(pl.UInt32)).drop(ROW, strict=False)
