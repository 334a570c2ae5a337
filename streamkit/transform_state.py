"""``group_by(keys).transform_with_state_in_pandas(processor, ...)``: Spark 4's
``transformWithStateInPandas`` (checked against PySpark 4.3), on streams and on batch
DataFrames. The processor's API is in :mod:`streamkit.stateful_processor`.

One batch (:class:`ProcessorCalls`), as Spark runs a partition of a micro-batch:

1. a fresh copy of the processor (``copy.deepcopy``; Spark unpickles one per task) and
   ``init(handle)``, which must declare the variables the query started with;
2. ``handle_input_rows(key, iterator of one pandas DataFrame, timer_values)`` once per
   key with rows, keys grouped in one vectorised pass (:func:`~streamkit.stateful.key_frames`).
   With an initial state, in the first batch only, keys of the rows and of the initial
   state are co-grouped in key order: ``handle_initial_state(key, pandas DataFrame of the
   key's initial rows, timer_values)`` first (its return is ignored), then
   ``handle_input_rows`` if the key has rows;
3. under a time mode other than ``None``, every timer at or before the threshold — the
   watermark in force (``EventTime``) or the batch's processing time
   (``ProcessingTime``) — earliest first, ``handle_expired_timer(key, timer_values,
   expired_timer_info)``, then the timer is deleted. A timer registered in step 2 (or
   before) that is already due fires in step 3 of the same batch; one registered in
   step 3 fires in a later batch;
4. ``close()``.

``timer_values`` holds the batch's processing time and the watermark in force (0 before
any event time and on a stream without a watermark, as in Spark); both are -1 under time
mode ``None``, where timers are refused. State and timers belong to the key of the call
running; reading state in ``init`` or ``close`` is refused. A batch DataFrame runs as one
batch with no state before it, processing time now and watermark -1 (so only
processing-time timers can fire), as Spark runs it. Streaming rules (late rows,
no-data batches, checkpoints): :mod:`streamkit.streaming.transform_exec`.

TTL on state variables (``ttl_duration_ms``, Spark's rules; time mode
``ProcessingTime`` only): an update at the batch's processing time P sets what it writes
to expire at P + TTL (a value; each list element put or appended; each map entry); a
batch whose processing time is at or past an entry's expiry no longer sees it (reads,
``exists``, iteration), and at the end of each batch (after the timers) the expired
entries are removed from the state, so checkpoints never hold them and a restart keeps
every expiry (:mod:`~streamkit.streaming.state.processor_store`).

``event_time_column_name`` (Spark's ``eventTimeColumnName``) names an output timestamp
column that carries the input's watermark on to the operators above (plan rules here,
streaming rules in :mod:`streamkit.streaming.transform_exec`); it needs a
``with_watermark`` below and is refused on a batch DataFrame, as in Spark.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import polars as pl

from streamkit.errors import PlanError
from streamkit.group_state import _plain
from streamkit.plan import Plan, Watermark
from streamkit.stateful import Clock, Outputs, call_user, key_frames, parse_schema
from streamkit.stateful_processor import (
    NO_TIME,
    TIME_MODES,
    ExpiredTimerInfo,
    StatefulProcessor,
    StatefulProcessorError,
    StatefulProcessorHandle,
    TimeMode,
    TimerValues,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from streamkit.streaming.state.processor_store import ProcessorStore
    from streamkit.streaming.state.processor_vars import Kind, StateVar

OUTPUT_MODES = ("append", "update")
NO_WATERMARK_TO_ASSIGN = (
    "[CANNOT_ASSIGN_EVENT_TIME_COLUMN_WITHOUT_WATERMARK] Watermark needs to be defined to "
    "reassign event time column. Failed to find watermark definition in the streaming "
    "query (Spark's refusal too): add .with_watermark(column, delay) before "
    "group_by(...).transform_with_state_in_pandas, or drop event_time_column_name"
)
Key = tuple[Any, ...]


def _time_mode(value: str) -> str:
    for mode in TIME_MODES:
        if isinstance(value, str) and value.lower() == mode.lower():
            return mode
    raise PlanError(f"time_mode must be one of {TIME_MODES} (any case), got {value!r}")


def _method(
    processor: Any, snake: str, camel: str, *, default: bool = True
) -> Callable[..., Any] | None:
    """The processor's ``snake`` method if its class defines one other than the base's,
    else its PySpark ``camel`` spelling, else (with ``default``) the base's (None: none)."""
    own = getattr(type(processor), snake, None)
    if own is not None and own is not getattr(StatefulProcessor, snake, None):
        return getattr(processor, snake)  # type: ignore[no-any-return]
    found = getattr(processor, camel, None)
    if found is None and default:
        found = getattr(processor, snake, None)
    return found if callable(found) else None


