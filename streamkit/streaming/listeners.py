"""Query listeners and the query manager, in the shape of Spark's ``StreamingQueryManager``.

``sk.streams.add_listener(listener)`` subscribes a :class:`StreamingQueryListener` to every
query of the process: started, progress (one per batch, the query's
:class:`~streamkit.streaming.progress.QueryProgress`), idle and terminated events.

Delivery: events are queued by the query's loop and handed to the listeners by one
dispatcher thread, so a slow listener never holds a batch up, and each query's events
arrive in the order they happened (started, then its progress and idle events, then
terminated). A listener that raises is logged and keeps receiving events; the query is
never affected. Events posted while no listener is registered are not kept.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from streamkit.streaming.progress import QueryProgress

if TYPE_CHECKING:
    from streamkit.streaming.view import QueryView

log = logging.getLogger(__name__)

IDLE_EVENT_INTERVAL = 10.0
"""Seconds between two idle events of one query (Spark's ``noDataProgressEventInterval``)."""


@dataclass(frozen=True)
class QueryStartedEvent:
    """A query started (posted before its first batch)."""

    id: str
    """The query's id (``StreamingQuery.id``)."""
    run_id: str
    """Unique to this run of the query."""
    name: str
    """The query's name."""
    timestamp: datetime
    """When it started (UTC)."""


@dataclass(frozen=True)
class QueryProgressEvent:
    """A batch committed."""

    id: str
    """The query's id."""
    run_id: str
    """The run's id."""
    name: str
    """The query's name."""
    progress: QueryProgress
    """The batch's progress record (per-phase durations, per-partition detail)."""
    newest_event: datetime | None = None
    """Newest event time seen so far (None without ``with_watermark``)."""


@dataclass(frozen=True)
class QueryIdleEvent:
    """A trigger found nothing to run (at most one per ``IDLE_EVENT_INTERVAL`` per query)."""

    id: str
    """The query's id."""
    run_id: str
    """The run's id."""
    name: str
    """The query's name."""
    timestamp: datetime
    """When the trigger ran (UTC)."""
    progress: QueryProgress | None = None
    """While partitions are stalled (backing off), the idle record naming them."""


@dataclass(frozen=True)
class QueryTerminatedEvent:
    """A query ended, by ``stop()``, by its trigger, or by an error."""

    id: str
    """The query's id."""
    run_id: str
    """The run's id."""
    name: str
    """The query's name."""
    exception: str | None
    """The error that stopped it, as text (None when it stopped cleanly)."""
    error_class: str | None
    """The error's class name (None when it stopped cleanly)."""


Event = QueryStartedEvent | QueryProgressEvent | QueryIdleEvent | QueryTerminatedEvent


class StreamingQueryListener:
    """Receives query events; override the methods you need (the defaults do nothing).
    Called on the dispatcher thread, never on a query's loop."""

    def on_query_started(self, event: QueryStartedEvent) -> None:
        """A query started."""

    def on_query_progress(self, event: QueryProgressEvent) -> None:
        """A batch committed."""

    def on_query_idle(self, event: QueryIdleEvent) -> None:
        """A trigger found no data."""

    def on_query_terminated(self, event: QueryTerminatedEvent) -> None:
        """A query ended."""


class StreamingQueryManager:
    """The process's queries and listeners (``sk.streams``). Thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Condition()
        self._active: dict[str, QueryView] = {}
        self._runs: dict[str, str] = {}
        self._idle_at: dict[str, float] = {}
        self._terminated: QueryView | None = None
        self._listeners: tuple[StreamingQueryListener, ...] = ()
        self._queue: queue.SimpleQueue[Event | threading.Event] = queue.SimpleQueue()
        self._dispatcher: threading.Thread | None = None

    # -- user API ------------------------------------------------------------------------
    def add_listener(self, listener: StreamingQueryListener) -> None:
        """Subscribe ``listener`` to the events posted from now on."""
        with self._lock:
            self._listeners = (*self._listeners, listener)
            if self._dispatcher is None or not self._dispatcher.is_alive():
                self._dispatcher = threading.Thread(
                    target=self._dispatch, name="streamkit-listeners", daemon=True
                )
                self._dispatcher.start()

    def remove_listener(self, listener: StreamingQueryListener) -> None:
        """Unsubscribe ``listener`` (events already queued may still reach it)."""
        with self._lock:
            self._listeners = tuple(x for x in self._listeners if x is not listener)

    @property
    def active(self) -> list[QueryView]:
        """The queries running now, in start order."""
        with self._lock:
            return list(self._active.values())

    def get(self, query_id: str) -> QueryView | None:
        """The active query with this id, or None."""
        with self._lock:
            return self._active.get(query_id)

    def await_any_termination(self, timeout: float | None = None) -> bool:
        """Wait until a query ends (since the last :meth:`reset_terminated`); re-raises its
        error as :class:`~streamkit.streaming.query.StreamingQueryError`. False on timeout."""
        with self._lock:
            ended = self._lock.wait_for(lambda: self._terminated is not None, timeout)
            query = self._terminated
        if ended and query is not None:
            query.raise_if_failed()
        return ended

    def reset_terminated(self) -> None:
        """Forget the queries that ended, so :meth:`await_any_termination` waits again."""
        with self._lock:
            self._terminated = None

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every event posted before this call reached the listeners."""
        if self._dispatcher is None:
            return True
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    # -- hooks called by the query --------------------------------------------------------
    def post_started(self, query: QueryView) -> None:
        """Register ``query`` as active and post its started event."""
        run = uuid.uuid4().hex
        with self._lock:
            self._active[query.id] = query
            self._runs[query.id] = run
        self._post(QueryStartedEvent(query.id, run, query.name, datetime.now(UTC)))

    def post_progress(
        self, query: QueryView, progress: QueryProgress, newest: datetime | None
    ) -> None:
        """Post a committed batch's progress."""
        self._post(QueryProgressEvent(query.id, self._run(query), query.name, progress, newest))

    def post_idle(self, query: QueryView, stalled: QueryProgress | None) -> None:
        """Post an idle trigger, at most once per ``IDLE_EVENT_INTERVAL`` per query."""
        if not self._listeners:
            return
        now = self._clock()
        last = self._idle_at.get(query.id)
        if last is not None and now - last < IDLE_EVENT_INTERVAL:
            return
        self._idle_at[query.id] = now
        run = self._run(query)
        self._post(QueryIdleEvent(query.id, run, query.name, datetime.now(UTC), stalled))

    def post_terminated(self, query: QueryView, error: BaseException | None) -> None:
        """Post the end of ``query`` and wake :meth:`await_any_termination`."""
        run = self._run(query)
        event = QueryTerminatedEvent(
            query.id, run, query.name,
            None if error is None else str(error),
            None if error is None else type(error).__name__,
        )  # fmt: skip
        self._post(event)
        with self._lock:
            self._active.pop(query.id, None)
            self._runs.pop(query.id, None)
            self._idle_at.pop(query.id, None)
            self._terminated = query
            self._lock.notify_all()

    # -- dispatch ------------------------------------------------------------------------
    def _run(self, query: QueryView) -> str:
        return self._runs.get(query.id, "")

    def _post(self, event: Event) -> None:
        if self._listeners:
            self._queue.put(event)

    def _dispatch(self) -> None:
        while True:
            event = self._queue.get()
            if isinstance(event, threading.Event):
                event.set()
                continue
            for listener in self._listeners:
                _deliver(listener, event)


def _deliver(listener: StreamingQueryListener, event: Event) -> None:
    """Call the listener's method for ``event``; log what it raises and carry on."""
    try:
        if isinstance(event, QueryProgressEvent):
            listener.on_query_progress(event)
        elif isinstance(event, QueryIdleEvent):
            listener.on_query_idle(event)
        elif isinstance(event, QueryStartedEvent):
            listener.on_query_started(event)
        else:
            listener.on_query_terminated(event)
    except Exception:
        log.exception("query listener %r failed on %s", listener, type(event).__name__)


streams = StreamingQueryManager()
"""The process's query manager (``sk.streams``)."""
