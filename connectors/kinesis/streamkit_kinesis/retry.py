"""Exponential backoff with full jitter, and which AWS errors are worth retrying.

Delays follow "full jitter": ``uniform(0, min(cap, base * 2**attempt))``. ``sleep``,
``rng`` and clocks are injectable so tests run without waiting and with known draws.

:func:`is_retryable` is the one outage rule: connection failures, HTTP 5xx, throttling and
transient server codes are retryable (a running query retries them for ever, see
:class:`RetryState`); missing resources, rejected credentials and invalid requests are not.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .errors import (
    CredentialsError,
    EndpointUnreachableError,
    ThrottledError,
    error_code,
    error_message,
    http_status,
    is_connection_error,
)

Sleep = Callable[[float], Awaitable[None]]
"""An awaitable sleep, ``asyncio.sleep`` by default."""
Rng = Callable[[], float]
"""A uniform random draw in ``[0, 1)``, ``random.random`` by default."""

THROTTLING_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "LimitExceededException",
        "KMSThrottlingException",
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
    }
)
"""Error codes that mean "slow down": retried with backoff, counted as throttles."""

TRANSIENT_CODES = frozenset(
    {"InternalFailure", "InternalServerError", "InternalError", "ServiceUnavailable"}
)
"""Server-side transient errors: retried with backoff (bounded), not counted as throttles."""

RETRYABLE_ENTRY_CODES = THROTTLING_CODES | TRANSIENT_CODES
"""Per-entry PutRecords error codes that are retried; any other code fails the record."""


def is_throttling(exc_or_code: BaseException | str | None) -> bool:
    """True for a throttling error (or error code)."""
    code = exc_or_code if isinstance(exc_or_code, str | None) else error_code(exc_or_code)
    return code in THROTTLING_CODES


def is_transient(exc_or_code: BaseException | str | None) -> bool:
    """True for a transient server error (or error code) worth retrying a few times."""
    code = exc_or_code if isinstance(exc_or_code, str | None) else error_code(exc_or_code)
    return code in TRANSIENT_CODES


def is_retryable(exc: BaseException) -> bool:
    """True when ``exc`` is an outage that passes by itself: an unreachable endpoint,
    a cut connection, HTTP 5xx, throttling or a transient server code (also the typed
    :class:`EndpointUnreachableError` / :class:`ThrottledError` raised after bounded
    retries). False for everything else (missing stream or shard, access denied,
    validation, bugs): retrying those cannot help."""
    if isinstance(exc, EndpointUnreachableError | ThrottledError):
        return True
    if isinstance(exc, CredentialsError) or error_code(exc) == "AccessDeniedException":
        return False
    if is_connection_error(exc) or is_throttling(exc) or is_transient(exc):
        return True
    status = http_status(exc)
    return status is not None and status >= 500


def describe_error(exc: BaseException) -> str:
    """A one-line description for status displays: ``Code: message`` or the exception."""
    code = error_code(exc)
    text = error_message(exc) if code else str(exc) or type(exc).__name__
    text = f"{code}: {text}" if code else f"{type(exc).__name__}: {text}"
    return text if len(text) <= 200 else text[:197] + "..."


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter.

    ``delay(attempt)`` for attempt 0, 1, 2, ... is uniform in
    ``[0, min(cap, base * 2**attempt))``; ``max_attempts`` bounds the number of tries
    (``None``: unbounded, for conditions that are expected to pass, like throttling).
    """

    base: float = 0.1
    """Upper bound of the first delay, in seconds."""
    cap: float = 5.0
    """Largest upper bound of any delay, in seconds."""
    max_attempts: int | None = 10
    """Tries in total, first included; ``None`` for unbounded."""

    def ceiling(self, attempt: int) -> float:
        """Upper bound of the delay before retry number ``attempt + 1``."""
        return min(self.cap, self.base * (1 << min(attempt, 62)))

    def delay(self, attempt: int, rng: Rng = random.random) -> float:
        """A jittered delay for ``attempt`` (0 = the wait after the first failure)."""
        return rng() * self.ceiling(attempt)

    def exhausted(self, attempts: int) -> bool:
        """True when ``attempts`` tries used up the budget."""
        return self.max_attempts is not None and attempts >= self.max_attempts


CONNECTION_BACKOFF = Backoff(base=0.2, cap=1.0, max_attempts=3)
"""Default for unreachable endpoints: three tries within about a second, then a clear error."""

OUTAGE_BACKOFF = Backoff(base=0.2, cap=5.0, max_attempts=None)
"""A running query's retries: for ever, at most 5 s apart, so an endpoint that comes
back is used again within about 5 s."""

READING = "reading"
"""Health state: the last call succeeded (or none failed yet)."""
BACKING_OFF = "backing off"
"""Health state: the last call failed with a retryable error; waiting to retry."""


@dataclass(frozen=True)
class Health:
    """A snapshot of one retried resource (a shard, a store): for progress and the CLI."""

    state: str = READING
    """:data:`READING` or :data:`BACKING_OFF`."""
    consecutive_errors: int = 0
    """Retryable failures since the last success."""
    last_error: str | None = None
    """The latest failure (kept after recovery, for the record), or None."""
    backing_off_since: float | None = None
    """Clock reading of the first failure of the current streak (None while reading)."""


class RetryState:
    """Consecutive-failure bookkeeping and the backoff schedule of one retried resource.

    :meth:`failed` records a failure and returns the delay before the next try: full
    jitter over ``min(cap, base * 2**(n-1))`` for the n-th consecutive failure;
    :meth:`succeeded` resets the streak, so the next failure waits at most ``base`` again.
    Not thread-safe; one per shard reader / store.
    """

    def __init__(
        self,
        backoff: Backoff = OUTAGE_BACKOFF,
        *,
        rng: Rng = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backoff = backoff
        self._rng, self._clock = rng, clock
        self._errors = 0
        self._last: str | None = None
        self._since: float | None = None

    @property
    def consecutive_errors(self) -> int:
        """Failures since the last success."""
        return self._errors

    def failed(self, exc: BaseException | str) -> float:
        """Record a failure; the jittered delay to wait before the next try."""
        if self._errors == 0:
            self._since = self._clock()
        self._errors += 1
        self._last = exc if isinstance(exc, str) else describe_error(exc)
        return self.backoff.delay(self._errors - 1, self._rng)

    def succeeded(self) -> None:
        """A call succeeded: the streak (and the delay schedule) starts over."""
        self._errors = 0
        self._since = None

    def health(self) -> Health:
        """The current state."""
        state = BACKING_OFF if self._errors else READING
        return Health(state, self._errors, self._last, self._since)


@dataclass
class Retrier:
    """Sleeps between attempts according to a :class:`Backoff`; injectable sleep and rng."""

    backoff: Backoff = Backoff()
    sleep: Sleep = asyncio.sleep
    rng: Rng = random.random

    async def wait(self, attempt: int) -> float:
        """Sleep the jittered delay for ``attempt`` and return it."""
        delay = self.backoff.delay(attempt, self.rng)
        await self.sleep(delay)
        return delay
