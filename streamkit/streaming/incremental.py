"""Incremental execution of one plan over micro-batches: the streaming half of the engine.

Per batch: rows older than the watermark are set aside as late; the rest go through the
same partial-aggregation kernel as a batch job; partial states merge into the running
state; groups whose window ended before the new watermark are evicted; the output mode
decides what is emitted. Without late rows, the final state equals the batch result on
the same rows (``tests/parity``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import polars as pl

from streamkit import aggregate as K
from streamkit.errors import PlanError
from streamkit.execute import aggregate_rows, aggregate_spec, compile_plan, given
from streamkit.expr import Col
from streamkit.plan import Aggregate, Plan, Project, Watermark
from streamkit.windows import WEND

OutputMode = Literal["append", "update", "complete"]
OUTPUT_MODES: tuple[OutputMode, ...] = ("append", "update", "complete")


@dataclass(frozen=True)
class BatchResult:
    """What one micro-batch produced."""

    output: pl.DataFrame
    """Rows to hand to the sink under the output mode."""
    late_rows: pl.DataFrame
    """Input rows older than the watermark (not aggregated)."""
    watermark: int | None
    """Watermark after this batch, in ticks of the event-time column (None: no watermark)."""


def _check_raw_column(mark: Watermark) -> None:
    """The watermark column must be a column of the stream as read (late rows are set apart
    before any projection runs); a column computed or renamed on the way is refused."""
    for node in mark.input.chain():
        if isinstance(node, Project):
            made = [e for e in node.exprs if e.output_name == mark.column]
            plain = all(isinstance(e, Col) for e in made)
            if (made and not plain) or (not made and not node.keep_input):
                raise PlanError(
                    f"with_watermark({mark.column!r}) needs a column of the stream as read, "
                    f"but {mark.column!r} is computed or renamed before it; use the "
                    "source's own event-time column for the watermark and the window"
                )


class IncrementalQuery:
    """Runs ``plan`` (whose leaf is the stream's scan) one micro-batch at a time.

    State lives in memory between batches and is snapshotted by the caller with
    :meth:`state_frame` / restored with :meth:`restore`.
    """

    def __init__(self, plan: Plan, mode: OutputMode) -> None:
        if mode not in OUTPUT_MODES:
            raise PlanError(f"output mode must be one of {OUTPUT_MODES}, got {mode!r}")
        self.plan, self.mode = plan, mode
        aggs = [n for n in plan.chain() if isinstance(n, Aggregate)]
        marks = [n for n in plan.chain() if isinstance(n, Watermark)]
        if len(aggs) > 1:
            raise PlanError("a streaming query supports one aggregation")
        self._agg = aggs[0] if aggs else None
        if self._agg is not None and self._agg is not plan:
            raise PlanError("operations after a streaming aggregation are not supported yet")
        self._mark = marks[0] if marks else None
        if self._agg is None and mode == "complete":
            raise PlanError("complete mode needs an aggregation (it re-emits the whole result)")
        if self._agg is not None and mode == "append" and self._mark is None:
            raise PlanError(
                "append mode on an aggregation needs a watermark, so that a window is emitted "
                "once, when it can no longer change: add .with_watermark(column, delay) "
                "before group_by, or use output_mode 'update' or 'complete'"
            )
        self._spec = aggregate_spec(self._agg) if self._agg is not None else None
        self._check_watermark_column()
        self.state: pl.DataFrame | None = None
        self.watermark: int | None = None
        self._max_event: int | None = None

    def _check_watermark_column(self) -> None:
        if self._mark is not None:
            _check_raw_column(self._mark)
        if self._mark is None or self._agg is None or self._agg.window is None:
            return
        window_cols = self._agg.window.column.columns()
        if self._mark.column not in window_cols:
            raise PlanError(
                f"the watermark is on {self._mark.column!r} but the window is on "
                f"{sorted(window_cols)}; put both on the same event-time column"
            )

    # -- per batch ---------------------------------------------------------------------
    def run(self, rows: pl.DataFrame) -> BatchResult:
        """Process one micro-batch of source rows; returns output, late rows, watermark."""
        ticks = self._event_ticks(rows)
        rows, late, ticks = self._split_late(rows, ticks)
        self._advance_max(ticks)
        if self._agg is None:
            output = self._project(rows)
            self._update_watermark()
            return BatchResult(output, late, self.watermark)
        return BatchResult(self._aggregate(rows), late, self.watermark)

    def _project(self, rows: pl.DataFrame) -> pl.DataFrame:
        return compile_plan(self.plan, None, set(), given(rows)).collect()

    def _aggregate(self, rows: pl.DataFrame) -> pl.DataFrame:
        agg, spec = self._agg, self._spec
        assert agg is not None
        assert spec is not None
        lazy = compile_plan(agg.input, None, set(), given(rows))
        fresh = K.partial(aggregate_rows(lazy, agg, spec), spec)
        fresh = fresh.with_columns(pl.lit(True).alias(K.TOUCHED))
        if self.state is not None and self.state.height:
            old = self.state.with_columns(pl.lit(False).alias(K.TOUCHED))
            combined = pl.concat([old, fresh], how="diagonal_relaxed")
        else:
            combined = fresh
        merged = K.merge(combined, spec) if combined.height else combined
        self._update_watermark()
        return self._emit(merged)

    def _emit(self, merged: pl.DataFrame) -> pl.DataFrame:
        spec = self._spec
        assert spec is not None
        closed = self._closed(merged)
        if self.mode == "complete":
            self.state = merged.drop(K.TOUCHED)
            return self._final(self.state)
        if self.mode == "update":
            out = merged.filter(pl.col(K.TOUCHED))
            self.state = merged.filter(~closed).drop(K.TOUCHED)
            return self._final(out.drop(K.TOUCHED))
        emitted = merged.filter(closed).drop(K.TOUCHED)
        self.state = merged.filter(~closed).drop(K.TOUCHED)
        return self._final(emitted)

    def _final(self, states: pl.DataFrame) -> pl.DataFrame:
        spec = self._spec
        assert spec is not None
        if spec.state_keys and states.height:
            states = states.sort(spec.state_keys, nulls_last=True)
        if not states.height:
            return pl.DataFrame(schema=self.plan.schema)
        return K.finalize(states, spec)

    def _closed(self, merged: pl.DataFrame) -> pl.Series:
        window = self._agg.window if self._agg is not None else None
        if self.watermark is None or window is None or not merged.height:
            return pl.Series([False] * merged.height, dtype=pl.Boolean)
        return merged[WEND] <= self.watermark

    # -- watermark ---------------------------------------------------------------------
    def _event_ticks(self, rows: pl.DataFrame) -> pl.Series | None:
        if self._mark is None:
            return None
        assert isinstance(self._mark, Watermark)
        return rows[self._mark.column].dt.epoch(self.time_unit())

    def time_unit(self) -> Literal["ns", "us", "ms"]:
        """Unit of the event-time column (ticks of the watermark)."""
        assert isinstance(self._mark, Watermark)
        dtype = self._mark.input.schema[self._mark.column]
        assert isinstance(dtype, pl.Datetime)
        return dtype.time_unit

    def _delay_ticks(self) -> int:
        assert isinstance(self._mark, Watermark)
        per = {"ns": 1, "us": 1_000, "ms": 1_000_000}[self.time_unit()]
        return self._mark.delay_ns // per

    def _split_late(
        self, rows: pl.DataFrame, ticks: pl.Series | None
    ) -> tuple[pl.DataFrame, pl.DataFrame, pl.Series | None]:
        """(on time rows, late rows, event ticks of the on time rows)."""
        if ticks is None or self.watermark is None:
            return rows, rows.head(0), ticks
        late = (ticks < self.watermark).fill_null(False)
        if not late.any():
            return rows, rows.head(0), ticks
        return rows.filter(~late), rows.filter(late), ticks.filter(~late)

    def _advance_max(self, ticks: pl.Series | None) -> None:
        if ticks is None:
            return
        top = ticks.max()
        if isinstance(top, int) and (self._max_event is None or top > self._max_event):
            self._max_event = top

    def _update_watermark(self) -> None:
        if self._max_event is None:
            return
        candidate = self._max_event - self._delay_ticks()
        if self.watermark is None or candidate > self.watermark:
            self.watermark = candidate

    def current_result(self) -> pl.DataFrame:
        """The result over all state now held (what complete mode would emit)."""
        if self.state is None:
            return pl.DataFrame(schema=self.plan.schema)
        return self._final(self.state)

    # -- state snapshots ---------------------------------------------------------------
    def state_frame(self) -> pl.DataFrame:
        """The aggregation state (empty frame when there is none)."""
        return self.state if self.state is not None else pl.DataFrame()

    def restore(
        self, state: pl.DataFrame | None, watermark: int | None, max_event: int | None
    ) -> None:
        """Resume from a snapshot written after a committed batch."""
        self.state = state if state is not None and state.height else None
        self.watermark, self._max_event = watermark, max_event

    @property
    def max_event(self) -> int | None:
        """Largest event time seen (ticks), the basis of the watermark."""
        return self._max_event

    @property
    def state_rows(self) -> int:
        """Number of groups held in state."""
        return self.state.height if self.state is not None else 0
