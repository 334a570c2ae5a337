"""``group_by(keys).apply_in_pandas_with_state(...)``: arbitrary stateful processing per
key, Spark's ``applyInPandasWithState`` (``FlatMapGroupsWithState``).

The plan node :class:`FlatMapGroupsWithState` runs in both engines through
:class:`KeyCaller`, which groups a frame's rows by key in one vectorised pass (a stable
sort, the first row of each key, one pandas conversion, then a slice per key) and makes
the one Python call per key the API requires: ``func(key_tuple, iterator of pandas
DataFrames, state)`` returning an iterable of pandas DataFrames with the output schema's
columns. State changes follow :mod:`streamkit.group_state`.

- Batch (:func:`run_batch`): each key once, in key order, with no state, no timeout and no
  watermark, as Scala Spark's ``flatMapGroupsWithState`` on a batch Dataset (PySpark
  refuses ``applyInPandasWithState`` on a batch DataFrame).
- Streaming: :mod:`streamkit.streaming.stateful_exec`.

An exception in the function is raised as :class:`StatefulFunctionError` naming the key;
a returned frame with other columns than the output schema, or values that do not
convert to its types, is refused with a message naming the key and the columns.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

import polars as pl

from streamkit._lazy import lazy_module
from streamkit.errors import PlanError, StreamkitError
from streamkit.group_state import NO_TIMESTAMP, TIMEOUTS, GroupState
from streamkit.plan import Plan

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from streamkit.streaming.state.group_state_store import GroupStateStore

StateFunc = Callable[[tuple[Any, ...], Iterator["pd.DataFrame"], GroupState], Iterable[Any]]
OUTPUT_MODES = ("append", "update")
if not TYPE_CHECKING:
    np = lazy_module("numpy")
    pa = lazy_module("pyarrow")


@cache
def _ddl_types() -> dict[str, pa.DataType]:
    return {
        "string": pa.string(), "str": pa.string(), "bigint": pa.int64(), "long": pa.int64(),
        "int": pa.int32(), "integer": pa.int32(), "smallint": pa.int16(), "double": pa.float64(),
        "float": pa.float32(), "boolean": pa.bool_(), "bool": pa.bool_(),
        "timestamp": pa.timestamp("us", "UTC"), "date": pa.date32(),
    }  # fmt: skip


class StatefulFunctionError(StreamkitError):
    """The function of ``apply_in_pandas_with_state`` failed or returned bad frames."""


def parse_schema(schema: pa.Schema | str, what: str) -> pl.Schema:
    """An Arrow schema, or Spark DDL (``"k string, n bigint"``), as a Polars schema."""
    if isinstance(schema, str):
        fields = []
        for part in filter(None, (p.strip() for p in schema.split(","))):
            match = re.fullmatch(r"(\w+)\s+(\w+)", part)
            dtype = _ddl_types().get(match.group(2).lower()) if match else None
            if match is None or dtype is None:
                raise PlanError(
                    f"cannot read {what} {schema!r} at {part!r}: write 'name type, ...' with "
                    f"types {', '.join(sorted(_ddl_types()))}, or pass a pyarrow.Schema"
                )
            fields.append(pa.field(match.group(1), dtype))
        schema = pa.schema(fields)
    if not isinstance(schema, pa.Schema) or not len(schema):
        raise PlanError(f"{what} must be a non-empty pyarrow.Schema or DDL string, got {schema!r}")
    frame = pl.from_arrow(schema.empty_table())
    assert isinstance(frame, pl.DataFrame)
    return frame.schema


@dataclass(frozen=True, eq=False)
class FlatMapGroupsWithState(Plan):
    """``apply_in_pandas_with_state``: ``func`` per key over its rows and its state."""

    input: Plan
    keys: tuple[str, ...]
    func: StateFunc
    output_schema: pl.Schema
    state_schema: pl.Schema
    output_mode: str
    timeout: str
    schema: pl.Schema = field(init=False)

    def __post_init__(self) -> None:
        if not callable(self.func):
            raise PlanError(f"apply_in_pandas_with_state needs a function, got {self.func!r}")
        if not self.keys:
            raise PlanError("apply_in_pandas_with_state needs group_by(...) with key columns")
        for key in self.keys:
            if key not in self.input.schema:
                raise PlanError(
                    f"group key {key!r} is not a column; available: {self.input.schema.names()}"
                )
        if self.output_mode not in OUTPUT_MODES:
            raise PlanError(
                f"output_mode of apply_in_pandas_with_state must be 'append' or 'update', "
                f"got {self.output_mode!r}"
            )
        if self.timeout not in TIMEOUTS:
            raise PlanError(f"timeout_conf must be one of {TIMEOUTS}, got {self.timeout!r}")
        object.__setattr__(self, "schema", self.output_schema)

    @property
    def children(self) -> tuple[Plan, ...]:
        return (self.input,)

    def describe(self) -> str:
        name = getattr(self.func, "__name__", "function")
        return f"FlatMapGroupsWithState {name} by [{', '.join(self.keys)}] {self.timeout}"


@dataclass
class Clock:
    """The processing time and watermark one batch's calls see."""

    processing_ms: int
    watermark_ms: int = NO_TIMESTAMP
    watermark_present: bool = False