@dataclass(frozen=True, eq=False)
class TransformWithState(Plan):
    """``transform_with_state_in_pandas``: a stateful processor per key."""

    input: Plan
    keys: tuple[str, ...]
    processor: Any
    output_schema: pl.Schema
    output_mode: str
    time_mode: str
    initial_state: Plan | None = None
    """A batch plan (not a child: it is read once, in the first batch)."""
    initial_keys: tuple[str, ...] = ()
    event_time_column: str | None = None
    """Spark's ``eventTimeColumnName``: the output column that carries the watermark on."""
    schema: pl.Schema = field(init=False)

    def __post_init__(self) -> None:
        for snake, camel in (("init", "init"), ("handle_input_rows", "handleInputRows")):
            if _method(self.processor, snake, camel, default=False) is None:
                raise PlanError(
                    f"transform_with_state_in_pandas needs a StatefulProcessor (with {snake}), "
                    f"got {self.processor!r}"
                )
        if not self.keys:
            raise PlanError("transform_with_state_in_pandas needs group_by(...) with key columns")
        for key in self.keys:
            if key not in self.input.schema:
                raise PlanError(
                    f"group key {key!r} is not a column; available: {self.input.schema.names()}"
                )
        mode = self.output_mode.lower() if isinstance(self.output_mode, str) else None
        if mode not in OUTPUT_MODES:
            raise PlanError(
                "output_mode of transform_with_state_in_pandas must be 'append' or 'update', "
                f"got {self.output_mode!r}"
            )
        object.__setattr__(self, "output_mode", mode)
        object.__setattr__(self, "time_mode", _time_mode(self.time_mode))
        object.__setattr__(self, "schema", self.output_schema)
        if self.initial_state is not None:
            self._check_initial(self.initial_state)
        if self.event_time_column:
            self._check_event_time_column(self.event_time_column)
        else:
            object.__setattr__(self, "event_time_column", None)

    def _check_initial(self, initial: Plan) -> None:
        from streamkit.stream_static import is_streaming

        if is_streaming(initial):
            raise PlanError(
                "initial_state of transform_with_state_in_pandas must be a batch DataFrame "
                "(grouped), not a stream, as in Spark"
            )
        theirs = [initial.schema.get(k) for k in self.initial_keys]
        ours = [self.input.schema[k] for k in self.keys]
        if theirs != ours:
            raise PlanError(
                f"initial_state is grouped by {list(self.initial_keys)} ({theirs}); the query "
                f"by {list(self.keys)} ({ours}): the key columns must match in number and type"
            )

    def _check_event_time_column(self, name: str) -> None:
        """Spark's analysis of ``eventTimeColumnName``: an output timestamp column, and a
        watermark on the input to take the delay from (batch plans too)."""
        if name not in self.output_schema:
            raise PlanError(
                f"event_time_column_name {name!r} is not a column of the output schema "
                f"{self.output_schema.names()}"
            )
        if not isinstance(self.output_schema[name], pl.Datetime):
            raise PlanError(
                f"event_time_column_name {name!r} must be a timestamp column of the output "
                f"schema, but it is {self.output_schema[name]}"
            )
        if not any(isinstance(n, Watermark) for n in self.input.chain()):
            raise PlanError(NO_WATERMARK_TO_ASSIGN)

    def input_watermark(self) -> Watermark | None:
        """The ``with_watermark`` below the operator (None: none)."""
        return next((n for n in self.input.chain() if isinstance(n, Watermark)), None)

    def output_watermark(self) -> Watermark | None:
        """The watermark on :attr:`event_time_column` that operators above see (Spark's
        ``UpdateEventTimeWatermarkColumn``: the input's delay, moved to that column)."""
        mark = self.input_watermark()
        if self.event_time_column is None or mark is None:
            return None
        return Watermark(self, self.event_time_column, mark.delay_ns)

    @property
    def children(self) -> tuple[Plan, ...]:
        return (self.input,)

    @property
    def name(self) -> str:
        """The processor's class name, for messages."""
        return type(self.processor).__name__

    def describe(self) -> str:
        at = f" event time {self.event_time_column}" if self.event_time_column else ""
        return f"TransformWithState {self.name} by [{', '.join(self.keys)}] {self.time_mode}{at}"

    def key_schema(self) -> pl.Schema:
        """The grouping key columns' schema."""
        return pl.Schema({k: self.input.schema[k] for k in self.keys})


