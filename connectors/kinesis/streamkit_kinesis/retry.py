"""Exponential backoff with full jitter, and which AWS errors are worth retrying.

Delays follow "full jitter": ``uniform(0, min(cap, base * 2**attempt))``. ``sleep`` and
``rng`` are injectable so tests run without waiting and with known random draws.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .errors import error_code

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
