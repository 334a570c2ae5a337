"""Wall time per call site of the streaming engine, measured in-process (``--profile``).

Wraps named engine functions with timers before the query is built, so the figures are
inclusive wall milliseconds per micro-batch of each function (a function nested in another
is counted in both). py-spy or cProfile would miss the time spent in Arrow's and Polars'
worker threads, or sample only one Python thread; a timer around the call does not.
The wrappers cost ~1 µs per call, negligible at a few hundred calls per batch.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import threading
import time
from collections.abc import Callable
from typing import Any

SITES = (
    "streamkit.streaming.sources.files:FileStreamSource.next_batch",
    "streamkit.streaming.sources.files:FileStreamSource._list",
    "streamkit.streaming.sources.files:FileStreamSource._read_bytes",
    "streamkit.streaming.sources.files:FileStreamSource._decode_one",
    "streamkit.streaming.sources._readahead:ReadAhead.take",
    "streamkit.streaming.sources.file_position:SeenFiles.encode",
    "streamkit.streaming.decode:JsonDecoder.decode_lines",
    "streamkit.streaming._lines:scan_lines",
    "streamkit.streaming._json_schema:TypedParser.parse_document",
    "streamkit.streaming.decode:JsonDecoder._check_required",
    "streamkit.streaming.runner:QueryRunner._process",
    "streamkit.streaming.runner:QueryRunner._execute",
    "streamkit.streaming.table:UnboundedTable.append",
    "streamkit.streaming.incremental:IncrementalQuery.run",
    "streamkit.streaming.incremental:IncrementalQuery._split_late",
    "streamkit.streaming.incremental:IncrementalQuery._advance_max",
    "streamkit.streaming.incremental:IncrementalQuery._aggregate",
    "streamkit.streaming.incremental:compile_plan",
    "streamkit.streaming.agg_steps:aggregate_rows",
    "streamkit.aggregate:partial",
    "streamkit.aggregate:merge",
    "streamkit.streaming.incremental:IncrementalQuery._emit",
    "streamkit.aggregate:finalize",
    "streamkit.streaming.sinks.memory:MemorySink.apply",
    "streamkit.streaming.sinks.foreach:ForeachBatchSink.add_batch",
    "streamkit.streaming.checkpoint:CheckpointLog.write_offsets",
    "streamkit.streaming.checkpoint:CheckpointLog.write_state",
    "streamkit.streaming.checkpoint:CheckpointLog.write_commit",
    "streamkit.streaming.side_tables:SideTables.keep",
    "streamkit.streaming.runner:QueryRunner._record",
    "polars:from_arrow",
    "polars:DataFrame.to_arrow",
)


class Profile:
    """Accumulated wall seconds and calls per site (thread-safe)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, site: str, seconds: float) -> None:
        with self._lock:
            self.seconds[site] = self.seconds.get(site, 0.0) + seconds
            self.calls[site] = self.calls.get(site, 0) + 1

    def per_batch_ms(self, batches: int) -> dict[str, tuple[float, float]]:
        """Site -> (ms per batch, calls per batch), in ``SITES`` order."""
        order = {s.split(":")[1]: i for i, s in enumerate(SITES)}
        return {
            site: (self.seconds[site] * 1000 / batches, self.calls[site] / batches)
            for site in sorted(self.seconds, key=lambda s: order.get(s, 99))
        }


def _timed(profile: Profile, site: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                profile.add(site, time.perf_counter() - t0)

        return run_async

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            profile.add(site, time.perf_counter() - t0)

    return run


def install(sites: tuple[str, ...] = SITES) -> Profile:
    """Wrap every site (``module:attr`` or ``module:Class.attr``) with a timer."""
    profile = Profile()
    for spec in sites:
        module_name, path = spec.split(":")
        owner: Any = importlib.import_module(module_name)
        *parents, name = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent)
        setattr(owner, name, _timed(profile, path, getattr(owner, name)))
    return profile
