"""``transform_with_state_in_pandas`` on a stream, batch by batch, with Spark 4's rules
(``TransformWithStateInPySparkExec``, checked against PySpark 4.3).

Per micro-batch, with W the watermark in force (Spark's watermark for eviction: 0 before
any event time and on a stream without a watermark) and P the batch's processing time:

1. Under time mode ``EventTime`` on a stream with a watermark, rows whose event time is
   at or before the watermark in force in the previous batch are late: dropped (kept in
   the late-rows table), judged on the input column that carries the watermark: with
   none (a column computed from it after ``with_watermark``), no row is late, as in
   Spark. Under the other time modes no row is late.
2. One batch of the processor (:class:`~streamkit.transform_state.ProcessorCalls`): the
   rows per key, then the timers at or before W (``EventTime``) or P
   (``ProcessingTime``); ``timer_values`` holds (P, W).
3. No-data batches: under ``EventTime`` and ``None`` when the query has a watermark
   and it moved past W (as for every stateful operator; Spark's ``shouldRunAnotherBatch``
   looks at the watermark, not the time mode; checked against PySpark 4.3). Under
   ``ProcessingTime`` Spark runs a batch at every trigger; streamkit runs one when a
   timer or a state variable's TTL is due at the processing clock (the batch then
   removes the expired state), so ``available_now`` ends and idle triggers are skipped.

With ``event_time_column_name`` (Spark's ``eventTimeColumnName``, its
``UpdateEventTimeColumnExec``), the named output column is the event time of the
operators above, which see the operator's input watermark (Spark's
``produceOutputWatermark``: the same W, none under ``ProcessingTime``):

4. An emitted row whose event time is at or behind the watermark in force in the previous
   batch (0 in the first batch, as in Spark) fails the query with Spark's
   ``EMITTING_ROWS_OLDER_THAN_WATERMARK_NOT_ALLOWED``: the operators above would take it
   as late. A null event time passes.

Unlike ``apply_in_pandas_with_state``, the operator's output mode need not be the
query's (Spark accepts either in both); complete mode is refused (no aggregation). P
comes from the processing clock (``write_stream.processing_clock``), read once per batch
and logged with the batch's offsets (:class:`~streamkit.streaming.stateful_exec.BatchClock`),
so a batch re-run after a crash fires the same timers. The state variables and the
timers are in one store (:mod:`~streamkit.streaming.state.processor_store`)
checkpointed with the rest of the query's state after each batch.

An initial state (``initial_state=``) is read and handed to ``handle_initial_state`` in
the query's first batch only, as Spark does in batch 0: a query restarted from a
committed batch never reads it again (one whose batch 0 never committed reads it in the
re-run of batch 0, with no state before it).
"""

from __future__ import annotations

import polars as pl

from streamkit.execute import execute
from streamkit.plan import Watermark
from streamkit.stateful import Clock, StatefulFunctionError
from streamkit.stateful_processor import TimeMode
from streamkit.streaming.state.processor_store import ProcessorStore
from streamkit.streaming.stateful_exec import TICKS_PER_MS, BatchClock, mark_unit, split_behind
from streamkit.streaming.watermark_lineage import carried
from streamkit.transform_state import ProcessorCalls, TransformWithState, declared_state

EMITTED_BEHIND = (
    "[EMITTING_ROWS_OLDER_THAN_WATERMARK_NOT_ALLOWED] Previous node emitted a row with "
    "eventTime={at} which is older than current_watermark_value={mark} (Spark fails the "
    "query too): transform_with_state_in_pandas processor {name!r} emitted a row whose "
    "{column!r} ({unit} since the epoch) is at or before the watermark in force in the "
    "previous batch (ms), which operators after it would take as late; emit rows after "
    "it (timer_values.get_current_watermark_in_ms())"
)


class StreamingTransform:
    """One :class:`~streamkit.transform_state.TransformWithState` run batch by batch (see
    the module docstring); its state lives in :attr:`store`."""

    def __init__(self, node: TransformWithState, mark: Watermark | None, clock: BatchClock) -> None:
        self.node, self._mark, self._clock = node, mark, clock
        variables, dropped = declared_state(node)
        self.store = ProcessorStore(node.key_schema(), variables.values())
        self.store.dropped = dropped
        self._calls = ProcessorCalls(node, self.store)
        self._unit = mark_unit(mark)
        self._judges_late = mark is not None and carried(node.input, mark) != ()
        """An input column carries the watermark (none: a column computed from it after
        ``with_watermark``; Spark then drops no row as late, checked against PySpark 4.3)."""
        self._initial_pending = node.initial_state is not None
        """The initial state is read in the query's first batch (batch 0) only: never
        after a restart from a committed batch (the store was loaded)."""

    def split_late(
        self, rows: pl.DataFrame, late_mark: int | None
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(rows kept, late rows): step 1, on the rows as read."""
        if self.node.time_mode != TimeMode.EVENT_TIME or late_mark is None or not rows.height:
            return rows, rows.head(0)
        if not self._judges_late:
            return rows, rows.head(0)
        assert self._mark is not None
        return split_behind(rows, self._mark, self._unit, late_mark)

    def run(self, rows: pl.DataFrame, in_force: int | None) -> pl.DataFrame:
        """Step 2 over the node's input rows; returns what the processor emitted."""
        watermark_ms = 0 if in_force is None else in_force // TICKS_PER_MS[self._unit]
        clock = Clock(self._clock.batch_time_ms(), watermark_ms, self._mark is not None)
        mode = self.node.time_mode
        fire_at = {TimeMode.EVENT_TIME: watermark_ms, TimeMode.PROCESSING_TIME: clock.processing_ms}
        initial = None
        if self._initial_pending and not self.store.restored:
            assert self.node.initial_state is not None
            initial = execute(self.node.initial_state)
        self._initial_pending = False
        return self._calls.run(rows, clock, fire_at.get(mode), initial)

    def passed_on(self, watermark: int | None) -> int | None:
        """The watermark the operators above see when ``watermark`` is in force (Spark's
        ``produceOutputWatermark``): none under ``ProcessingTime``, else the same."""
        return None if self.node.time_mode == TimeMode.PROCESSING_TIME else watermark

    def check_behind(self, output: pl.DataFrame, late_mark: int | None) -> None:
        """Step 4: refuse an emitted row at or behind ``late_mark`` (ticks; None: 0)."""
        column = self.node.event_time_column
        if column is None or not output.height:
            return
        dtype = output.schema[column]
        assert isinstance(dtype, pl.Datetime)
        mark_ms = 0 if late_mark is None else late_mark // TICKS_PER_MS[self._unit]
        ticks = output[column].dt.epoch(dtype.time_unit)
        behind = ticks.filter(ticks <= mark_ms * TICKS_PER_MS[dtype.time_unit])
        if behind.len():
            raise StatefulFunctionError(
                EMITTED_BEHIND.format(
                    name=self.node.name, column=column, at=behind.min(), unit=dtype.time_unit,
                    mark=mark_ms,
                )
            )  # fmt: skip

    def owes_batch(self, moved: bool) -> bool:
        """Whether a no-data batch is owed (step 3); ``moved``: the watermark moved past
        the one in force in the last batch."""
        if self.node.time_mode == TimeMode.PROCESSING_TIME:  # a timer or a TTL is due
            due = [t for t in (self.store.next_timer(), self.store.next_expiry()) if t is not None]
            return bool(due) and min(due) <= self._clock.now_ms()
        return moved  # EventTime and None alike (Spark's shouldRunAnotherBatch)