class Runtime:
    """What the handle and the state objects of one processor copy act on: the store,
    the phase of the batch and the key of the call running."""

    def __init__(self, node: TransformWithState, store: ProcessorStore | None) -> None:
        self.node, self.store = node, store
        self.declared: dict[str, StateVar] = {}
        self.dropped: set[str] = set()
        self.phase = "init"
        self.key: Key | None = None

    # -- declarations (init) -------------------------------------------------------------
    def declare(
        self, name: str, kind: Kind, schema: pa.Schema | str,
        key_schema: pa.Schema | str | None, ttl_ms: int | None,
    ) -> None:  # fmt: skip
        """Declare a state variable (only in ``init``)."""
        if self.phase != "init":
            raise StatefulProcessorError(
                f"state variable {name!r} declared outside init: declare every state "
                "variable in init(handle)"
            )
        ttl = None if ttl_ms is None else _ttl(name, ttl_ms, self.node.time_mode)
        if not isinstance(name, str) or not name or name.startswith("$"):
            raise StatefulProcessorError(
                f"state variable names are non-empty strings not starting with '$', got {name!r}"
            )
        if name in self.declared:
            raise StatefulProcessorError(f"state variable {name!r} is declared twice in init")
        values = parse_schema(schema, f"the schema of state variable {name!r}")
        keys = (
            None if key_schema is None else parse_schema(key_schema, f"the key schema of {name!r}")
        )
        from streamkit.streaming.state.processor_vars import StateVar  # numpy: lazily

        self.declared[name] = StateVar(name, kind, values, keys, ttl)

    def delete_if_exists(self, name: str) -> None:
        """Drop variable ``name`` of every key (only in ``init``)."""
        if self.phase != "init":
            raise StatefulProcessorError("delete_if_exists is only allowed in init(handle)")
        self.dropped.add(name)

    # -- state of the current key -------------------------------------------------------
    def target(self, name: str) -> tuple[ProcessorStore, Key]:
        """The store and the current key, for a call on variable ``name``."""
        return self._var(name)

    def _var(self, name: str) -> tuple[ProcessorStore, Key]:
        if self.store is None or self.key is None:
            raise StatefulProcessorError(
                f"state variable {name!r} used in {self.phase}: state is read and written "
                "only in handle_input_rows and handle_expired_timer (for their key)"
            )
        return self.store, self.key

    def read(self, name: str) -> Any:
        """The current key's content of variable ``name``."""
        store, key = self._var(name)
        return store.read(key, name)

    def write(self, name: str, content: Any) -> None:
        """Replace it."""
        store, key = self._var(name)
        store.write(key, name, content)

    def row(self, name: str, values: Any, *, user_key: bool = False) -> tuple[Any, ...]:
        """``values`` as a tuple of variable ``name``'s fields (its map key's fields with
        ``user_key``), numpy and pandas scalars as Python values."""
        var = self.declared[name]
        schema = var.key_schema if user_key else var.schema
        assert schema is not None
        if not isinstance(values, tuple | list):
            raise StatefulProcessorError(
                f"state variable {name!r} takes tuples of {schema.names()}, got {values!r}"
            )
        items = tuple(_plain(v) for v in values)
        if len(items) != len(schema):
            raise StatefulProcessorError(
                f"state variable {name!r} takes tuples of {len(schema)} values "
                f"({schema.names()}), got {len(items)}: {items!r}"
            )
        return items

    # -- timers of the current key -------------------------------------------------------
    def _timers(self, what: str) -> tuple[ProcessorStore, Key]:
        if self.node.time_mode == TimeMode.NONE:
            raise StatefulProcessorError(
                f"{what} needs time_mode 'ProcessingTime' or 'EventTime' (this query uses "
                "'None'), as in Spark"
            )
        return self._var("timers")

    def register_timer(self, at: int) -> None:
        """A timer for the current key."""
        store, key = self._timers("register_timer")
        store.add_timer(key, _whole_ms(at))

    def delete_timer(self, at: int) -> None:
        """Drop one of the current key's timers."""
        store, key = self._timers("delete_timer")
        store.delete_timer(key, _whole_ms(at))

    def list_timers(self) -> list[int]:
        """The current key's timers."""
        store, key = self._timers("list_timers")
        return store.timers(key)


