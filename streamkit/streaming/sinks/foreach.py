"""foreach_batch: hand each micro-batch to a user function."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, ClassVar

from streamkit.streaming.contracts import Guarantee

if TYPE_CHECKING:
    import pyarrow as pa

    from streamkit.frame import DataFrame

BatchFunction = Callable[["DataFrame", int], "Awaitable[None] | None"]
"""``fn(df, batch_id)``: a plain function or a coroutine function."""


class ForeachBatchSink:
    """Calls ``fn(df, batch_id)`` per batch; ``df`` is a DataFrame over the batch's rows.

    ``df.to_arrow()`` is the Arrow table the engine produced (no copy). A coroutine function
    is awaited on the engine's loop. A plain function runs in a worker thread
    (``run_in_thread=True``, the default) so that it cannot stall the loop's background work
    (lease renewal, fetches); if it returns an awaitable, that is awaited on the loop.
    The batch counts as written when ``fn`` returns; an exception fails the query and the
    batch is not committed.

    Delivery: at-least-once (a batch re-run after a restart is passed again with the same
    ``batch_id``); exactly-once iff ``fn`` is idempotent per ``batch_id`` (e.g. it replaces
    what that batch id wrote, or skips ids it has already written).
    """

    guarantee: ClassVar[Guarantee] = Guarantee.IF_FUNCTION_IDEMPOTENT
    """Delivery guarantee (the README sink table is tested against it)."""

    def __init__(self, fn: BatchFunction, *, run_in_thread: bool = True) -> None:
        self.fn = fn
        self.run_in_thread = run_in_thread
        self._is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - async __call__ of a callable object
        )

    def __repr__(self) -> str:
        return f"ForeachBatchSink({getattr(self.fn, '__qualname__', self.fn)!r})"

    async def add_batch(self, batch_id: int, table: pa.Table) -> None:
        """Call ``fn`` with the batch and wait for it (and for an awaitable it returns)."""
        from streamkit.io import from_arrow

        df = from_arrow(table)
        if self._is_async or not self.run_in_thread:
            result = self.fn(df, batch_id)
        else:
            result = await asyncio.to_thread(self.fn, df, batch_id)
        if inspect.isawaitable(result):
            await result

    async def close(self) -> None:
        """Nothing to release."""
