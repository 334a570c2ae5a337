"""The per-key state handle of ``apply_in_pandas_with_state``, with Spark's rules.

A :class:`GroupState` is made for one call of the user function on one key and follows
``GroupStateImpl`` (Spark 4) and PySpark's ``GroupState``:

- ``get`` / ``get_option`` / ``exists`` read the key's state (a tuple of the state
  schema's fields); ``update(tuple)`` replaces it (None is refused); ``remove()`` drops it.
- The timeout starts unset on every call: a key keeps a timeout only if this call sets
  one (``set_timeout_duration`` under processing-time timeouts: the batch's processing
  time plus the duration; ``set_timeout_timestamp`` under event-time timeouts: a
  timestamp not before the current watermark). Setting the other kind raises.
- After the call, a removed state with no timeout leaves the store; a removed state with
  a timeout stays as a timeout without a value (the function is called again when it
  fires, with ``exists`` False); otherwise the state and timeout are written when either
  changed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from numbers import Real
from typing import Any, SupportsFloat

from streamkit.durations import parse_duration_ns
from streamkit.errors import StreamkitError

NO_TIMESTAMP = -1
"""Spark's marker for "no timeout" and "no watermark"."""


class GroupStateTimeout:
    """The kinds of timeout (PySpark's names)."""

    NoTimeout = "NoTimeout"
    ProcessingTimeTimeout = "ProcessingTimeTimeout"
    EventTimeTimeout = "EventTimeTimeout"


TIMEOUTS = (
    GroupStateTimeout.NoTimeout,
    GroupStateTimeout.ProcessingTimeTimeout,
    GroupStateTimeout.EventTimeTimeout,
)


class GroupStateError(StreamkitError, ValueError):
    """A ``GroupState`` was used against Spark's rules (the message says which)."""