def _cogrouped(
    rows: pl.DataFrame, keys: tuple[str, ...], initial: pl.DataFrame | None,
    initial_keys: tuple[str, ...],
) -> Iterator[tuple[Key, Any, Any]]:  # fmt: skip
    """``(key, its initial state frame or None, its rows frame or None)`` per key of
    either, keys in Spark's order (ascending, nulls first), as Spark co-groups them."""
    if initial is None:
        for key, part in key_frames(rows, list(keys)):
            yield key, None, part
        return
    firsts = dict(key_frames(initial, list(initial_keys)))
    parts = dict(key_frames(rows, list(keys)))
    names = list(keys)
    union = pl.concat([
        rows.select(names),
        initial.select([pl.col(a).alias(b) for a, b in zip(initial_keys, names, strict=True)]),
    ]).unique(maintain_order=True).sort(names, nulls_last=False, maintain_order=True)  # fmt: skip
    for key in union.rows():
        yield key, firsts.get(key), parts.get(key)


def _ttl(name: str, ttl_ms: Any, time_mode: str) -> int:
    """The TTL of variable ``name`` (Spark's rules: ProcessingTime only, positive ms)."""
    if time_mode != TimeMode.PROCESSING_TIME:
        raise StatefulProcessorError(
            f"ttl_duration_ms on state variable {name!r} needs time_mode 'ProcessingTime' "
            f"(this query uses {time_mode!r}), as in Spark"
        )
    plain = _plain(ttl_ms)
    if isinstance(plain, bool) or not isinstance(plain, int) or plain <= 0:
        raise StatefulProcessorError(
            f"ttl_duration_ms of state variable {name!r} must be a positive whole number of "
            f"ms, got {ttl_ms!r}"
        )
    return plain


def _whole_ms(value: Any) -> int:
    plain = _plain(value)
    if isinstance(plain, bool) or not isinstance(plain, int | float):
        raise StatefulProcessorError(f"timer timestamps are epoch ms (int), got {value!r}")
    return int(plain)


def declared_state(node: TransformWithState) -> tuple[dict[str, StateVar], set[str]]:
    """The variables ``init`` declares and the ones it drops, from a copy of the
    processor (Spark's driver-side pre-init: ``init`` then ``close``)."""
    runtime = Runtime(node, None)
    processor = copy.deepcopy(node.processor)
    handle = StatefulProcessorHandle(runtime)
    call_user(_where(node, "init"), lambda: _call_none(_method(processor, "init", "init"), handle))
    runtime.phase = "close"
    call_user(_where(node, "close"), lambda: _call_none(_method(processor, "close", "close")))
    return runtime.declared, runtime.dropped


def _call_none(method: Callable[..., Any] | None, *args: Any) -> None:
    if method is not None:
        method(*args)


def _where(node: TransformWithState, what: str, key: Key | None = None) -> str:
    at = "" if key is None else f" for key {key!r}"
    return f"transform_with_state_in_pandas processor {node.name!r} {what}{at}"


