"""Periodic background steps (take, renew, shard sync) that stop cleanly between steps.

A step is never cancelled half-way: a lease write whose answer is thrown away would leave
the table and this worker's view of it disagreeing (a take nobody knows about, a renewal
whose new counter is unknown). :meth:`PeriodicStep.stop` therefore waits for the step in
progress, then ends the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class PeriodicStep:
    """Runs ``step`` every ``interval`` seconds until stopped.

    Errors for which ``is_transient(error)`` is true are logged, counted and retried on the
    next period; any other error ends the loop and is passed to ``on_error`` (never lost).
    :meth:`wake` runs the next step at once (e.g. a shard sync after SHARD_END). With
    ``fixed_rate`` (renewals, as KCL) steps are due every ``interval`` from the start, so a
    slow step does not push the next one back (one that overran its slot runs at once);
    otherwise the next step runs ``interval`` after the previous one ended.
    """

    def __init__(
        self,
        name: str,
        interval: float,
        step: Callable[[], Awaitable[object]],
        *,
        on_error: Callable[[BaseException], None],
        is_transient: Callable[[BaseException], bool],
        run_first_at_once: bool = True,
        fixed_rate: bool = False,
    ) -> None:
        self.name = name
        self.interval = interval
        self.transient_errors = 0
        """Steps that failed transiently (and were retried)."""
        self._step = step
        self._on_error = on_error
        self._is_transient = is_transient
        self._first_at_once = run_first_at_once
        self._fixed_rate = fixed_rate
        self._due = 0.0
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the loop (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=self.name)

    def wake(self) -> None:
        """Run the next step now rather than at the end of the period."""
        self._wake.set()

    async def stop(self) -> None:
        """Finish the step in progress (if any), then end the loop."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        self._due = asyncio.get_running_loop().time()
        if not self._first_at_once:
            await self._pause()
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                await self._step()
            except Exception as error:
                if not self._is_transient(error):
                    log.error("%s failed: %r", self.name, error)
                    self._on_error(error)
                    return
                self.transient_errors += 1
                log.warning("%s failed transiently, retrying next period: %s", self.name, error)
            await self._pause()

    async def _pause(self) -> None:
        """Sleep until the next step is due; return early on wake() or stop()."""
        now = asyncio.get_running_loop().time()
        if self._fixed_rate:
            self._due = max(self._due + self.interval, now)
            delay = self._due - now
        else:
            delay = self.interval
        stop = asyncio.ensure_future(self._stopping.wait())
        wake = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait([stop, wake], timeout=delay, return_when="FIRST_COMPLETED")
        finally:
            stop.cancel()
            wake.cancel()
