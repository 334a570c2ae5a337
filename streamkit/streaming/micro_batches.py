"""``async for batch in df.write_stream...micro_batches()``: each batch's output handed
to the caller's coroutine, committed when it asks for the next one."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from streamkit.streaming.contracts import Guarantee

if TYPE_CHECKING:
    from types import TracebackType

    import pyarrow as pa

    from streamkit.streaming.async_query import AsyncStreamingQuery


@dataclass(frozen=True)
class MicroBatch:
    """The output of one micro-batch."""

    batch_id: int
    """The batch id: a batch delivered again after a restart has the same id."""
    table: pa.Table
    """The rows the query emitted for this batch (per its output mode)."""


class HandOffSink:
    """A sink that offers each batch to :class:`MicroBatches` and returns only once the
    consumer has asked for the next batch; :meth:`abandon` makes the batch in hand (and
    any later one) cancel the loop instead, so it is never committed."""

    guarantee: ClassVar[Guarantee] = Guarantee.IF_FUNCTION_IDEMPOTENT
    """As good as the consumer's handling of a batch id it may see twice."""

    def __init__(self) -> None:
        self.offered: asyncio.Queue[MicroBatch] = asyncio.Queue(maxsize=1)
        self._taken: asyncio.Future[None] | None = None
        self._abandoned = False

    async def add_batch(self, batch_id: int, table: pa.Table) -> None:
        """Offer the batch; return when the consumer asks for the next one."""
        if self._abandoned:
            raise asyncio.CancelledError
        self._taken = asyncio.get_running_loop().create_future()
        await self.offered.put(MicroBatch(batch_id, table))
        await self._taken

    def release(self) -> None:
        """The consumer is done with the batch in hand: let the loop commit it."""
        if self._taken is not None and not self._taken.done():
            self._taken.set_result(None)

    def abandon(self) -> None:
        """The consumer stopped without asking for the next batch: do not commit it."""
        self._abandoned = True
        if self._taken is not None and not self._taken.done():
            self._taken.set_exception(asyncio.CancelledError())

    async def close(self) -> None:
        """Nothing to release."""


class MicroBatches:
    """Async iterator over a query's micro-batch outputs, run on the caller's loop.

    Delivery: batch N is committed (``commits/N``, then the source) only when the consumer
    asks for batch N+1 (``__anext__``). Leaving the loop early (``break`` inside
    ``async with``, :meth:`aclose`, an exception or a cancellation) stops the query without
    committing the batch in hand, so a restart on the same checkpoint delivers it again
    with the same ``batch_id`` (with the same rows when the source can re-read exactly,
    e.g. Kinesis, Kafka, files, memory). Exactly-once for a consumer that is idempotent by
    ``batch_id``, at-least-once otherwise. Use ``async with`` (or call :meth:`aclose`)
    when you may break out of the loop: that releases the owner leases at once.
    """

    def __init__(self, query: AsyncStreamingQuery, sink: HandOffSink) -> None:
        self.query = query
        """The running query: progress, side tables, exception."""
        self._sink = sink
        self._finished = False

    def __aiter__(self) -> MicroBatches:
        return self

    async def __anext__(self) -> MicroBatch:
        """Commit the batch in hand, then wait for the next one; ends with the query."""
        if self._finished:
            raise StopAsyncIteration
        await self.query.start()
        self._sink.release()
        offered = asyncio.ensure_future(self._sink.offered.get())
        try:
            await asyncio.wait({offered, self.query.task}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            offered.cancel()
            await self.aclose()
            raise
        if offered.done():
            return offered.result()
        offered.cancel()
        self._finished = True
        self.query.raise_if_failed()
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Stop the query without committing the batch in hand (see class doc)."""
        self._finished = True
        if self.query.is_active:
            self._sink.abandon()
            await self.query.stop()

    async def __aenter__(self) -> MicroBatches:
        await self.query.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.aclose()
        if error is None:
            self.query.raise_if_failed()
