"""What the web UI remembers about each query: a listener that keeps, per query, the
started/terminated state, running totals and a bounded history of chart points.

Cost on the query: none on its loop; on the listener thread one small tuple per batch
(no table is read there). Everything else is computed when a page asks.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from streamkit.streaming.listeners import (
    QueryProgressEvent,
    QueryStartedEvent,
    QueryTerminatedEvent,
    StreamingQueryListener,
    streams,
)

if TYPE_CHECKING:
    from streamkit.streaming.progress import QueryProgress
    from streamkit.streaming.view import QueryView

HISTORY = 600
"""Chart points kept per query (one per batch)."""
ENDED_KEPT = 50
"""Ended queries still listed (the oldest are forgotten first)."""


@dataclass(frozen=True)
class Point:
    """One batch, as the charts draw it."""

    progress: QueryProgress
    newest_event: datetime | None


@dataclass
class QueryRecord:
    """One query as the UI knows it."""

    id: str
    name: str
    started: datetime
    view: QueryView | None
    ended: bool = False
    error: str | None = None
    points: deque[Point] = field(default_factory=lambda: deque(maxlen=HISTORY))
    batches: int = 0
    input_rows: int = 0
    late_rows: int = 0
    dead_letters: int = 0


class UiListener(StreamingQueryListener):
    """Keeps a :class:`QueryRecord` per query (thread-safe reads via :meth:`records`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, QueryRecord] = {}
        for view in streams.active:  # queries started before the UI: their kept batches
            record = QueryRecord(view.id, view.name, _first_time(view), view)
            for p in view.recent_progress:
                record.points.append(Point(p, None))
                record.batches += 1
                record.input_rows += p.num_input_rows
                record.late_rows += p.late_rows
                record.dead_letters += p.dead_letters
            self._records[view.id] = record

    def on_query_started(self, event: QueryStartedEvent) -> None:
        """Remember the query (its handle, for the side tables and checkpoint)."""
        view = streams.get(event.id)
        with self._lock:
            self._records[event.id] = QueryRecord(event.id, event.name, event.timestamp, view)

    def on_query_progress(self, event: QueryProgressEvent) -> None:
        """Add the batch to the query's history and totals."""
        p = event.progress
        with self._lock:
            record = self._records.get(event.id)
            if record is None:
                record = QueryRecord(event.id, event.name, p.timestamp, streams.get(event.id))
                self._records[event.id] = record
            kept = record.points
            if any(kept[-i].progress is p for i in range(1, min(3, len(kept)) + 1)):
                return  # already taken from recent_progress when the UI started
            record.points.append(Point(p, event.newest_event))
            record.batches += 1
            record.input_rows += p.num_input_rows
            record.late_rows += p.late_rows
            record.dead_letters += p.dead_letters

    def on_query_terminated(self, event: QueryTerminatedEvent) -> None:
        """Mark the query ended (with its error, if any); forget the oldest ended ones."""
        with self._lock:
            record = self._records.get(event.id)
            if record is None:
                return
            record.ended, record.error = True, event.exception
            ended = [k for k, r in self._records.items() if r.ended]
            for key in ended[: max(0, len(ended) - ENDED_KEPT)]:
                del self._records[key]

    def records(self) -> list[QueryRecord]:
        """Every known query, in start order."""
        with self._lock:
            return list(self._records.values())

    def get(self, key: str) -> QueryRecord | None:
        """The query with this id, else the latest one with this name."""
        with self._lock:
            if key in self._records:
                return self._records[key]
            named = [r for r in self._records.values() if r.name == key]
            return named[-1] if named else None

    def points(self, record: QueryRecord) -> list[Point]:
        """A copy of the record's history, taken under the lock."""
        with self._lock:
            return list(record.points)


def _first_time(view: QueryView) -> datetime:
    from datetime import UTC

    records = view.recent_progress
    return records[0].timestamp if records else datetime.now(UTC)