def key_frames(rows: pl.DataFrame, keys: list[str]) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """``(key tuple, pandas DataFrame of its rows)`` per key of ``rows``: keys in ascending
    order, nulls first, as Spark sorts them; rows of a key in arrival order; each frame's
    index counts from 0. One vectorised pass (a stable sort, the first row of each key,
    one pandas conversion), then a slice per key."""
    import pandas as pd

    if not rows.height:
        return
    ordered = rows.sort(keys, nulls_last=False, maintain_order=True)
    first = ordered.select(pl.struct(keys).is_first_distinct()).to_series().to_numpy()
    starts = np.flatnonzero(first)
    ends = np.append(starts[1:], ordered.height)
    tuples = ordered[starts].select(keys).rows()
    frame = ordered.to_pandas()
    for key, start, end in zip(tuples, starts.tolist(), ends.tolist(), strict=True):
        part = frame.iloc[start:end]
        part.index = pd.RangeIndex(end - start)
        yield key, part


class Outputs:
    """The pandas DataFrames a user function returned in one batch, checked against the
    output schema (``where(key)`` names the function and key in errors)."""

    def __init__(self, schema: pl.Schema, where: Callable[[tuple[Any, ...]], str]) -> None:
        self.schema, self._where = schema, where
        self._out = pa.schema(
            [pa.field(n, pl.DataFrame(schema={n: t}).to_arrow().schema[0].type)
             for n, t in schema.items()]
        )  # fmt: skip
        self._frames: list[tuple[tuple[Any, ...], Any]] = []

    def add(self, key: tuple[Any, ...], returned: Iterable[Any] | None) -> None:
        """Keep every frame of ``returned`` (None: nothing) after checking its columns."""
        for item in returned or ():
            self._frames.append((key, self._check_columns(key, item)))

    def _check_columns(self, key: tuple[Any, ...], item: Any) -> Any:
        import pandas as pd

        if not isinstance(item, pd.DataFrame):
            raise StatefulFunctionError(
                f"{self._where(key)} yielded {type(item).__name__}; it must yield pandas "
                "DataFrames (e.g. yield pd.DataFrame({...}))"
            )
        want = self._out.names
        have = [str(c) for c in item.columns]
        if sorted(have) != sorted(want):
            missing = [c for c in want if c not in have]
            extra = [c for c in have if c not in want]
            raise StatefulFunctionError(
                f"{self._where(key)} returned columns {have}, but the output schema is "
                f"{want} (missing: {missing}, unexpected: {extra}); return exactly the "
                "output schema's columns"
            )
        return item

    def take(self) -> pl.DataFrame:
        """Every frame kept since the last take, as one frame of the output schema."""
        import pandas as pd

        frames, self._frames = self._frames, []
        names = self._out.names
        if not frames:
            return pl.DataFrame(schema=self.schema)
        try:
            whole = pd.concat([f[names] for _, f in frames], ignore_index=True)
            table = pa.Table.from_pandas(whole, schema=self._out, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError):
            table = self._blame(frames)
        out = pl.from_arrow(table)
        assert isinstance(out, pl.DataFrame)
        return out

    def _blame(self, frames: list[tuple[tuple[Any, ...], Any]]) -> pa.Table:
        """Convert frame by frame to name the key whose values do not fit the schema."""
        names = self._out.names
        tables = []
        for key, frame in frames:
            try:
                tables.append(
                    pa.Table.from_pandas(frame[names], schema=self._out, preserve_index=False)
                )
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError,
                    TypeError) as exc:  # fmt: skip
                raise StatefulFunctionError(
                    f"{self._where(key)} returned values that do not fit the output schema "
                    f"({self._out.to_string(show_schema_metadata=False)}): {exc}"
                ) from exc
        return pa.concat_tables(tables)


