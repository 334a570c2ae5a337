"""The Python API of ``transform_with_state_in_pandas`` (Spark 4's
``transformWithStateInPandas``, "arbitrary state API v2"), in snake case.

A :class:`StatefulProcessor` declares its state variables in ``init(handle)``
(:meth:`StatefulProcessorHandle.get_value_state`, ``get_list_state``,
``get_map_state``), then sees each key's rows of a micro-batch in
``handle_input_rows(key, rows, timer_values)`` and each of the key's timers that expired
in ``handle_expired_timer(key, timer_values, expired_timer_info)``; both yield pandas
DataFrames of the output schema. With an initial state, the first batch calls
``handle_initial_state(key, initial_state, timer_values)`` first for each of its keys.
``close()`` ends the batch. As in Spark, the state objects and the timer calls act on
the key of the call running (the "implicit key"), a new copy of the processor runs each
batch (attributes set in one batch are gone in the next: keep what must last in state),
and state is only read or written inside the handle methods.

PySpark's camelCase spellings are accepted too (``handleInputRows``, ``getValueState``,
``appendValue``, ``getCurrentWatermarkInMs``, ...), so a processor written for PySpark
runs unchanged. The rules of the operator: :mod:`streamkit.transform_state`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from streamkit.errors import StreamkitError

if TYPE_CHECKING:
    import pyarrow as pa

    from streamkit.transform_state import Runtime

NO_TIME = -1
"""Spark's value for "no processing time" and "no watermark" in :class:`TimerValues`."""


class TimeMode:
    """The time modes of ``transform_with_state_in_pandas`` (Spark's names; matched
    case-insensitively)."""

    NONE = "None"
    PROCESSING_TIME = "ProcessingTime"
    EVENT_TIME = "EventTime"


TIME_MODES = (TimeMode.NONE, TimeMode.PROCESSING_TIME, TimeMode.EVENT_TIME)


class StatefulProcessorError(StreamkitError, ValueError):
    """A state variable, timer or handle was used against Spark's rules (the message
    says which)."""


class TimerValues:
    """The processing time and the event-time watermark of the batch running (ms since
    the epoch; :data:`NO_TIME` under time mode ``None``, and for the watermark when the
    stream has none)."""

    def __init__(self, processing_time_ms: int, watermark_ms: int) -> None:
        self._processing_ms, self._watermark_ms = processing_time_ms, watermark_ms

    def get_current_processing_time_in_ms(self) -> int:
        """The batch's processing time (the same for every key of the batch)."""
        return self._processing_ms

    def get_current_watermark_in_ms(self) -> int:
        """The watermark in force in the batch (the one timers fire against)."""
        return self._watermark_ms

    getCurrentProcessingTimeInMs = get_current_processing_time_in_ms
    getCurrentWatermarkInMs = get_current_watermark_in_ms

    def __repr__(self) -> str:
        return f"TimerValues(processing={self._processing_ms}, watermark={self._watermark_ms})"


class ExpiredTimerInfo:
    """The timer that fired (its expiry time, ms)."""

    def __init__(self, expiry_time_ms: int) -> None:
        self._expiry_ms = expiry_time_ms

    def get_expiry_time_in_ms(self) -> int:
        """The timestamp the timer was registered for."""
        return self._expiry_ms

    getExpiryTimeInMs = get_expiry_time_in_ms

    def __repr__(self) -> str:
        return f"ExpiredTimerInfo({self._expiry_ms})"


class ValueState:
    """One value (a tuple of the schema's fields) per key."""

    def __init__(self, runtime: Runtime, name: str) -> None:
        self._runtime, self._name = runtime, name

    def exists(self) -> bool:
        """Whether the key holds a value (not expired)."""
        store, key = self._runtime.target(self._name)
        return store.exists(key, self._name)

    def get(self) -> tuple[Any, ...] | None:
        """The key's value, or None (also once expired)."""
        value: tuple[Any, ...] | None = self._runtime.read(self._name)
        return value

    def update(self, new_value: tuple[Any, ...]) -> None:
        """Replace the key's value (with a TTL: it expires TTL after this batch's time)."""
        self._runtime.write(self._name, self._runtime.row(self._name, new_value))

    def clear(self) -> None:
        """Drop the key's value."""
        self._runtime.write(self._name, None)


