"""The async query handle: the micro-batch loop as a task on the caller's event loop.

The loop is the same :class:`~streamkit.streaming.runner.QueryRunner` the synchronous
handle runs on its own thread; here it shares the caller's loop, and its CPU-heavy steps
(decode, execute, checkpoint writes, synchronous sink functions) run in worker threads, so
the caller's other tasks keep running while a batch executes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Generator
from typing import TYPE_CHECKING, Any

from streamkit.streaming.runner import StreamingQueryError
from streamkit.streaming.view import QueryView

if TYPE_CHECKING:
    from types import TracebackType

    from streamkit.streaming.progress import QueryProgress
    from streamkit.streaming.runner import QueryRunner


class AsyncStreamingQuery(QueryView):
    """Handle of a query running as a task on the caller's event loop.

    Start it with ``q = await writer.start_async()`` or ``async with writer.start_async()
    as q:`` (leaving the block stops it). Delivery and checkpoint guarantees are those of
    :class:`~streamkit.streaming.query.StreamingQuery`.

    Errors: the error that stopped the query is stored and raised, as
    :class:`~streamkit.streaming.runner.StreamingQueryError`, by the next
    :meth:`await_termination`, :meth:`process_all_available` or :meth:`progress` step, and
    by leaving the ``async with`` block; :meth:`exception` returns it; :meth:`stop` never
    raises it. Cancellation: cancelling a task awaiting :meth:`await_termination` or
    :meth:`process_all_available` (or the ``async with`` block) stops the query as
    :meth:`stop` does before the cancellation propagates: the batch in flight commits, the
    sink and source are closed, the owner leases released.
    """

    def __init__(self, runner: QueryRunner, *, force: bool = False) -> None:
        self._runner = runner
        runner.view = self
        self._force = force
        self._task: asyncio.Task[None] | None = None

    # -- starting ------------------------------------------------------------------------
    async def start(self) -> AsyncStreamingQuery:
        """Take the owner leases (in a worker thread; see
        :meth:`~streamkit.streaming.query.StreamingQuery.start`), then run the loop as a
        task on the running loop. Starting a started handle does nothing."""
        if self._task is None:
            await asyncio.to_thread(self._runner.acquire, self._force)
            self._task = asyncio.create_task(self._main(), name=self.name)
            await asyncio.sleep(0)  # let the loop begin, so that the runner knows its loop
        return self

    def __await__(self) -> Generator[Any, None, AsyncStreamingQuery]:
        return self.start().__await__()

    async def __aenter__(self) -> AsyncStreamingQuery:
        return await self.start()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        """Stop the query; re-raise its error when the block itself ended without one."""
        await self.stop()
        if error is None:
            self.raise_if_failed()

    async def _main(self) -> None:
        try:
            await self._runner.run()
        except (Exception, asyncio.CancelledError):
            pass  # stored by the runner and raised on the caller's next await
        finally:
            await asyncio.to_thread(self._runner.finish)

    # -- handle --------------------------------------------------------------------------
    @property
    def task(self) -> asyncio.Task[None]:
        """The task running the loop; done once the query has ended and released its
        leases (it never raises: see :meth:`exception`)."""
        if self._task is None:
            raise StreamingQueryError(f"query {self.name} was not started: await it first")
        return self._task

    @property
    def is_active(self) -> bool:
        """True while the loop runs."""
        return self._task is not None and not self._task.done()

    def exception(self) -> BaseException | None:
        """The error that stopped the query, if any."""
        return self._runner.error

    async def stop(self, timeout: float | None = 30.0) -> None:
        """Stop after the batch in flight commits; waits up to ``timeout`` seconds."""
        self._runner.request_stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.task), timeout)

    async def await_termination(self, timeout: float | None = None) -> bool:
        """Wait for the query to end; re-raises its error. False if still running after
        ``timeout`` seconds. Cancelling the waiting task stops the query (see class doc)."""
        async with self._stops_if_cancelled():
            try:
                await asyncio.wait_for(asyncio.shield(self.task), timeout)
            except TimeoutError:
                return False
        self.raise_if_failed()
        return True

    async def process_all_available(self, timeout: float = 60.0) -> None:
        """Wait until everything the source holds now is processed and committed (see
        :meth:`~streamkit.streaming.query.StreamingQuery.process_all_available`)."""
        runner = self._runner
        async with self._stops_if_cancelled():
            self._check_running()
            caught_up = await runner.feed.catch_up()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while not runner.caught_up(caught_up):
                self._check_running()
                left = deadline - loop.time()
                if left <= 0:
                    raise TimeoutError(f"query {self.name} did not catch up in {timeout} s")
                await runner.changed(min(left, 1.0))

    async def progress(self) -> AsyncIterator[QueryProgress]:
        """Each batch's progress as it commits, from the oldest record kept (up to 100)
        on; ends when the query ends, raising its error if it failed."""
        runner, seen = self._runner, -1
        while True:
            ended = runner.done.is_set()
            for record in list(runner.progress.records):
                if record.batch_id > seen:  # an idle record repeats the last batch's id
                    seen = record.batch_id
                    yield record
            if ended:
                self.raise_if_failed()
                return
            await runner.changed(1.0)

    def _check_running(self) -> None:
        self.raise_if_failed()
        if self._runner.done.is_set() or self.task.done():
            raise StreamingQueryError(f"query {self.name} has stopped")

    @contextlib.asynccontextmanager
    async def _stops_if_cancelled(self) -> AsyncIterator[None]:
        try:
            yield
        except asyncio.CancelledError:
            await self.stop()
            raise

    def __repr__(self) -> str:
        state = "active" if self.is_active else "stopped"
        return f"<AsyncStreamingQuery {self.name} {state}, next batch {self._runner.next_id}>"
