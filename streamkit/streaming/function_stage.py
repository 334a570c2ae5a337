"""A stateful function above another stateful operator, as a stage of a chain
(:mod:`streamkit.streaming.chain`): Spark's ``TransformWithStateInPySparkExec`` (or,
above a stream-stream join, ``FlatMapGroupsInPandasWithStateExec``) fed the rows the
operator below emitted in the same micro-batch, with the watermark that operator passes
on in place of the query's.

Its rules are :mod:`streamkit.streaming.transform_exec`'s (or
:mod:`streamkit.streaming.stateful_exec`'s) on that watermark: under ``EventTime`` (or
``EventTimeTimeout``) its input rows at or behind the watermark passed on in the previous
batch are late (judged on the column that carries it: the ``event_time_column_name`` of a
function below, the watermarked column below an aggregation, ``drop_duplicates`` or a
join, or a plain rename of either between the two:
:func:`~streamkit.streaming.chain_marks.passed_marks`; with none carrying it, no row is
late), timers and timeouts fire at the one passed on in this batch (a processor's timers
even with no input column carrying it, as Spark gives every operator the propagated
watermark), and with its own ``event_time_column_name`` an emitted row behind it fails
the query.
"""

from __future__ import annotations

import polars as pl

from streamkit.execute import compile_plan, given
from streamkit.plan import Watermark
from streamkit.stateful import FlatMapGroupsWithState
from streamkit.streaming.stateful_exec import BatchClock, StreamingStateful, mark_unit
from streamkit.streaming.transform_exec import StreamingTransform
from streamkit.transform_state import TransformWithState


class FunctionStage:
    """A :class:`~streamkit.transform_state.TransformWithState` (or, above a join, a
    :class:`~streamkit.stateful.FlatMapGroupsWithState` in ``mode``) reading the rows of
    the operator below (``node``'s input is re-rooted there; ``mark``: the watermark it
    passes on, on a column of that input, or None)."""

    def __init__(
        self,
        node: TransformWithState | FlatMapGroupsWithState,
        mark: Watermark | None,
        clock: BatchClock,
        mode: str = "append",
    ) -> None:
        self.node = node
        self.engine: StreamingTransform | StreamingStateful = (
            StreamingTransform(node, mark, clock)
            if isinstance(node, TransformWithState)
            else StreamingStateful(node, mark, mode, clock)
        )
        self.store = self.engine.store
        self.time_dtype = pl.Datetime(mark_unit(mark))
        """The unit the watermark is given in: the event-time column's, or the engine's
        default when no input column carries the watermark (a processor's timers still
        see it then, as in Spark, whose operators all get the propagated watermark)."""

    def run(self, rows: pl.DataFrame, late_mark: int | None, in_force: int | None) -> pl.DataFrame:
        """Drop late rows, run one batch of the processor, check what it emitted."""
        inputs = compile_plan(self.node.input, None, set(), given(rows)).collect()
        kept, _late = self.engine.split_late(inputs, late_mark)
        output = self.engine.run(kept, in_force)
        if isinstance(self.engine, StreamingTransform):
            self.engine.check_behind(output, late_mark)
        return output

    def passed_on(self, watermark: int | None) -> int | None:
        """The watermark the operators above see (none above ``apply_in_pandas_with_state``,
        whose output carries no event time)."""
        if isinstance(self.engine, StreamingTransform):
            return self.engine.passed_on(watermark)
        return None

    def state_schema(self) -> pl.Schema:
        """The checkpoint columns of the processor's store."""
        return self.store.rows().schema
