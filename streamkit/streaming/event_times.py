"""The event time of each row read, as it reaches ``with_watermark``: Spark's
``EventTimeWatermarkExec`` and the stateful operator above it see the event-time column
after the projections below the watermark, so a column computed (``ts + interval``) or
renamed (``col("ts").alias("t")``) on the way is the one that moves the watermark and
decides lateness.

:meth:`EventTimes.timed` gives the micro-batch's rows (as read, in order) with the
watermark's column replaced by (or, when renamed, added as) its value at the watermark;
null for a row that a filter or an inner join below the watermark rejects. A row that a
stream-static join below the watermark repeats has one event time: a column computed from
the static side is refused (:func:`~streamkit.streaming.static_sides.static_lineage`).
Lateness is judged on that frame; the late rows reported stay the rows as read, those
that reach the stateful operator
(:func:`~streamkit.streaming.watermark_input.operator_rows`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from streamkit.errors import PlanError
from streamkit.expr import Col
from streamkit.plan import Plan, Project, Scan, Watermark
from streamkit.streaming.watermark_input import ROW, threaded

Split = Callable[[pl.DataFrame], tuple[pl.DataFrame, pl.DataFrame]]
"""(rows kept, late rows) of a frame, by filtering it."""


def is_raw(mark: Watermark) -> bool:
    """Whether ``mark``'s column is the stream's column as read (no projection below the
    watermark computes or renames it)."""
    for node in mark.input.chain():
        if isinstance(node, Project):
            made = [e for e in node.exprs if e.output_name == mark.column]
            plain = all(isinstance(e, Col) and e.name == mark.column for e in made)
            if (made and not plain) or (not made and not node.keep_input):
                return False
    return True


@dataclass(frozen=True)
class EventTimes:
    """The plan up to the watermark, over the rows with their index (:data:`ROW`)."""

    reach: Plan
    column: str
    mark: Watermark
    in_order: bool
    """``mark``'s plan keeps every row in order (projections only): run without the index."""

    @classmethod
    def of(cls, mark: Watermark) -> EventTimes | None:
        """None when the column is the stream's own (the rows as read carry it)."""
        if is_raw(mark):
            return None
        reach = threaded(mark, mark.chain()[-1])
        if reach is None:
            raise PlanError(
                f"with_watermark({mark.column!r}) on a computed or renamed column is "
                "supported over filters, projections and stream-static joins; this plan "
                "has another operator below the watermark"
            )
        in_order = all(isinstance(n, Project | Watermark | Scan) for n in mark.chain())
        return cls(reach, mark.column, mark, in_order)

    def timed(self, rows: pl.DataFrame) -> pl.DataFrame:
        """``rows`` with the watermark's column as it reaches the watermark (see module)."""
        from streamkit.execute import compile_plan, given

        if self.in_order:
            at = compile_plan(self.mark, {self.column}, set(), given(rows)).select(self.column)
            return rows.with_columns(at.collect().to_series())
        indexed = rows.with_row_index(ROW)
        at_mark = (
            compile_plan(self.reach, {ROW, self.column}, set(), given(indexed))
            .select(ROW, self.column)
            .unique(ROW, keep="first")  # a row's copies carry one time (module docstring)
            .collect()
        )
        times = indexed.select(ROW).join(at_mark, on=ROW, how="left").sort(ROW)
        return rows.with_columns(times[self.column])


def split_as_read(
    rows: pl.DataFrame, timed: pl.DataFrame, split: Split
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``split`` judged on ``timed`` (:meth:`EventTimes.timed` of ``rows``), applied to
    ``rows``, the rows as read."""
    if not rows.height:
        return split(rows)
    index = "__streamkit_event_row"
    kept, late = split(timed.with_row_index(index))
    if not late.height:
        return rows, rows.head(0)
    return rows[kept[index]], rows[late[index]]