class ListState:
    """A list of values (tuples of the schema's fields) per key; an empty list does not
    exist. With a TTL each element expires on its own, TTL after the batch that added it."""

    def __init__(self, runtime: Runtime, name: str) -> None:
        self._runtime, self._name = runtime, name

    def exists(self) -> bool:
        """Whether the key's list holds any value (not expired)."""
        store, key = self._runtime.target(self._name)
        return store.exists(key, self._name)

    def get(self) -> Iterator[tuple[Any, ...]]:
        """The key's values (not expired), in the order they were added."""
        return iter(list(self._runtime.read(self._name) or ()))

    def put(self, new_state: Iterable[tuple[Any, ...]]) -> None:
        """Replace the key's list."""
        self._runtime.write(self._name, [self._runtime.row(self._name, v) for v in new_state])

    def append_value(self, new_state: tuple[Any, ...]) -> None:
        """Add one value at the end (O(1) amortised)."""
        self.append_list([new_state])

    def append_list(self, new_state: Iterable[tuple[Any, ...]]) -> None:
        """Add values at the end (O(values added): the list is not copied)."""
        rows = [self._runtime.row(self._name, v) for v in new_state]
        store, key = self._runtime.target(self._name)
        store.append(key, self._name, rows)

    def clear(self) -> None:
        """Drop the key's list."""
        self._runtime.write(self._name, None)

    appendValue = append_value
    appendList = append_list