class ProcessorCalls:
    """Runs batches of ``node``'s processor over ``store`` (see the module docstring)."""

    def __init__(self, node: TransformWithState, store: ProcessorStore) -> None:
        self.node, self.store = node, store
        self._outputs = Outputs(node.output_schema, lambda key: _where(node, "", key))

    def run(
        self, rows: pl.DataFrame, clock: Clock, fire_at: int | None,
        initial: pl.DataFrame | None = None,
    ) -> pl.DataFrame:  # fmt: skip
        """One batch over ``rows``; timers at or before ``fire_at`` fire (None: none);
        ``initial``: the initial state's rows (the first batch only)."""
        node = self.node
        runtime = Runtime(node, self.store)
        processor = copy.deepcopy(node.processor)
        handle = StatefulProcessorHandle(runtime)
        init = _method(processor, "init", "init")
        call_user(_where(node, "init"), lambda: _call_none(init, handle))
        self._check_declarations(runtime)
        values = self._timer_values(clock)
        self.store.now = clock.processing_ms
        rows_call = _method(processor, "handle_input_rows", "handleInputRows", default=False)
        assert rows_call is not None
        initial_call = _method(processor, "handle_initial_state", "handleInitialState")
        for key, first, part in _cogrouped(rows, node.keys, initial, node.initial_keys):
            runtime.key = key
            if first is not None and initial_call is not None:
                runtime.phase = "handle_initial_state"
                init_call = partial(initial_call, key, first, values)
                self._call(key, "handle_initial_state", init_call)
            if part is not None:
                runtime.phase = "handle_input_rows"
                call = partial(rows_call, key, iter([part]), values)
                self._outputs.add(key, self._call(key, "handle_input_rows", call))
        if fire_at is not None and node.time_mode != TimeMode.NONE:
            self._fire(processor, runtime, values, fire_at)
        runtime.key, runtime.phase = None, "close"
        self.store.expire()
        close = _method(processor, "close", "close")
        call_user(_where(node, "close"), lambda: _call_none(close))
        return self._outputs.take()

    def _fire(self, processor: Any, runtime: Runtime, values: TimerValues, fire_at: int) -> None:
        expired = _method(processor, "handle_expired_timer", "handleExpiredTimer")
        runtime.phase = "handle_expired_timer"
        for key, at in self.store.due(fire_at):
            if not self.store.has_timer(key, at):  # deleted by an earlier call of this batch
                continue
            runtime.key = key
            info = ExpiredTimerInfo(at)
            if expired is not None:
                call = partial(expired, key, values, info)
                self._outputs.add(key, self._call(key, "handle_expired_timer", call))
            self.store.delete_timer(key, at)

    def _call(self, key: Key, what: str, call: Callable[[], Iterable[Any] | None]) -> list[Any]:
        return call_user(_where(self.node, what, key), call)

    def _timer_values(self, clock: Clock) -> TimerValues:
        if self.node.time_mode == TimeMode.NONE:
            return TimerValues(NO_TIME, NO_TIME)
        return TimerValues(clock.processing_ms, clock.watermark_ms)

    def _check_declarations(self, runtime: Runtime) -> None:
        runtime.phase = "handle_input_rows"
        if runtime.declared != self.store.variables:
            raise StatefulProcessorError(
                f"{_where(self.node, 'init')} declared {sorted(runtime.declared)} in this "
                f"batch but {sorted(self.store.variables)} when the query started; init must "
                "declare the same state variables every time"
            )


def run_batch(
    node: TransformWithState, rows: pl.DataFrame, initial: pl.DataFrame | None = None
) -> pl.DataFrame:
    """The batch job: one batch with no state before it but the ``initial`` state's rows
    (see the module docstring); ``event_time_column_name`` is refused, as Spark refuses it
    on a batch DataFrame (with or without ``with_watermark``, which a batch plan drops)."""
    if node.event_time_column is not None:
        raise PlanError(
            NO_WATERMARK_TO_ASSIGN.split(" (", maxsplit=1)[0]
            + " (Spark's refusal too: a batch DataFrame has no watermark, with_watermark "
            "or not); drop event_time_column_name from the batch job"
        )
    from streamkit.streaming.state.processor_store import ProcessorStore  # numpy: lazily

    variables, _ = declared_state(node)
    store = ProcessorStore(node.key_schema(), variables.values())
    now = int(time.time() * 1000)
    fire_at = now if node.time_mode == TimeMode.PROCESSING_TIME else NO_TIME
    return ProcessorCalls(node, store).run(rows, Clock(now, NO_TIME, False), fire_at, initial)
