"""Spark runs whose Python worker did not connect back in time, run again.

PySpark's pandas operators (``applyInPandasWithState``, ``transformWithStateInPandas``)
start Python workers that must connect back to the JVM within a fixed time. On a loaded
2-core machine one sometimes does not, and the query fails before its batch commits:
an infrastructure failure, not a difference between the engines. Only that failure is
retried (a fresh run from nothing, or the same step from the same checkpoint); any other
error or result is returned or raised as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

LOST = "failed to connect back"
ATTEMPTS = 3


def worker_lost(error: BaseException | str | None) -> bool:
    """Whether ``error`` is Spark's "Python worker failed to connect back"."""
    return error is not None and LOST in str(error)


def retried(
    first: Callable[[], T],
    again: Callable[[], T] | None = None,
    *,
    lost: Callable[[T], bool] = lambda _: False,
    attempts: int = ATTEMPTS,
) -> T:
    """``first()``, then ``again()`` (default: ``first``) while the attempt raised the
    lost-worker error or ``lost`` says its result reports it; the last attempt's outcome
    stands."""
    for attempt in range(attempts):
        call = first if attempt == 0 or again is None else again
        try:
            out = call()
        except Exception as exc:
            if not worker_lost(exc) or attempt == attempts - 1:
                raise
            continue
        if not lost(out) or attempt == attempts - 1:
            return out
    raise AssertionError("unreachable")
