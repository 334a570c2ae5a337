"""Files decoded ahead, several at once, handed over in order (private to the file source).

Each file is one job on a worker thread with a decoder of its own (a JSON decoder learns
per batch, so two threads never share one). A job's decoder goes back to the pool only
when its thread has finished, even if the job was cancelled meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from streamkit.streaming.decode import Decoded
from streamkit.streaming.sources.file_position import ListedFile

D = TypeVar("D")


@dataclass(frozen=True)
class Done:
    """A decoded file and where its time went."""

    file: ListedFile
    decoded: Decoded
    read_seconds: float
    decode_seconds: float


Work = Callable[[ListedFile, D], tuple[Decoded, float]]
"""Reads and decodes one file with the given decoder; returns the result and the seconds
spent decoding (the rest of its time is reading)."""


class ReadAhead(Generic[D]):
    """Jobs in arrival order; at most ``len(decoders)`` run at once.

    Guarantees: :meth:`take` returns files in the order they were :meth:`start`-ed; a file
    is never decoded twice; :meth:`close` drops every job not taken (their results are
    lost, nothing else: the caller re-plans those files).
    """

    def __init__(self, decoders: list[D], work: Work[D]) -> None:
        self._pool: asyncio.Queue[D] = asyncio.Queue()
        self.decoders = 0
        """Decoders in the pool (busy or free)."""
        for decoder in decoders:
            self.add(decoder)
        self._work = work
        self._jobs: deque[tuple[ListedFile, asyncio.Task[Done]]] = deque()
        self._running: set[asyncio.Future[tuple[Decoded, float]]] = set()

    def __len__(self) -> int:
        return len(self._jobs)

    def add(self, decoder: D) -> None:
        """One more decoder: one more job may run at once."""
        self._pool.put_nowait(decoder)
        self.decoders += 1

    @property
    def first(self) -> ListedFile | None:
        """The oldest file started and not taken."""
        return self._jobs[0][0] if self._jobs else None

    @property
    def names(self) -> set[str]:
        """Names of the files started and not taken yet."""
        return {f.name for f, _ in self._jobs}

    def start(self, file: ListedFile) -> None:
        """Queue ``file`` for decoding (it runs once a decoder is free)."""
        self._jobs.append((file, asyncio.create_task(self._run(file))))

    async def take(self) -> Done:
        """The oldest job's result (waits for it); raises what the job raised."""
        _, task = self._jobs[0]
        try:
            return await asyncio.shield(task)
        finally:
            if task.done():
                self._jobs.popleft()

    async def close(self) -> None:
        """Drop every job not taken yet; return once no worker thread uses a decoder."""
        for _, task in self._jobs:
            task.cancel()
        self._jobs.clear()
        if self._running:
            await asyncio.wait(self._running)

    async def _run(self, file: ListedFile) -> Done:
        decoder = await self._pool.get()
        started = time.perf_counter()
        future = asyncio.get_running_loop().run_in_executor(None, self._work, file, decoder)
        self._running.add(future)
        future.add_done_callback(lambda _: self._pool.put_nowait(decoder))
        future.add_done_callback(self._running.discard)
        decoded, decode_seconds = await asyncio.shield(future)  # the thread runs on anyway
        total = time.perf_counter() - started
        return Done(file, decoded, max(0.0, total - decode_seconds), decode_seconds)
