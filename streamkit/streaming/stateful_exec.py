"""``apply_in_pandas_with_state`` on a stream, batch by batch, with Spark's rules
(``FlatMapGroupsWithStateExec``, ``FlatMapGroupsInPandasWithStateExec``).

Per micro-batch, with W the watermark in force in this batch (Spark's watermark for
eviction; 0 before any event time, as in Spark) and P the batch's processing time:

1. Under ``EventTimeTimeout`` only, rows whose event time is at or before the watermark
   of the previous batch are late: dropped (kept in the late-rows table). With no timeout
   or a processing-time timeout, no row is late.
2. The function is called once per key with rows, in key order (``has_timed_out``
   False), with the key's state; the timeout starts unset on every call.
3. Then, if timeouts are on, once per key whose timeout is before P
   (``ProcessingTimeTimeout``) or before W (``EventTimeTimeout``), strictly, with an
   empty iterator and ``has_timed_out`` True; a key that just got rows and set a timeout
   already due is timed out in the same batch, as in Spark.
4. No-data batches: under ``EventTimeTimeout`` when the watermark moved past W (as for
   every stateful operator); never under ``NoTimeout``. Under ``ProcessingTimeTimeout``
   Spark runs a batch at every trigger; streamkit runs one when a key's timeout is due
   at the processing clock, so ``available_now`` ends and idle triggers are skipped.

The query's output mode must be the function's (``append`` or ``update``), as Spark
requires; ``EventTimeTimeout`` needs a watermark. P comes from the processing clock
(``write_stream.processing_clock``, default ``time.time``), read once per batch and
logged with the batch's offsets: a batch re-run after a crash keeps its first time, as
in Spark.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

import polars as pl

from streamkit.errors import PlanError
from streamkit.group_state import GroupStateTimeout
from streamkit.plan import Watermark
from streamkit.stateful import Clock, FlatMapGroupsWithState, KeyCaller
from streamkit.streaming.state.group_state_store import GroupStateStore
from streamkit.streaming.watermark_lineage import carried

TICKS_PER_MS = {"ns": 1_000_000, "us": 1_000, "ms": 1}


def mark_unit(mark: Watermark | None) -> Literal["ns", "us", "ms"]:
    """Unit of the watermark's event-time column (ticks of ``in_force``); "us" without one."""
    if mark is None:
        return "us"
    dtype = mark.input.schema[mark.column]
    assert isinstance(dtype, pl.Datetime)
    return dtype.time_unit


def split_behind(
    rows: pl.DataFrame, mark: Watermark, unit: Literal["ns", "us", "ms"], late_mark: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(rows kept, late rows): a row is late when its event time is at or behind
    ``late_mark`` (ticks of ``unit``); a null event time is kept."""
    late = (pl.col(mark.column).dt.epoch(unit) <= late_mark).fill_null(False)
    flags = rows.select(late).to_series()
    return rows.filter(~flags), rows.filter(flags)


class BatchClock:
    """The processing clock (seconds since the epoch; default ``time.time``) and the
    processing time of the batch running, which the runner sets (logged with the batch's
    offsets, reused by a re-run); None: the clock when the batch runs."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock or time.time
        self.batch_ms: int | None = None

    def now_ms(self) -> int:
        """The clock now, in ms."""
        return int(self._clock() * 1000)

    def batch_time_ms(self) -> int:
        """The processing time of the batch running, in ms."""
        return self.batch_ms if self.batch_ms is not None else self.now_ms()


class StreamingStateful:
    """One :class:`~streamkit.stateful.FlatMapGroupsWithState` run batch by batch (see
    the module docstring); its keys live in :attr:`store`."""

    def __init__(
        self,
        node: FlatMapGroupsWithState,
        mark: Watermark | None,
        mode: str,
        clock: BatchClock,
    ) -> None:
        if mode != node.output_mode:
            raise PlanError(
                f"apply_in_pandas_with_state in {node.output_mode} mode needs the query in "
                f"the same output mode (Spark's rule), but the query is in {mode} mode: use "
                f".output_mode({node.output_mode!r}) or output_mode={mode!r} in the call"
            )
        if node.timeout == GroupStateTimeout.EventTimeTimeout and mark is None:
            raise PlanError(
                "EventTimeTimeout needs a watermark: add .with_watermark(column, delay) "
                "before group_by(...).apply_in_pandas_with_state"
            )
        event_time = node.timeout == GroupStateTimeout.EventTimeTimeout
        if event_time and mark is not None and carried(node.input, mark) == ():
            raise PlanError(
                "Watermark must be specified in the query using with_watermark for using "
                "event-time timeout in a applyInPandasWithState (Spark's refusal too): no "
                "input column of the function carries the watermark (a column computed from "
                "it after with_watermark carries none); keep the watermark's column or a "
                "plain rename of it, or compute the event time before with_watermark"
            )
        self.node, self._mark = node, mark
        self._clock = clock
        key_schema = pl.Schema({k: node.input.schema[k] for k in node.keys})
        self.store = GroupStateStore(key_schema, node.state_schema)
        self._caller = KeyCaller(node, self.store)
        self._unit = mark_unit(mark)

    def split_late(
        self, rows: pl.DataFrame, late_mark: int | None
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(rows kept, late rows): step 1, on the rows as read."""
        timeout = self.node.timeout
        if timeout != GroupStateTimeout.EventTimeTimeout or late_mark is None or not rows.height:
            return rows, rows.head(0)
        assert self._mark is not None
        return split_behind(rows, self._mark, self._unit, late_mark)

    def run(self, rows: pl.DataFrame, in_force: int | None) -> pl.DataFrame:
        """Steps 2 and 3 over the node's input rows; returns what the calls returned."""
        watermark_ms = 0 if in_force is None else in_force // TICKS_PER_MS[self._unit]
        clock = Clock(self._clock.batch_time_ms(), watermark_ms, self._mark is not None)
        self._caller.call_groups(rows, clock)
        if self.node.timeout == GroupStateTimeout.ProcessingTimeTimeout:
            self._caller.call_timed_out(self.store.due(clock.processing_ms), clock)
        elif self.node.timeout == GroupStateTimeout.EventTimeTimeout:
            self._caller.call_timed_out(self.store.due(watermark_ms), clock)
        return self._caller.take_output()

    def owes_batch(self, moved: bool) -> bool:
        """Whether a no-data batch is owed (step 4); ``moved``: the watermark moved past
        the one in force in the last batch."""
        if self.node.timeout == GroupStateTimeout.EventTimeTimeout:
            return moved
        if self.node.timeout == GroupStateTimeout.ProcessingTimeTimeout:
            due = self.store.next_timeout()
            return due is not None and due < self._clock.now_ms()
        return False
