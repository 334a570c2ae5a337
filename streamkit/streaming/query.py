"""The synchronous query handle: the micro-batch loop on a private thread and event loop.

The loop itself is :class:`~streamkit.streaming.runner.QueryRunner` (the same core the
async handle runs on the caller's loop); this handle's methods are thread-safe and
blocking, like PySpark's.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import TYPE_CHECKING, Unpack

from streamkit.streaming.runner import QueryRunner, StreamingQueryError
from streamkit.streaming.view import QueryView

if TYPE_CHECKING:
    from streamkit.streaming.runner import QueryParts

__all__ = ["StreamingQuery", "StreamingQueryError"]


class StreamingQuery(QueryView):
    """Handle of a started query: ``stop()``, ``await_termination()``,
    ``process_all_available()``, ``last_progress``, ``recent_progress``.

    Delivery: batch N reaches the sink before ``commits/N`` is written and before the source
    is committed, so after a crash batch N runs again with the same id (exactly-once with an
    idempotent sink, at-least-once otherwise), and with exactly its first run's records
    when the source is a :class:`~streamkit.streaming.contracts.BoundedSource`. A sink
    that sets ``requires_exact_replay = True`` (it skips batch ids it already committed)
    is refused at start behind a source that cannot re-read exactly. An acknowledging
    source is acknowledged only after ``commits/N``: after a crash it delivers the batch's
    messages again, re-run under the same id when ``commits/N`` was not written, else as a
    new batch (at-least-once).
    ``available_now`` needs a replayable source: with an acknowledging one, the constructor
    raises :class:`~streamkit.streaming.contracts.AvailableNowUnsupportedError`.
    """

    def __init__(self, **parts: Unpack[QueryParts]) -> None:
        self._runner = QueryRunner(**parts)
        self._runner.view = self
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)

    def start(self, *, force: bool = False) -> StreamingQuery:
        """Take the owner leases, then start the micro-batch loop in the background.

        Before anything is read: the checkpoint folder's owner lease, then the source's own
        (:mod:`streamkit.streaming.owner`; e.g. one per Kinesis app name and worker id).
        A live copy holding one raises
        :class:`~streamkit.streaming.owner.QueryAlreadyRunningError` naming it; a dead
        one (silent for its lease duration, or gone from this machine) is taken over;
        ``force=True`` takes over at once (only when the other copy is dead). The leases
        are renewed every ``lease_seconds / 3`` in their own thread and released when the
        loop ends; a copy forced out stops with
        :class:`~streamkit.streaming.owner.OwnerLostError` at its next batch."""
        self._runner.acquire(force)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop after the batch in flight commits; waits up to ``timeout`` seconds."""
        self._runner.request_stop()
        self._thread.join(timeout)

    def await_termination(self, timeout: float | None = None) -> bool:
        """Wait for the query to end; re-raises its error. False if still running."""
        finished = self._runner.done.wait(timeout)
        if finished:
            self.raise_if_failed()
        return finished

    @property
    def is_active(self) -> bool:
        """True while the loop runs."""
        return self._thread.is_alive()

    @property
    def exception(self) -> BaseException | None:
        """The error that stopped the query, if any."""
        return self._runner.error

    def process_all_available(self, timeout: float = 60.0) -> None:
        """Block until everything the source holds now is processed and committed: a
        replayable source's ``end_offsets`` of now are reached; an acknowledging source came
        back empty after this call and every batch it gave is acknowledged."""
        runner = self._runner
        loop = self._wait_loop(timeout)
        self.raise_if_failed()
        if runner.done.is_set():
            raise StreamingQueryError(f"query {self.name} has stopped")
        try:
            asked = asyncio.run_coroutine_threadsafe(runner.feed.catch_up(), loop)
        except RuntimeError as exc:  # the loop closed meanwhile: the query ended
            self.raise_if_failed()
            raise StreamingQueryError(f"query {self.name} has stopped") from exc
        caught_up = asked.result(timeout)
        deadline = time.monotonic() + timeout
        with runner.cond:
            while not runner.caught_up(caught_up):
                self.raise_if_failed()
                if runner.done.is_set():
                    raise StreamingQueryError(f"query {self.name} stopped before catching up")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"query {self.name} did not catch up in {timeout} s")
                runner.cond.wait(min(left, 0.1))

    def _wait_loop(self, timeout: float) -> asyncio.AbstractEventLoop:
        deadline = time.monotonic() + timeout
        while self._runner.loop is None:
            self.raise_if_failed()
            if time.monotonic() > deadline:
                raise TimeoutError(f"query {self.name} did not start in {timeout} s")
            time.sleep(0.01)
        return self._runner.loop

    def _main(self) -> None:
        with contextlib.suppress(BaseException):  # stored by the runner, re-raised to callers
            asyncio.run(self._runner.run())
        self._runner.finish()

    def __repr__(self) -> str:
        state = "active" if self.is_active else "stopped"
        return f"<StreamingQuery {self.name} {state}, next batch {self._runner.next_id}>"
