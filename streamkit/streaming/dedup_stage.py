"""``drop_duplicates`` above a stream-stream join or a stateful function, as a stage of a
chain (:mod:`streamkit.streaming.chain`): Spark's ``StreamingDeduplicateExec`` (and its
within-watermark form) fed the rows the operator below emitted, with the watermark it
passes on in place of the query's (a function: on its ``event_time_column_name``, or a
plain rename of it in between, as for a join's columns below).

Spark judges late rows and expiry on the single event-time column of the operator's input:
one of the join's two watermarked columns must be selected away before it (with both,
Spark fails the batch with ``MULTIPLE_EVENT_TIME_COLUMNS``; streamkit refuses the query at
start). That column is a join's watermarked column or a plain rename of it between the
join and ``drop_duplicates`` (``select(col("lt").alias("t"))``: an alias keeps Spark's
event-time metadata, and the delay with it); a column computed from one carries none
(:func:`~streamkit.streaming.watermark_lineage.marks_above`). The rules are
:mod:`streamkit.streaming.dedup`'s, on that column: rows at or before the watermark the
join passed on in the previous batch are dropped as late, and a key leaves the state once
the one it passes on in this batch reaches its expiry.
"""

from __future__ import annotations

import polars as pl

from streamkit.errors import PlanError
from streamkit.execute import compile_plan, given
from streamkit.plan import Deduplicate, Watermark
from streamkit.streaming.dedup import StreamingDedup
from streamkit.streaming.state.dedup import EXPIRES, DedupStore

MULTIPLE = (
    "More than one event time columns are available ({columns}): Spark fails "
    "drop_duplicates after a stream-stream join with MULTIPLE_EVENT_TIME_COLUMNS; select "
    "only one of the join's watermarked columns before drop_duplicates"
)


class DedupStage:
    """A :class:`~streamkit.plan.Deduplicate` above a stream-stream join or a stateful
    function (``node`` reads its output; ``marks``: the watermarks it passes on, on the
    columns of ``node``'s input that carry them)."""

    def __init__(self, node: Deduplicate, marks: tuple[Watermark, ...]) -> None:
        present = [m for m in marks if m.column in node.input.schema]
        if len(present) > 1:
            raise PlanError(MULTIPLE.format(columns=", ".join(m.column for m in present)))
        mark = present[0] if present else None
        self.node = node
        self._dedup = StreamingDedup(node, mark)
        self.store: DedupStore = self._dedup.store
        dtype = mark.input.schema[mark.column] if mark is not None else None
        self.time_dtype = dtype if isinstance(dtype, pl.Datetime) else None
        """The event-time column's type (the unit the watermark is given in)."""

    def run(self, rows: pl.DataFrame, late_mark: int | None, in_force: int | None) -> pl.DataFrame:
        """Drop late rows, emit each key's first row, expire keys (see the module docs)."""
        inputs = compile_plan(self.node.input, None, set(), given(rows)).collect()
        kept, _late = self._dedup.split_late(inputs, late_mark)
        return self._dedup.run(kept, in_force)

    def state_schema(self) -> pl.Schema:
        """The state columns: the key columns and their expiry."""
        schema = self.node.input.schema
        return pl.Schema({**{k: schema[k] for k in self.node.keys}, EXPIRES: pl.Int64()})