def call_user(where: str, call: Callable[[], Iterable[Any] | None]) -> list[Any]:
    """Run one call of user code (its returned iterable drained, so that generator bodies
    run now); any exception is raised as :class:`StatefulFunctionError` led by ``where``."""
    try:
        returned = call()
        return [] if returned is None else list(returned)
    except StreamkitError as exc:
        raise StatefulFunctionError(f"{where} failed: {exc}") from exc
    except Exception as exc:
        raise StatefulFunctionError(f"{where} raised {type(exc).__name__}: {exc}") from exc


class KeyCaller:
    """Calls ``node.func`` per key and applies the state changes to a store."""

    def __init__(self, node: FlatMapGroupsWithState, store: GroupStateStore) -> None:
        self.node, self.store = node, store
        self._arity = len(node.state_schema)
        self._outputs = Outputs(node.output_schema, self._where)

    def call_groups(self, rows: pl.DataFrame, clock: Clock) -> None:
        """One call per key of ``rows`` (:func:`key_frames`' order)."""
        for key, part in key_frames(rows, list(self.node.keys)):
            self.call(key, iter([part]), clock, timed_out=False)

    def call_timed_out(self, keys: list[tuple[Any, ...]], clock: Clock) -> None:
        """The timeout call of each key: no rows, ``has_timed_out`` True."""
        for key in keys:
            self.call(key, iter(()), clock, timed_out=True)

    def call(
        self, key: tuple[Any, ...], frames: Iterator[Any], clock: Clock, *, timed_out: bool
    ) -> None:
        """One call; the returned frames are kept for :meth:`take_output`."""
        value, old_timeout = self.store.get(key)
        state = GroupState(
            value, processing_time_ms=clock.processing_ms, watermark_ms=clock.watermark_ms,
            timeout_conf=self.node.timeout, has_timed_out=timed_out,
            watermark_present=clock.watermark_present, arity=self._arity,
        )  # fmt: skip
        out = call_user(self._where(key), lambda: self.node.func(key, frames, state))
        self._outputs.add(key, out)
        if state.removed and state.timeout_ms == NO_TIMESTAMP:
            self.store.delete(key)
        elif state.updated or state.removed or state.timeout_ms != old_timeout:
            self.store.put(key, state.get_option, state.timeout_ms)

    def _where(self, key: tuple[Any, ...]) -> str:
        name = getattr(self.node.func, "__name__", "function")
        return f"apply_in_pandas_with_state function {name!r} for key {key!r}"

    def take_output(self) -> pl.DataFrame:
        """Every frame returned since the last take, as one frame of the output schema."""
        return self._outputs.take()


def run_batch(node: FlatMapGroupsWithState, rows: pl.DataFrame) -> pl.DataFrame:
    """The batch job: every key once, no state before, no timeouts, no watermark."""
    from streamkit.streaming.state.group_state_store import GroupStateStore

    key_schema = pl.Schema({k: node.input.schema[k] for k in node.keys})
    caller = KeyCaller(node, GroupStateStore(key_schema, node.state_schema))
    caller.call_groups(rows, Clock(int(time.time() * 1000)))
    return caller.take_output()
