"""The fleet page of the UI (``/fleet``, polling ``/api/fleet``) and a fleet worker's own
report (``/api/worker``): a connector that runs fleet workers registers both with
:func:`set_fleet` (the Kinesis connector: every worker of the lease tables, each one's
figures fetched from its own endpoint).

Both are awaited on the UI's loop; the worker's report may be a coroutine built on the
worker's own loop (:func:`on_loop`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

Json = dict[str, Any]
T = TypeVar("T")

_fleet: list[Callable[[], Awaitable[Json]]] = []
_worker: list[Callable[[], Awaitable[Json]]] = []


def set_fleet(fleet: Callable[[], Awaitable[Json]] | None,
              worker: Callable[[], Awaitable[Json]] | None = None) -> None:  # fmt: skip
    """Serve ``fleet()`` at ``/api/fleet`` and ``worker()`` at ``/api/worker`` (None: stop)."""
    _fleet[:] = [fleet] if fleet is not None else []
    _worker[:] = [worker] if worker is not None else []


def fleet_json() -> Callable[[], Awaitable[Json]] | None:
    """The registered fleet view, if any."""
    return _fleet[0] if _fleet else None


def worker_json() -> Callable[[], Awaitable[Json]] | None:
    """The registered worker report, if any."""
    return _worker[0] if _worker else None


def on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[[], T]) -> Callable[[], Awaitable[T]]:
    """``fn`` run on ``loop`` (the worker's), awaitable from another loop (the UI's)."""

    async def call() -> T:
        async def run() -> T:
            return fn()

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), loop))

    return call


__all__ = ["fleet_json", "on_loop", "set_fleet", "worker_json"]
