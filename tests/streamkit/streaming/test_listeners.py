"""Query listeners and ``sk.streams`` (issue 16 item 1), on the memory source: events in
order per query on the dispatcher thread, a raising listener logged and harmless, idle
events with the stalled partitions' state, active / get / await_any_termination."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.streaming.contracts import PartitionProgress
from streamkit.streaming.listeners import (
    IDLE_EVENT_INTERVAL,
    QueryIdleEvent,
    QueryProgressEvent,
    QueryStartedEvent,
    QueryTerminatedEvent,
    StreamingQueryListener,
    StreamingQueryManager,
)
from streamkit.streaming.query import StreamingQueryError
from streamkit.streaming.sources.memory import MemoryStream

SCHEMA = pa.schema([pa.field("k", pa.string()), pa.field("v", pa.int64())])


class Recorder(StreamingQueryListener):
    """Keeps every event with the name of the thread it arrived on."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, str]] = []
        self.lock = threading.Lock()

    def _keep(self, event: Any) -> None:
        with self.lock:
            self.events.append((event, threading.current_thread().name))

    on_query_started = _keep
    on_query_progress = _keep
    on_query_idle = _keep
    on_query_terminated = _keep

    def of(self, query_id: str) -> list[Any]:
        with self.lock:
            return [e for e, _ in self.events if e.id == query_id]


class Exploding(StreamingQueryListener):
    def on_query_progress(self, event: QueryProgressEvent) -> None:
        raise RuntimeError("listener bug")


def wait_for(check: Callable[[], bool], what: str, limit: float = 60.0) -> None:
    end = time.monotonic() + limit
    while not check():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def recorder() -> Any:
    rec = Recorder()
    sk.streams.add_listener(rec)
    yield rec
    sk.streams.remove_listener(rec)


def test_events_arrive_in_order_off_the_query_thread(recorder: Recorder) -> None:
    source = MemoryStream(SCHEMA)
    query = sk.read_stream.source(source).write_stream.memory("listen_order").start()
    fed = [3, 5, 2]
    try:
        for n in fed:
            source.add_rows(pa.table({"k": ["x"] * n, "v": list(range(n))}, schema=SCHEMA))
            query.process_all_available()
    finally:
        query.stop()
    assert sk.streams.flush()
    events = recorder.of(query.id)
    kinds = [type(e) for e in events if not isinstance(e, QueryIdleEvent)]
    assert kinds == [QueryStartedEvent] + [QueryProgressEvent] * len(fed) + [QueryTerminatedEvent]
    started, *_ = events
    assert (started.name, started.id) == (query.name, query.id)
    assert {e.run_id for e in events} == {started.run_id}
    progress = [e.progress for e in events if isinstance(e, QueryProgressEvent)]
    assert [p.batch_id for p in progress] == [0, 1, 2]
    assert [p.num_input_rows for p in progress] == fed
    assert progress == query.recent_progress
    assert events[-1].exception is None
    assert events[-1].error_class is None
    threads = {t for e, t in recorder.events if getattr(e, "id", None) == query.id}
    assert threads == {"streamkit-listeners"}


def test_a_raising_listener_is_logged_and_the_query_goes_on(
    recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    bad = Exploding()
    sk.streams.add_listener(bad)
    source = MemoryStream(SCHEMA)
    query = sk.read_stream.source(source).write_stream.memory("listen_raise").start()
    try:
        with caplog.at_level(logging.ERROR, logger="streamkit.streaming.listeners"):
            for i in range(3):
                source.add_rows(pa.table({"k": ["a"], "v": [i]}, schema=SCHEMA))
                query.process_all_available()
            assert sk.streams.flush()
    finally:
        query.stop()
        sk.streams.remove_listener(bad)
    assert query.exception is None
    assert sk.memory_table("listen_raise").column("v").to_pylist() == [0, 1, 2]
    failures = [r for r in caplog.records if "listener bug" in str(r.exc_info and r.exc_info[1])]
    assert len(failures) == 3
    assert sum(isinstance(e, QueryProgressEvent) for e in recorder.of(query.id)) == 3


class StallingStream(MemoryStream):
    """Partition 0 reports a stall (backing off, errors counting up) while ``stalled``."""

    def __init__(self) -> None:
        super().__init__(SCHEMA)
        self.stalled = threading.Event()
        self.errors = 0

    def stalled_partitions(self) -> tuple[PartitionProgress, ...]:
        if not self.stalled.is_set():
            return ()
        self.errors += 1
        return (PartitionProgress("0", 0, None, None, "backing off", self.errors, "cut"),)


def test_idle_event_carries_the_stalled_shards_state(recorder: Recorder) -> None:
    source = StallingStream()
    source.stalled.set()
    query = (
        sk.read_stream.source(source).write_stream.trigger(processing_time=0.05)
        .memory("listen_idle").start()
    )  # fmt: skip
    try:
        wait_for(lambda: any(isinstance(e, QueryIdleEvent) for e in recorder.of(query.id)),
                 "an idle event")  # fmt: skip
    finally:
        query.stop()
    idle = next(e for e in recorder.of(query.id) if isinstance(e, QueryIdleEvent))
    assert idle.progress is not None
    (part,) = idle.progress.partitions
    assert (part.partition, part.state, part.last_error) == ("0", "backing off", "cut")
    assert part.consecutive_errors >= 1


@dataclass
class FakeHandle:
    id: str
    name: str


def test_idle_events_are_spaced_by_the_interval_per_query() -> None:
    now = [0.0]
    manager = StreamingQueryManager(clock=lambda: now[0])
    rec = Recorder()
    manager.add_listener(rec)
    a, b = FakeHandle("a", "qa"), FakeHandle("b", "qb")
    for t in (0.0, 1.0, IDLE_EVENT_INTERVAL - 0.001, IDLE_EVENT_INTERVAL, IDLE_EVENT_INTERVAL + 1):
        now[0] = t
        manager.post_idle(a, None)  # type: ignore[arg-type]
        manager.post_idle(b, None)  # type: ignore[arg-type]
    assert manager.flush()
    assert [e.id for e, _ in rec.events] == ["a", "b", "a", "b"]


def fails_on_second_batch(df: sk.DataFrame, batch_id: int) -> None:
    if batch_id == 1:
        raise ValueError("sink down")


def test_active_get_and_await_any_termination(recorder: Recorder) -> None:
    sk.streams.reset_terminated()
    source = MemoryStream(SCHEMA)
    query = sk.read_stream.source(source).write_stream.foreach_batch(fails_on_second_batch)
    running = query.start()
    try:
        assert running in sk.streams.active
        assert sk.streams.get(running.id) is running
        assert sk.streams.await_any_termination(0.05) is False
        source.add_rows(pa.table({"k": ["a"], "v": [1]}, schema=SCHEMA))
        running.process_all_available()
        source.add_rows(pa.table({"k": ["b"], "v": [2]}, schema=SCHEMA))
        with pytest.raises(StreamingQueryError, match="sink down"):
            sk.streams.await_any_termination(60)
    finally:
        running.stop()
    assert running not in sk.streams.active
    assert sk.streams.get(running.id) is None
    assert sk.streams.flush()
    end = recorder.of(running.id)[-1]
    assert isinstance(end, QueryTerminatedEvent)
    assert end.error_class == "ValueError"
    assert "sink down" in (end.exception or "")
    sk.streams.reset_terminated()
    assert sk.streams.await_any_termination(0.05) is False