class GroupState:
    """The state of one key in one call (see the module docstring)."""

    def __init__(
        self,
        value: tuple[Any, ...] | None,
        *,
        processing_time_ms: int,
        watermark_ms: int,
        timeout_conf: str,
        has_timed_out: bool,
        watermark_present: bool,
        arity: int,
    ) -> None:
        self._value = value
        self._processing_ms, self._watermark_ms = processing_time_ms, watermark_ms
        self._conf, self._timed_out = timeout_conf, has_timed_out
        self._watermark_present, self._arity = watermark_present, arity
        self.updated = False
        """Whether :meth:`update` was the last change (internal)."""
        self.removed = False
        """Whether :meth:`remove` was the last change (internal)."""
        self.timeout_ms: int = NO_TIMESTAMP
        """The timeout this call set (internal; :data:`NO_TIMESTAMP`: none)."""

    # -- reading ---------------------------------------------------------------------------
    @property
    def exists(self) -> bool:
        """Whether the key has a state."""
        return self._value is not None

    @property
    def get(self) -> tuple[Any, ...]:
        """The state as a tuple of the state schema's fields; raises if there is none."""
        if self._value is None:
            raise GroupStateError(
                "the state does not exist (never set, or removed); test state.exists or "
                "use state.get_option"
            )
        return self._value

    @property
    def get_option(self) -> tuple[Any, ...] | None:
        """The state, or None."""
        return self._value

    @property
    def has_timed_out(self) -> bool:
        """True when this call is the key's timeout (no new rows)."""
        return self._timed_out

    # -- writing ---------------------------------------------------------------------------
    def update(self, value: tuple[Any, ...]) -> None:
        """Replace the state by ``value`` (one item per state field, in order)."""
        if value is None:
            raise GroupStateError("None is not a valid state value; call state.remove()")
        items = tuple(_plain(v) for v in value)
        if len(items) != self._arity:
            raise GroupStateError(
                f"state.update needs a tuple of {self._arity} values (the state schema's "
                f"fields), got {len(items)}: {items!r}"
            )
        self._value, self.updated, self.removed = items, True, False

    def remove(self) -> None:
        """Drop the state (a timeout set in this call still fires)."""
        self._value, self.updated, self.removed = None, False, True

    def set_timeout_duration(self, duration: SupportsFloat | str | timedelta) -> None:
        """Time out after ``duration`` (ms, or ``"10 seconds"``) of processing time from
        this batch's processing time; needs ``ProcessingTimeTimeout``."""
        if self._conf != GroupStateTimeout.ProcessingTimeTimeout:
            raise GroupStateError(
                "set_timeout_duration needs GroupStateTimeout.ProcessingTimeTimeout in "
                f"apply_in_pandas_with_state (this query uses {self._conf})"
            )
        if isinstance(duration, str | timedelta):
            ms = parse_duration_ns(duration) // 1_000_000
        else:
            ms = _whole_ms(duration, "timeout duration must be ms or a duration")
        if ms <= 0:
            raise GroupStateError(f"timeout duration must be positive, got {ms} ms")
        self.timeout_ms = self._processing_ms + ms

    def set_timeout_timestamp(self, timestamp: SupportsFloat | datetime) -> None:
        """Time out once the watermark passes ``timestamp`` (epoch ms or a datetime);
        needs ``EventTimeTimeout``; must not be before the current watermark."""
        if self._conf != GroupStateTimeout.EventTimeTimeout:
            raise GroupStateError(
                "set_timeout_timestamp needs GroupStateTimeout.EventTimeTimeout in "
                f"apply_in_pandas_with_state (this query uses {self._conf})"
            )
        ms = _epoch_ms(timestamp)
        if ms <= 0:
            raise GroupStateError(f"timeout timestamp must be positive, got {ms}")
        if self._watermark_ms != NO_TIMESTAMP and ms < self._watermark_ms:
            raise GroupStateError(
                f"timeout timestamp ({ms}) cannot be earlier than the current watermark "
                f"({self._watermark_ms})"
            )
        self.timeout_ms = ms

    def get_current_watermark_ms(self) -> int:
        """The event-time watermark of this batch (ms); needs a watermark on the stream."""
        if not self._watermark_present:
            raise GroupStateError(
                "get_current_watermark_ms needs .with_watermark(column, delay) before "
                "apply_in_pandas_with_state (a batch DataFrame has no watermark)"
            )
        return self._watermark_ms

    def get_current_processing_time_ms(self) -> int:
        """This batch's processing time (ms since the epoch; the same for every key)."""
        return self._processing_ms

    # PySpark's spellings
    getOption = get_option
    hasTimedOut = has_timed_out
    setTimeoutDuration = set_timeout_duration
    setTimeoutTimestamp = set_timeout_timestamp
    getCurrentWatermarkMs = get_current_watermark_ms
    getCurrentProcessingTimeMs = get_current_processing_time_ms

    def __repr__(self) -> str:
        return f"GroupState({self._value if self._value is not None else '<undefined>'})"


def _epoch_ms(timestamp: SupportsFloat | datetime) -> int:
    if isinstance(timestamp, datetime):
        if timestamp.tzinfo is None:
            raise GroupStateError(
                "set_timeout_timestamp needs a timezone-aware datetime (or epoch ms)"
            )
        return int(timestamp.timestamp() * 1000)
    return _whole_ms(timestamp, "timeout timestamp must be epoch ms or a datetime")


def _whole_ms(value: object, what: str) -> int:
    """An integer or float number of ms (numpy scalars included) as an int."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise GroupStateError(f"{what}, got {value!r}")
    return int(float(value))


def _plain(value: Any) -> Any:
    """A numpy or pandas scalar as the Python value Arrow takes (as PySpark converts)."""
    item = getattr(value, "item", None)
    if callable(item) and type(value).__module__ == "numpy":
        return item()
    to_py = getattr(value, "to_pydatetime", None)
    if callable(to_py):
        return to_py()
    to_td = getattr(value, "to_pytimedelta", None)
    if callable(to_td):
        return to_td()
    return value
