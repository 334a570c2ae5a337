"""Memory sink: the query's output kept in memory under a name, queryable at any time."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, Literal

import polars as pl
import pyarrow as pa

from streamkit.errors import ColumnNotFoundError, StreamkitError
from streamkit.streaming.contracts import Guarantee

if TYPE_CHECKING:
    from streamkit.frame import DataFrame

OutputMode = Literal["append", "update", "complete"]
OUTPUT_MODES: tuple[OutputMode, ...] = ("append", "update", "complete")

_ROW = "__streamkit_row__"


class MemorySinkError(StreamkitError):
    """A memory sink was used in a way its output mode cannot honour."""


class MemoryTableNotFoundError(StreamkitError, KeyError):
    """No memory sink of that name exists in this process."""


class MemorySink:
    """Keeps the output of a query in memory; ``table()`` returns it at any time.

    Creating a sink registers it under ``name`` (replacing an older sink of that name), so
    :func:`memory_table` finds the latest one, like Spark's memory sink queried by query name.

    How a batch changes the table depends on ``mode`` (the query's output mode):

    - ``append``: rows accumulate. Each batch id's rows are kept apart; adding a batch id
      again (any id) replaces that batch's rows.
    - ``complete``: each batch is the whole result and replaces the table. Adding the last
      batch id again replaces it; an older id raises :class:`MemorySinkError`.
    - ``update``: each batch holds the changed rows; they replace the rows with the same
      ``keys`` (vectorised anti-join in Polars, nulls equal) and new keys are added. If a
      batch repeats a key, its last row wins. The table as it was before the last batch is
      kept, so adding the last batch id again re-applies it to that table (a replacement,
      never a double apply); an older id raises :class:`MemorySinkError`. With no ``keys``
      (a query without aggregation) update behaves like append. ``keys`` are ignored in
      the other modes.

    Delivery: exactly-once together with the engine's checkpoint, which re-sends only the
    last, uncommitted batch id after a restart. The sink lives in this process only.
    Thread-safe: readers may call ``table()`` from any thread while batches arrive.
    """

    guarantee: ClassVar[Guarantee] = Guarantee.EXACTLY_ONCE
    """Delivery guarantee (the README sink table is tested against it)."""

    def __init__(
        self,
        name: str,
        mode: OutputMode = "append",
        keys: Sequence[str] = (),
        *,
        schema: pa.Schema | None = None,
    ) -> None:
        if not name:
            raise MemorySinkError("a memory sink needs a non-empty name (the query name)")
        if mode not in OUTPUT_MODES:
            raise MemorySinkError(f"unknown output mode {mode!r}; use one of {OUTPUT_MODES}")
        self.name = name
        self.mode: OutputMode = mode
        self.keys: tuple[str, ...] = tuple(keys)
        self._accumulates = mode == "append" or (mode == "update" and not self.keys)
        self._lock = threading.Lock()
        self._empty = schema.empty_table() if schema is not None else pa.table({})
        self._parts: dict[int, pa.Table] = {}  # append: rows per batch id
        self._current: pa.Table = self._empty  # update / complete: the result
        self._before_last: pa.Table = self._empty  # update: the result before the last batch
        self._cache: pa.Table | None = None
        self._last: int | None = None
        _register(self)

    def __repr__(self) -> str:
        return f"MemorySink({self.name!r}, mode={self.mode!r}, keys={self.keys!r})"

    @property
    def last_batch_id(self) -> int | None:
        """The highest batch id added so far (None before the first batch)."""
        return self._last

    async def add_batch(self, batch_id: int, table: pa.Table) -> None:
        """Apply ``table`` as the output of ``batch_id`` (see the class doc per mode), in a
        worker thread: an upsert into a large result must not stall the event loop."""
        await asyncio.to_thread(self.apply, batch_id, table)

    def apply(self, batch_id: int, table: pa.Table) -> None:
        """Synchronous :meth:`add_batch`."""
        with self._lock:
            if self._accumulates:
                self._parts[batch_id] = table
            else:
                self._check_replayable(batch_id)
                if self.mode == "complete":
                    self._current = table
                else:
                    if self._last is None or batch_id > self._last:
                        self._before_last = self._current
                    self._current = upsert(self._before_last, table, self.keys)
            self._last = batch_id if self._last is None else max(self._last, batch_id)
            self._cache = None

    def _check_replayable(self, batch_id: int) -> None:
        if self._last is not None and batch_id < self._last:
            raise MemorySinkError(
                f"memory sink {self.name!r} ({self.mode} mode) got batch {batch_id} after "
                f"batch {self._last}; only the last batch id can be re-added. Use a new sink "
                "(or name) for a query started from a new checkpoint"
            )

    def table(self) -> pa.Table:
        """The current result as an Arrow table (append: batches in batch id order)."""
        with self._lock:
            if self._cache is None:
                self._cache = self._build()
            return self._cache

    def _build(self) -> pa.Table:
        if not self._accumulates:
            return self._current
        parts = [self._parts[i] for i in sorted(self._parts)]
        if not parts:
            return self._empty
        return pa.concat_tables(parts, promote_options="permissive")

    def to_frame(self) -> DataFrame:
        """The current result as a streamkit DataFrame (no copy)."""
        from streamkit.io import from_arrow

        return from_arrow(self.table())

    async def close(self) -> None:
        """Nothing to flush; the table stays readable (and registered) after the query stops."""


def upsert(existing: pa.Table, changes: pa.Table, keys: Sequence[str]) -> pa.Table:
    """``existing`` without the rows whose ``keys`` occur in ``changes``, then ``changes``.

    Keys compare with nulls equal; if ``changes`` repeats a key its last row wins. Arrow
    types are kept (Polars only computes which rows survive).
    """
    for key in keys:
        if key not in changes.column_names:
            raise ColumnNotFoundError(key, changes.column_names)
    if changes.num_rows == 0:
        return existing
    changes = _last_per_key(changes, keys)
    if existing.num_rows == 0:
        return changes
    old = _frame(existing.select(list(keys))).with_row_index(_ROW)
    new = _frame(changes.select(list(keys)))
    survivors = old.join(new, on=list(keys), how="anti", nulls_equal=True)[_ROW]
    if len(survivors) < existing.num_rows:
        existing = existing.take(survivors.to_arrow())
    return pa.concat_tables([existing, changes], promote_options="permissive")


def _last_per_key(table: pa.Table, keys: Sequence[str]) -> pa.Table:
    frame = _frame(table.select(list(keys))).with_row_index(_ROW)
    last = frame.unique(subset=list(keys), keep="last", maintain_order=True)
    if last.height == table.num_rows:
        return table
    return table.take(last[_ROW].to_arrow())


def _frame(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table, rechunk=False)
    assert isinstance(frame, pl.DataFrame)
    return frame


_registry: dict[str, MemorySink] = {}
_registry_lock = threading.Lock()


def _register(sink: MemorySink) -> None:
    with _registry_lock:
        _registry[sink.name] = sink


def memory_sink(name: str) -> MemorySink:
    """The latest memory sink created with ``name`` in this process."""
    with _registry_lock:
        sink = _registry.get(name)
        known = sorted(_registry)
    if sink is None:
        raise MemoryTableNotFoundError(
            f"no memory sink named {name!r}; known: {', '.join(map(repr, known)) or '(none)'}. "
            "Start a query with a memory sink of that name first"
        )
    return sink


def memory_table(name: str) -> pa.Table:
    """The current result of the memory sink named ``name`` (see :meth:`MemorySink.table`)."""
    return memory_sink(name).table()


def drop_memory_table(name: str) -> None:
    """Forget the memory sink named ``name`` (its table is freed once unreferenced)."""
    with _registry_lock:
        _registry.pop(name, None)
