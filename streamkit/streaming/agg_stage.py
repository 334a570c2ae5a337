"""An aggregation above another stateful operator of a chain
(:mod:`~streamkit.streaming.chain`), fed the rows the operator below emitted in the same
micro-batch and judging them with the watermark it passes on (Spark's
``StateStoreSaveExec`` above another operator)."""

from __future__ import annotations

from dataclasses import replace

import polars as pl

from streamkit import aggregate as K
from streamkit.execute import aggregate_rows, aggregate_spec, compile_plan, given
from streamkit.plan import Aggregate, Plan
from streamkit.streaming.downstream import above
from streamkit.streaming.incremental import OutputMode
from streamkit.streaming.session_merge import merge_sessions
from streamkit.streaming.state import StateStore, make_store
from streamkit.streaming.watermark_lineage import plain_reference
from streamkit.windows import WEND, SessionWindow, key_end, last_window_end


class AggStage:
    """An aggregation above another stateful operator, fed that operator's output."""

    def __init__(
        self,
        node: Aggregate,
        mode: OutputMode,
        timed: bool,
        key: str | None = None,
        sessions: bool = False,
    ) -> None:
        """``timed``: a window carries the watermark; ``key``: otherwise, the group key
        that does (groups leave by it, late rows are judged on it, as in
        :class:`~streamkit.streaming.incremental.IncrementalQuery`; a window struct key of
        the aggregation below by its ``end``, as Spark does); ``sessions``: ``key`` is a
        session window below, whose overlapping sessions merge
        (:mod:`~streamkit.streaming.session_merge`)."""
        self.node, self.mode, self.timed, self.key = node, mode, timed, key
        self.sessions = sessions and key is not None
        self.spec = aggregate_spec(node)
        self.store: StateStore = make_store(self.spec, key)
        window = node.window
        self.drops_late = timed and (isinstance(window, SessionWindow) or mode != "complete")
        self.drops_late |= key is not None and mode != "complete"

    @property
    def time_dtype(self) -> pl.Datetime | None:
        """The type of the event time it judges (its window's, or its watermarked key's)."""
        if self.key is None:
            return self.spec.time_dtype
        dtype = self.node.schema[self.key]
        if isinstance(dtype, pl.Struct):  # a window of the aggregation below: its end
            end = next(f.dtype for f in dtype.fields if f.name == "end")
            assert isinstance(end, pl.Datetime)
            return end
        assert isinstance(dtype, pl.Datetime)
        return dtype

    def _ends(self, inputs: pl.DataFrame) -> pl.Series:
        """Per input row, the last window end (or the watermarked key) in ticks."""
        node, spec = self.node, self.spec
        if self.key is not None:
            key = next(k for k in node.keys if k.output_name == self.key)
            keys = inputs.select(key.to_polars().alias(self.key))
            return keys.select(key_end(self.key, keys.schema[self.key])).to_series()
        assert node.window is not None
        assert spec.time_dtype is not None
        return inputs.select(last_window_end(node.window, spec.time_dtype)).to_series()

    def _merged(self, inputs: pl.DataFrame) -> pl.DataFrame:
        """``inputs`` with the session key's column merged per the other group keys."""
        key = next(k for k in self.node.keys if k.output_name == self.key)
        column = plain_reference(key)
        assert column is not None
        others = [k.to_polars() for k in self.node.keys if k is not key]
        return merge_sessions(inputs, column, others)

    def run(self, rows: pl.DataFrame, late_mark: int | None, in_force: int | None) -> pl.DataFrame:
        """Merge ``rows`` (late ones dropped), then emit what the output mode says."""
        node, spec = self.node, self.spec
        late = self.drops_late and late_mark is not None and rows.height > 0
        if late or (self.sessions and rows.height):
            inputs = compile_plan(node.input, None, set(), given(rows)).collect()
            if late:
                inputs = inputs.filter(~(self._ends(inputs) <= late_mark).fill_null(False))
            lazy = (self._merged(inputs) if self.sessions else inputs).lazy()
        else:
            lazy = compile_plan(node.input, None, set(), given(rows))
        fresh = K.partial(aggregate_rows(lazy, node, spec), spec)
        if self.drops_late and late_mark is not None and node.window is not None:
            fresh = fresh.filter(pl.col(WEND) > late_mark)
        touched = self.store.merge(fresh)
        if self.mode == "complete":
            return self.final(self.store.rows())
        timed = (self.timed or self.key is not None) and in_force is not None
        closed = self.store.evict(in_force) if timed and in_force is not None else touched.head(0)
        return self.final(touched if self.mode == "update" else closed)

    def final(self, states: pl.DataFrame) -> pl.DataFrame:
        """Finished groups from state rows (sorted by group, as the single engine does)."""
        if not states.height:
            return pl.DataFrame(schema=self.node.schema)
        if self.spec.state_keys:
            states = states.sort(self.spec.state_keys, nulls_last=True)
        return K.finalize(states, self.spec)

    def state_schema(self) -> pl.Schema:
        """The state columns, in its store's order (see :func:`agg_state_schema`)."""
        return agg_state_schema(self.spec, self.node)


def input_node(node: Aggregate, below: Plan) -> Aggregate:
    """``node`` reading the rows ``below`` emits (the plan between them re-rooted)."""
    return replace(node, input=above(node.input, below))


def agg_state_schema(spec: K.AggregateSpec, node: Aggregate) -> pl.Schema:
    """The state columns of an aggregation, in its store's order (merged partial states)."""
    empty = pl.DataFrame(schema=node.input.schema).lazy()
    partial = K.partial(aggregate_rows(empty, node, spec), spec)
    return K.merge(partial, spec).drop(K.TOUCHED, strict=False).schema
