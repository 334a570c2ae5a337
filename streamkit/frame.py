"""The user-facing DataFrame: a logical plan with PySpark-style builder methods.

Every method returns a new DataFrame and validates immediately (unknown columns and type
errors raise here, not at execution). ``to_arrow()`` / ``to_pandas()`` / ``to_polars()``
execute the plan.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streamkit import dtypes as T
from streamkit.aggs import AggExpr
from streamkit.durations import parse_duration_ns
from streamkit.errors import PlanError
from streamkit.execute import execute
from streamkit.expr import Col, Expr, into_col
from streamkit.plan import Aggregate, Deduplicate, Filter, Plan, Project, Watermark
from streamkit.windows import WINDOW_COLUMN, SessionWindow, TimeWindow

if TYPE_CHECKING:
    from datetime import timedelta

    import pandas as pd
    import polars as pl
    import pyarrow as pa

    from streamkit.stateful import StateFunc
    from streamkit.streaming.api import DataStreamWriter


class DataFrame:
    """A query over a table. Immutable; the same object runs as a batch job or a stream."""

    def __init__(self, plan: Plan) -> None:
        self._plan = plan

    @property
    def plan(self) -> Plan:
        """The logical plan."""
        return self._plan

    @property
    def schema(self) -> pa.Schema:
        """The Arrow schema of the result."""
        return T.arrow_schema(self._plan.schema)

    @property
    def columns(self) -> list[str]:
        """Result column names."""
        return self._plan.schema.names()

    @property
    def is_streaming(self) -> bool:
        """True when the DataFrame reads a stream (run it with ``write_stream``)."""
        from streamkit.streaming.stream_scan import stream_source_of

        return stream_source_of(self._plan) is not None

    @property
    def stream(self) -> Any:
        """The stream source this DataFrame reads (e.g. a MemoryStream to feed rows)."""
        from streamkit.streaming.stream_scan import stream_source_of

        source = stream_source_of(self._plan)
        if source is None:
            raise PlanError("not a streaming DataFrame; create one with sk.read_stream...")
        return source

    @property
    def write_stream(self) -> DataStreamWriter:
        """Start building a streaming query: ``df.write_stream.output_mode(...)...start()``."""
        from streamkit.streaming.api import DataStreamWriter

        return DataStreamWriter(self)

    def filter(self, condition: Expr) -> DataFrame:
        """Rows where ``condition`` is true."""
        return DataFrame(Filter(self._plan, condition))

    where = filter

    def select(self, *exprs: str | Expr) -> DataFrame:
        """Only the given columns or expressions."""
        return DataFrame(Project(self._plan, tuple(into_col(e) for e in exprs), keep_input=False))

    def with_column(self, name: str, expr: Expr) -> DataFrame:
        """Add (or replace) column ``name``."""
        return DataFrame(Project(self._plan, (expr.alias(name),), keep_input=True))

    def with_columns(self, *exprs: Expr, **named: Expr) -> DataFrame:
        """Add several columns; keyword arguments name them."""
        items = (*exprs, *(e.alias(n) for n, e in named.items()))
        return DataFrame(Project(self._plan, items, keep_input=True))

    def with_watermark(self, column: str, delay: str | timedelta) -> DataFrame:
        """Event-time column and how late rows may arrive (streaming); batch ignores it."""
        return DataFrame(Watermark(self._plan, column, parse_duration_ns(delay)))

    def drop_duplicates(self, subset: list[str] | None = None) -> DataFrame:
        """The first row of each distinct ``subset`` (None: all columns), as Spark's
        ``dropDuplicates``. On a stream with a watermark, rows at or behind the watermark
        are dropped and a key is forgotten once the watermark passes its event time, so
        state is bounded only when ``subset`` holds the event-time column; without a
        watermark, the state keeps every key seen."""
        return DataFrame(Deduplicate(self._plan, None if subset is None else tuple(subset)))

    dropDuplicates = drop_duplicates

    def drop_duplicates_within_watermark(self, subset: list[str] | None = None) -> DataFrame:
        """Spark 3.5's ``dropDuplicatesWithinWatermark``: on a stream (which needs a
        watermark), a row is a duplicate of an earlier one with the same ``subset`` until
        the watermark reaches that first row's event time plus the delay; after that the
        key is forgotten and may be emitted again. Batch: as ``drop_duplicates``."""
        subset_ = None if subset is None else tuple(subset)
        return DataFrame(Deduplicate(self._plan, subset_, within_watermark=True))

    dropDuplicatesWithinWatermark = drop_duplicates_within_watermark

    def join(self, other: DataFrame, on: Any, how: str = "inner") -> DataFrame:
        """Spark's ``join``: ``on`` is a column name or list of names on both sides (each
        appears once in the result), a boolean expression over both sides' columns, or a
        list mixing the two; ``how`` is ``inner``, ``left``, ``right``, ``full``,
        ``left_semi`` or ``left_anti``. A stream and a batch DataFrame make a
        stream-static join, refused here where Spark refuses it
        (:mod:`streamkit.stream_static`). Two streams join with Spark's stream-stream
        rules (:mod:`streamkit.streaming.stream_join`)."""
        from streamkit.join_plan import build_join

        return DataFrame(build_join(self._plan, other.plan, on, how))

    def group_by(self, *keys: str | Expr | TimeWindow | SessionWindow) -> GroupedData:
        """Group by key columns and at most one window; finish with ``.agg(...)``."""
        return GroupedData(self._plan, keys)

    groupBy = group_by

    def agg(self, *aggs: AggExpr) -> DataFrame:
        """Aggregate all rows into one (no grouping)."""
        return GroupedData(self._plan, ()).agg(*aggs)

    def create_or_replace_temp_view(self, name: str) -> None:
        """Register this DataFrame as view ``name`` for ``sk.sql`` (process-wide; replaces
        a view of that name; names are case-insensitive, as in Spark). A watermark
        declared before registering applies to SQL over the view."""
        from streamkit.sql.catalog import default_catalog

        default_catalog().register(name, self)

    createOrReplaceTempView = create_or_replace_temp_view

    def explain(self) -> str:
        """The logical plan as text (also printed)."""
        text = self._plan.explain()
        print(text)
        return text

    def to_polars(self) -> pl.DataFrame:
        """Execute and return a Polars DataFrame."""
        return execute(self._plan)

    def to_arrow(self) -> pa.Table:
        """Execute and return an Arrow table."""
        return self.to_polars().to_arrow()

    def to_pandas(self) -> pd.DataFrame:
        """Execute and return a pandas DataFrame."""
        result: pd.DataFrame = self.to_arrow().to_pandas()
        return result

    collect = to_arrow

    def count(self) -> int:
        """Number of result rows."""
        return self.to_polars().height

    def __repr__(self) -> str:
        cols = ", ".join(f"{n}: {t}" for n, t in self._plan.schema.items())
        return f"DataFrame[{cols}]"


class GroupedData:
    """The result of ``group_by``; ``agg`` turns it back into a DataFrame."""

    def __init__(self, plan: Plan, keys: tuple[str | Expr | TimeWindow | SessionWindow, ...]):
        self._plan = plan
        self._window: TimeWindow | SessionWindow | None = None
        self._keys: list[Expr] = []
        self._order: list[str] = []
        for key in keys:
            if isinstance(key, TimeWindow | SessionWindow):
                if self._window is not None:
                    raise PlanError("group_by accepts at most one window")
                self._window = key
                self._order.append(WINDOW_COLUMN)
            else:
                expr = into_col(key)
                self._keys.append(expr)
                self._order.append(expr.output_name)

    def agg(self, *aggs: AggExpr) -> DataFrame:
        """One row per group with each aggregate's result."""
        for a in aggs:
            if not isinstance(a, AggExpr):
                raise PlanError(f"agg() takes aggregates such as sk.sum('x'), got {a!r}")
        node = Aggregate(self._plan, self._window, tuple(self._keys), aggs, tuple(self._order))
        return DataFrame(node)

    def count(self) -> DataFrame:
        """Rows per group, in a column named ``count``."""
        from streamkit.functions import count

        return self.agg(count())

    def apply_in_pandas_with_state(
        self,
        func: StateFunc,
        output_schema: pa.Schema | str,
        state_schema: pa.Schema | str,
        output_mode: str,
        timeout_conf: str,
    ) -> DataFrame:
        """Spark's ``applyInPandasWithState``: ``func(key, pdfs, state)`` per key, over the
        key's rows (an iterator of pandas DataFrames) and its :class:`~streamkit.GroupState`,
        yielding pandas DataFrames of ``output_schema``. ``output_mode`` ("append" or
        "update") must be the query's; ``timeout_conf`` is a
        :class:`~streamkit.GroupStateTimeout`. Rules: :mod:`streamkit.stateful`."""
        from streamkit.stateful import FlatMapGroupsWithState, parse_schema

        if self._window is not None or any(not isinstance(k, Col) for k in self._keys):
            raise PlanError(
                "apply_in_pandas_with_state groups by plain columns; add a computed key "
                "with .with_column(name, expr) first and group_by(name)"
            )
        keys = tuple(k.output_name for k in self._keys)
        out = parse_schema(output_schema, "output_schema")
        state = parse_schema(state_schema, "state_schema")
        node = FlatMapGroupsWithState(self._plan, keys, func, out, state, output_mode, timeout_conf)
        return DataFrame(node)

    applyInPandasWithState = apply_in_pandas_with_state

    def transform_with_state_in_pandas(
        self,
        stateful_processor: Any,
        output_struct_type: pa.Schema | str,
        output_mode: str,
        time_mode: str,
        initial_state: GroupedData | None = None,
        *,
        event_time_column_name: str = "",
    ) -> DataFrame:
        """Spark 4's ``transformWithStateInPandas``: ``stateful_processor`` (a
        :class:`~streamkit.StatefulProcessor`, or a PySpark one) per key, with value, list
        and map state and timers, yielding pandas DataFrames of ``output_struct_type``.
        ``output_mode``: "append" or "update"; ``time_mode``: "None", "ProcessingTime" or
        "EventTime"; ``initial_state``: a batch DataFrame grouped by key columns of the
        same types, handed to ``handle_initial_state`` in the first batch;
        ``event_time_column_name``: an output timestamp column that carries the input's
        watermark on, for a windowed aggregation or ``drop_duplicates`` after the operator.
        Rules: :mod:`streamkit.transform_state` and :mod:`streamkit.streaming.transform_exec`."""
        from streamkit.stateful import parse_schema
        from streamkit.transform_state import TransformWithState

        if self._window is not None or any(not isinstance(k, Col) for k in self._keys):
            raise PlanError(
                "transform_with_state_in_pandas groups by plain columns; add a computed key "
                "with .with_column(name, expr) first and group_by(name)"
            )
        keys = tuple(k.output_name for k in self._keys)
        out = parse_schema(output_struct_type, "output_struct_type")
        first: Plan | None = None
        first_keys: tuple[str, ...] = ()
        if initial_state is not None:
            if not isinstance(initial_state, GroupedData):
                raise PlanError(
                    "initial_state must be a grouped DataFrame (df.group_by(...)), "
                    f"got {initial_state!r}"
                )
            first, first_keys = initial_state._plain_keys("initial_state")
        node = TransformWithState(
            self._plan, keys, stateful_processor, out, output_mode, time_mode, first, first_keys,
            event_time_column_name or None,
        )  # fmt: skip
        return DataFrame(node)

    def _plain_keys(self, what: str) -> tuple[Plan, tuple[str, ...]]:
        """This grouping's plan and key names (plain columns only)."""
        if self._window is not None or any(not isinstance(k, Col) for k in self._keys):
            raise PlanError(f"{what} groups by plain columns")
        return self._plan, tuple(k.output_name for k in self._keys)

    def transformWithStateInPandas(  # noqa: PLR0917 (PySpark takes all six positionally)
        self,
        statefulProcessor: Any,
        outputStructType: pa.Schema | str,
        outputMode: str,
        timeMode: str,
        initialState: GroupedData | None = None,
        eventTimeColumnName: str = "",
    ) -> DataFrame:
        """PySpark's spelling of :meth:`transform_with_state_in_pandas` (all six arguments
        may be positional, as in PySpark)."""
        return self.transform_with_state_in_pandas(
            statefulProcessor, outputStructType, outputMode, timeMode, initialState,
            event_time_column_name=eventTimeColumnName,
        )  # fmt: skip