class MapState:
    """A map from user keys (tuples of the key schema) to values (tuples of the value
    schema) per grouping key; an empty map does not exist. With a TTL each entry expires
    on its own, TTL after the batch that last updated it. Single-key calls cost O(1)."""

    def __init__(self, runtime: Runtime, name: str) -> None:
        self._runtime, self._name = runtime, name

    def _map(self) -> dict[tuple[Any, ...], tuple[Any, ...]]:
        held: dict[tuple[Any, ...], tuple[Any, ...]] = self._runtime.read(self._name) or {}
        return held

    def _item(self, key: tuple[Any, ...]) -> tuple[Any, ...]:
        return self._runtime.row(self._name, key, user_key=True)

    def exists(self) -> bool:
        """Whether the key's map holds any entry (not expired)."""
        store, key = self._runtime.target(self._name)
        return store.exists(key, self._name)

    def get_value(self, key: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """The value of ``key``, or None."""
        store, grouping = self._runtime.target(self._name)
        return store.map_get(grouping, self._name, self._item(key))

    def contains_key(self, key: tuple[Any, ...]) -> bool:
        """Whether ``key`` is in the map."""
        return self.get_value(key) is not None

    def update_value(self, key: tuple[Any, ...], value: tuple[Any, ...]) -> None:
        """Set the value of ``key`` (the map is not copied)."""
        item, row = self._item(key), self._runtime.row(self._name, value)
        store, grouping = self._runtime.target(self._name)
        store.map_put(grouping, self._name, item, row)

    def iterator(self) -> Iterator[tuple[tuple[Any, ...], tuple[Any, ...]]]:
        """``(key, value)`` pairs."""
        return iter(list(self._map().items()))

    def keys(self) -> Iterator[tuple[Any, ...]]:
        """The map's keys."""
        return iter(list(self._map()))

    def values(self) -> Iterator[tuple[Any, ...]]:
        """The map's values."""
        return iter(list(self._map().values()))

    def remove_key(self, key: tuple[Any, ...]) -> None:
        """Drop ``key`` from the map."""
        store, grouping = self._runtime.target(self._name)
        store.map_remove(grouping, self._name, self._item(key))

    def clear(self) -> None:
        """Drop the key's map."""
        self._runtime.write(self._name, None)

    getValue = get_value
    containsKey = contains_key
    updateValue = update_value
    removeKey = remove_key


class StatefulProcessorHandle:
    """What ``init`` declares state with, and what the handle methods set timers with
    (timers belong to the key of the call running)."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def get_value_state(
        self, state_name: str, schema: pa.Schema | str, ttl_duration_ms: int | None = None
    ) -> ValueState:
        """Declare a value state (``schema``: Spark DDL such as ``"count bigint"``, or a
        pyarrow.Schema); only in ``init``. ``ttl_duration_ms`` (time mode
        ``ProcessingTime`` only): each update makes the value expire that long after the
        batch's processing time (rules: :mod:`streamkit.transform_state`)."""
        self._runtime.declare(state_name, "value", schema, None, ttl_duration_ms)
        return ValueState(self._runtime, state_name)

    def get_list_state(
        self, state_name: str, schema: pa.Schema | str, ttl_duration_ms: int | None = None
    ) -> ListState:
        """Declare a list state; only in ``init``. With ``ttl_duration_ms`` each element
        put or appended expires that long after the batch's processing time."""
        self._runtime.declare(state_name, "list", schema, None, ttl_duration_ms)
        return ListState(self._runtime, state_name)

    def get_map_state(
        self,
        state_name: str,
        user_key_schema: pa.Schema | str,
        value_schema: pa.Schema | str,
        ttl_duration_ms: int | None = None,
    ) -> MapState:
        """Declare a map state; only in ``init``. With ``ttl_duration_ms`` each entry
        expires that long after the batch that last updated it."""
        self._runtime.declare(state_name, "map", value_schema, user_key_schema, ttl_duration_ms)
        return MapState(self._runtime, state_name)

    def register_timer(self, expiry_timestamp_ms: int) -> None:
        """A timer for the current key at ``expiry_timestamp_ms`` (processing time or
        event time, per the time mode). It fires in the first batch whose processing
        time (or watermark) is at or past it, after that batch's rows are handled; a
        timer already due when registered fires in the same batch."""
        self._runtime.register_timer(expiry_timestamp_ms)

    def delete_timer(self, expiry_timestamp_ms: int) -> None:
        """Drop the current key's timer at ``expiry_timestamp_ms`` (if any)."""
        self._runtime.delete_timer(expiry_timestamp_ms)

    def list_timers(self) -> Iterator[int]:
        """The current key's timers, earliest first."""
        return iter(self._runtime.list_timers())

    def delete_if_exists(self, state_name: str) -> None:
        """In ``init``: drop a state variable of an earlier version of the processor
        (every key's), e.g. before declaring it again with another schema."""
        self._runtime.delete_if_exists(state_name)

    def getValueState(
        self, stateName: str, schema: pa.Schema | str, ttlDurationMs: int | None = None
    ) -> ValueState:
        """:meth:`get_value_state`."""
        return self.get_value_state(stateName, schema, ttlDurationMs)

    def getListState(
        self, stateName: str, schema: pa.Schema | str, ttlDurationMs: int | None = None
    ) -> ListState:
        """:meth:`get_list_state`."""
        return self.get_list_state(stateName, schema, ttlDurationMs)

    def getMapState(
        self,
        stateName: str,
        userKeySchema: pa.Schema | str,
        valueSchema: pa.Schema | str,
        ttlDurationMs: int | None = None,
    ) -> MapState:
        """:meth:`get_map_state`."""
        return self.get_map_state(stateName, userKeySchema, valueSchema, ttlDurationMs)

    registerTimer = register_timer
    deleteTimer = delete_timer
    listTimers = list_timers
    deleteIfExists = delete_if_exists


class StatefulProcessor(ABC):
    """The user's processor (see the module docstring)."""

    @abstractmethod
    def init(self, handle: StatefulProcessorHandle) -> None:
        """Declare the state variables (once per batch, before any key)."""

    def handle_input_rows(
        self, key: tuple[Any, ...], rows: Iterator[Any], timer_values: TimerValues
    ) -> Iterable[Any] | None:
        """The key's rows of this batch (an iterator of pandas DataFrames); yield pandas
        DataFrames of the output schema. Every processor defines it (or PySpark's
        ``handleInputRows``): the query refuses one that defines neither."""
        raise NotImplementedError("define handle_input_rows(key, rows, timer_values)")

    def handle_expired_timer(
        self, key: tuple[Any, ...], timer_values: TimerValues, expired_timer_info: ExpiredTimerInfo
    ) -> Iterable[Any] | None:
        """One of the key's timers fired (it is deleted after this call); yield pandas
        DataFrames of the output schema. Default: nothing."""
        return iter(())

    def handle_initial_state(  # noqa: B027 (optional to override, as in PySpark)
        self, key: tuple[Any, ...], initial_state: Any, timer_values: TimerValues
    ) -> None:
        """With ``initial_state=`` on the query: the key's rows of the initial state (one
        pandas DataFrame, every column of the initial DataFrame), in the query's first
        batch only, before the key's ``handle_input_rows`` (a key may have initial state
        and no rows). Returns nothing. Default: ignore the initial state."""

    def close(self) -> None:  # noqa: B027 (optional to override, as in PySpark)
        """The batch is done."""
