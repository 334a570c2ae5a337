"""Streaming ``drop_duplicates`` and ``drop_duplicates_within_watermark``, Spark's rules.

Per micro-batch, in Spark's order (``StreamingDeduplicateExec``,
``StreamingDeduplicateWithinWatermarkExec``), with a watermark on column ``t``:

1. Rows with ``t`` at or before the watermark for late rows (the one in force in the
   previous batch) are late: dropped, whatever the subset (a null ``t`` is not late).
   ``t`` is the input column that carries the watermark: the watermark's column or a
   plain rename of it after ``with_watermark``, once columns that neither the keys nor
   the plan above read are pruned (:mod:`~streamkit.streaming.watermark_lineage`); with
   none, no row is late and no key expires (Spark's behaviour), with two the query is
   refused (Spark fails it).
2. The first row of each key not held is emitted and its key is held (first row wins,
   in arrival order); every other row is dropped.
3. Keys whose expiry is at or before the watermark in force in this batch leave the state.
   ``drop_duplicates``: the expiry is the key's ``t`` when ``t`` is in the subset (keys
   without it never expire: the state grows, as in Spark). Within watermark: the expiry is
   the first row's ``t`` plus the delay (a null ``t`` counts as the epoch, as in Spark,
   so its key is forgotten at the next eviction), and a later row of an expired key is
   emitted again.

Without a watermark only step 2 runs and every key is held for ever.
"""

from __future__ import annotations

from typing import Literal

import polars as pl

from streamkit.errors import PlanError
from streamkit.plan import Deduplicate, Watermark
from streamkit.streaming.state.dedup import EXPIRES, DedupStore
from streamkit.streaming.watermark_lineage import dedup_time_columns

TICKS_PER_MS = {"ns": 1_000_000, "us": 1_000, "ms": 1}


class StreamingDedup:
    """One :class:`~streamkit.plan.Deduplicate` node run batch by batch (see the module
    docstring); its keys live in :attr:`store`."""

    def __init__(
        self, node: Deduplicate, mark: Watermark | None, times: tuple[str, ...] | None = None
    ) -> None:
        if node.within_watermark and mark is None:
            raise PlanError(
                "drop_duplicates_within_watermark needs a watermark on the stream: add "
                ".with_watermark(column, delay) before it"
            )
        times = dedup_time_columns(node, mark) if times is None else times
        _check_times(node, mark, times)
        self.node, self.store = node, DedupStore(node.keys)
        self._time = mark.column if mark is not None and times else None
        """The watermark's column in the rows judged late (None: none are)."""
        self._expires_on = times[0] if times else None
        """``t``: the column of the operator's input that carries the watermark."""
        self._unit: Literal["ns", "us", "ms"] = "us"
        self._delay = 0
        if mark is not None:
            dtype = mark.input.schema[mark.column]
            assert isinstance(dtype, pl.Datetime)
            self._unit = dtype.time_unit
            self._delay = mark.delay_ns // 1_000_000 * TICKS_PER_MS[self._unit]
        self.evicts = node.within_watermark or self._expires_on in node.keys
        """Whether keys ever expire (otherwise the state grows with the distinct keys)."""

    def split_late(
        self, rows: pl.DataFrame, late_mark: int | None
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(rows after ``late_mark``, late rows): step 1, on the rows as read."""
        if self._time is None or late_mark is None or not rows.height:
            return rows, rows.head(0)
        late = (pl.col(self._time).dt.epoch(self._unit) <= late_mark).fill_null(False)
        flags = rows.select(late).to_series()
        return rows.filter(~flags), rows.filter(flags)

    def run(self, rows: pl.DataFrame, in_force: int | None) -> pl.DataFrame:
        """Steps 2 and 3 over the node's input rows; returns the rows emitted."""
        keyed = rows.select(*self.node.keys, self._expiry())
        emitted = rows.filter(self.store.admit(keyed))
        if in_force is not None and self.evicts:
            self.store.evict(in_force)
        return emitted

    def _expiry(self) -> pl.Expr:
        if self._expires_on is None or not self.evicts:
            return pl.lit(None, dtype=pl.Int64).alias(EXPIRES)
        ticks = pl.col(self._expires_on).dt.epoch(self._unit).cast(pl.Int64)
        if self.node.within_watermark:  # Spark reads a null time as 0: held one batch
            ticks = ticks.fill_null(0) + self._delay
        return ticks.alias(EXPIRES)


def _check_times(node: Deduplicate, mark: Watermark | None, times: tuple[str, ...]) -> None:
    """Refuse what Spark fails on: two input columns carrying the watermark (the column
    and a copy of it), or none under ``drop_duplicates_within_watermark``."""
    if len(times) > 1:
        raise PlanError(
            "More than one event time columns are available ("
            + ", ".join(times)
            + "): Spark fails drop_duplicates with MULTIPLE_EVENT_TIME_COLUMNS when both "
            "the watermark's column and a copy of it reach it; drop one of them before "
            "drop_duplicates (select away the original after renaming it)"
        )
    if node.within_watermark and mark is not None and not times:
        raise PlanError(
            "dropDuplicatesWithinWatermark is not supported on streaming DataFrames/DataSets "
            f"without watermark (Spark's refusal too): the watermark's column {mark.column!r} "
            "(or a plain rename of it) does not reach it, and a column computed from it "
            "after with_watermark carries no watermark; keep the column, or compute the "
            "event time before with_watermark"
        )
