"""Batch tables re-read on a schedule: ``sk.read.parquet(path, reload_every="5 minutes")``.

A :class:`ReloadingSource` holds one opened snapshot of a table (its files listed and,
for NDJSON, read) and re-opens it when :meth:`~ReloadingSource.refresh` is called at
least ``reload_every`` after the last load, by the clock it was given. Within one
snapshot every read sees the same files, so a stream-static join pins one snapshot per
micro-batch (:mod:`streamkit.streaming.static_sides`) and a new file shows up in the
first micro-batch that starts ``reload_every`` or more after the previous load.

A reload that fails to reach the table (S3 down, directory briefly missing) keeps the
previous snapshot, logs a warning and is tried again at the next refresh; a reload whose
schema differs from the first raises :class:`~streamkit.errors.SchemaError`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Protocol, runtime_checkable

import polars as pl

from streamkit.errors import PlanError, SchemaError, StreamkitError
from streamkit.plan import Plan, Scan, Source

log = logging.getLogger(__name__)

Clock = Callable[[], float]
"""Seconds from an arbitrary origin (``time.monotonic`` by default; tests pass their own)."""


@runtime_checkable
class Reloadable(Protocol):
    """A source whose snapshot can change: :meth:`refresh` reloads it if due and returns
    the snapshot's version (a counter that changes on every reload)."""

    def refresh(self) -> int:
        """Reload if due; the version of the snapshot now held."""
        ...


class ReloadingSource:
    """A batch :class:`~streamkit.plan.Source` re-opened by ``open_`` at most every
    ``every_s`` seconds of ``clock`` (see the module docstring)."""

    def __init__(self, open_: Callable[[], Source], every_s: float, clock: Clock | None = None):
        if not every_s > 0:
            raise PlanError(f"reload_every must be a positive duration, got {every_s} s")
        self._open, self._every = open_, every_s
        self._clock = clock or time.monotonic
        self._current = open_()
        self.schema: pl.Schema = self._current.schema
        self._loaded_at = self._clock()
        self.version = 0
        """Number of reloads so far (0: the snapshot opened at construction)."""

    def refresh(self) -> int:
        """Re-open the table when ``reload_every`` has passed since the last load."""
        now = self._clock()
        if now - self._loaded_at < self._every:
            return self.version
        try:
            fresh = self._open()
        except (OSError, StreamkitError) as exc:
            log.warning("reloading %s failed, keeping the previous snapshot: %s",
                        self.describe(), exc)  # fmt: skip
            return self.version
        if fresh.schema != self.schema:
            raise SchemaError(
                f"{self.describe()} changed its schema on reload: was {dict(self.schema)}, "
                f"now {dict(fresh.schema)}; a query's schema is fixed when it is built, so "
                "restart it (or rewrite the table with the first schema)"
            )
        self._current, self._loaded_at = fresh, now
        self.version += 1
        return self.version

    def batches(self, columns: list[str], dictionary: list[str]) -> Iterator[pl.DataFrame]:
        """The current snapshot's rows (reloaded first if due)."""
        self.refresh()
        yield from self._current.batches(columns, dictionary)

    def describe(self) -> str:
        return f"{self._current.describe()} (reloaded every {self._every:g} s)"


def reloadable_sources(plan: Plan) -> list[Reloadable]:
    """The reloadable sources read by ``plan``, in plan order."""
    if isinstance(plan, Scan):
        return [plan.source] if isinstance(plan.source, Reloadable) else []
    return [s for child in plan.children for s in reloadable_sources(child)]
