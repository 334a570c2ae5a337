"""``apply_in_pandas_with_state`` beyond the differential suite: processing-time timeouts
on an injected clock (expected batches derived by hand in the comments), restart
equivalence from a checkpoint, the state rules of ``GroupState``, and the errors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.errors import PlanError
from streamkit.group_state import GroupState, GroupStateError, GroupStateTimeout
from streamkit.stateful import StatefulFunctionError
from streamkit.streaming.runner import StreamingQueryError

SCHEMA = pa.schema([("ts", pa.timestamp("us", "UTC")), ("k", pa.string())])
T0 = datetime(2024, 1, 1, tzinfo=UTC)


class ManualClock:
    """Processing time the test sets (seconds since the epoch)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def idle_expiry(key: tuple[Any, ...], pdfs: Iterator[pd.DataFrame], state: Any) -> Any:
    """Count per key; 10 s of processing time without rows expires the key, except key x
    from its second call on (no timeout set: the old one is cleared)."""
    if state.has_timed_out:
        (n,) = state.get
        state.remove()
        yield pd.DataFrame({"k": [key[0]], "n": [n], "at": [state.get_current_processing_time_ms()],
                            "expired": [True]})  # fmt: skip
        return
    n = (state.get[0] if state.exists else 0) + sum(len(p) for p in pdfs)
    state.update((n,))
    if key[0] != "x" or n < 2:
        state.set_timeout_duration("10 seconds")
    yield pd.DataFrame({"k": [key[0]], "n": [n], "at": [state.get_current_processing_time_ms()],
                        "expired": [False]})  # fmt: skip


OUT = "k string, n bigint, at bigint, expired boolean"


def rows(*keys: str) -> list[dict[str, Any]]:
    return [{"ts": T0, "k": k} for k in keys]


def test_processing_time_timeouts_follow_the_injected_clock() -> None:
    clock = ManualClock(1000.0)
    events = sk.read_stream.memory(SCHEMA)
    counted = events.group_by("k").apply_in_pandas_with_state(
        idle_expiry, OUT, "n bigint", "update", GroupStateTimeout.ProcessingTimeTimeout
    )
    seen: list[tuple[int, list[tuple[Any, ...]]]] = []

    def collect(frame: sk.DataFrame, bid: int) -> None:
        got = sorted(tuple(r.values()) for r in frame.to_arrow().to_pylist())
        seen.append((bid, got))

    q = counted.write_stream.output_mode("update").processing_clock(clock).foreach_batch(collect)
    handle = q.start()
    try:
        events.stream.add_rows(rows("a", "a", "b", "x"))  # P=1000 s: a, b, x due at 1010 s
        handle.process_all_available()
        clock.now = 1005.0
        events.stream.add_rows(rows("a", "x"))  # a: 3 rows, due at 1015 s; x: no timeout
        handle.process_all_available()
        clock.now = 1010.0  # b's timeout is not before 1010 s (Spark: strictly before)
        events.stream.add_rows(rows("x"))
        handle.process_all_available()
        clock.now = 1012.0  # b due (1010 < 1012): a no-data batch expires b only
        handle.process_all_available()
        clock.now = 1020.0
        # a is due (1015 < 1020) but has rows: its data call comes first and sets 1030
        events.stream.add_rows(rows("c", "a"))
        handle.process_all_available()
        clock.now = 1500.0  # a, c due at 1030: one more no-data batch; x is held for ever
        handle.process_all_available()
    finally:
        handle.stop()
    assert handle.recent_progress[-1].state_rows == 1
    ms = 1000
    assert seen == [
        (0, [("a", 2, 1000 * ms, False), ("b", 1, 1000 * ms, False), ("x", 1, 1000 * ms, False)]),
        (1, [("a", 3, 1005 * ms, False), ("x", 2, 1005 * ms, False)]),
        (2, [("x", 3, 1010 * ms, False)]),
        (3, [("b", 1, 1012 * ms, True)]),
        (4, [("a", 4, 1020 * ms, False), ("c", 1, 1020 * ms, False)]),
        (5, [("a", 4, 1500 * ms, True), ("c", 1, 1500 * ms, True)]),
    ]


def sessions(key: tuple[Any, ...], pdfs: Iterator[pd.DataFrame], state: Any) -> Any:
    """Event-time sessions (gap 10 s) closed by their timeout, in update mode."""
    if state.has_timed_out:
        n, last = state.get
        state.remove()
        yield pd.DataFrame({"k": [key[0]], "n": [n], "last": [last], "closed": [True]})
        return
    n, last = state.get if state.exists else (0, 0)
    for pdf in pdfs:
        ms = (pd.to_datetime(pdf["ts"], utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(
            milliseconds=1
        )
        n, last = n + len(pdf), max(last, int(ms.max()))
    state.update((n, last))
    state.set_timeout_timestamp(max(last + 10_000, state.get_current_watermark_ms()))
    yield pd.DataFrame({"k": [key[0]], "n": [n], "last": [last], "closed": [False]})


def write_file(folder: Path, index: int, keyed: list[tuple[int, str]]) -> None:
    import json
    import os

    path = folder / f"f-{index:03d}.json"
    body = "".join(
        json.dumps({"ts": (T0 + timedelta(seconds=s)).isoformat(), "k": k}) + "\n"
        for s, k in keyed
    )
    path.write_text(body)
    os.utime(path, (1_700_000_000 + index, 1_700_000_000 + index))


FILES = [
    [(0, "a"), (1, "b")], [(5, "a"), (30, "c")], [(31, "b"), (32, "a")], [],
    [(60, "d"), (61, "c")], [(62, "d")], [(120, "e")],
]  # fmt: skip


def session_query(folder: Path) -> Any:
    df = sk.read_stream.files(str(folder), format="json", schema=SCHEMA, max_files_per_trigger=1)
    out = df.with_watermark("ts", "5 seconds").group_by("k").apply_in_pandas_with_state(
        sessions, "k string, n bigint, last bigint, closed boolean", "n bigint, last bigint",
        "update", GroupStateTimeout.EventTimeTimeout,
    )  # fmt: skip
    return out.write_stream.output_mode("update")


INCREMENTS = (2, 3, 5, len(FILES))
"""Files present at each step: the query catches up (and runs the batches it owes)."""


def collector(seen: list[tuple[int, list[Any]]]) -> Any:
    def collect(frame: sk.DataFrame, bid: int) -> None:
        seen.append((bid, sorted(tuple(r.values()) for r in frame.to_arrow().to_pylist())))

    return collect


Batches = list[tuple[int, list[Any]]]


def live_and_restarted(
    tmp_path: Path,
    query: Callable[[Path], Any],
    write: Callable[[Path, int], None],
    increments: tuple[int, ...],
) -> tuple[Batches, Batches]:
    """The batches of ``query`` over files written by ``write`` in ``increments``: run by
    one query that never stops, and by a query restarted from its checkpoint at each step
    (``available_now``). The live query gets each increment's files at once (written in a
    hidden folder, then renamed into view): a file it saw alone, before the next one was
    written, could be followed by a no-data batch that the restarted query never runs."""
    live, restarted = tmp_path / "live", tmp_path / "restarted"
    live.mkdir()
    restarted.mkdir()
    expected: Batches = []
    handle = query(live).foreach_batch(collector(expected)).start()
    try:
        written = 0
        for step, upto in enumerate(increments):
            stage = live / "_stage"  # hidden from the file source (a leading underscore)
            stage.mkdir()
            for i in range(written, upto):
                write(stage, i)
            stage.rename(live / f"step{step:03d}")
            written = upto
            handle.process_all_available()
    finally:
        handle.stop()
    got: Batches = []
    for upto in increments:  # a new process-like start from the checkpoint each time
        for i in range(len(list(restarted.iterdir())), upto):
            write(restarted, i)
        writer = query(restarted).checkpoint(str(tmp_path / "ck"))
        done = writer.trigger(available_now=True).foreach_batch(collector(got)).start()
        assert done.await_termination(timeout=120)
        assert done.exception is None, repr(done.exception)
    return expected, got


def test_restart_from_checkpoint_gives_the_uninterrupted_batches(tmp_path: Path) -> None:
    expected, got = live_and_restarted(
        tmp_path, session_query, lambda folder, i: write_file(folder, i, FILES[i]), INCREMENTS
    )
    assert got == expected
    # by hand: a (0, 5) and b (1) close when c@30 moves W to 25; a (32) and b (31) when
    # c@61 moves it to 56; c (30, 61) and d (60, 62) when e@120 moves it to 115; e stays open
    closed = sorted((r[0], r[1], r[2]) for _, b in expected for r in b if r[3])
    s = int(T0.timestamp()) * 1000
    assert closed == [("a", 1, s + 32_000), ("a", 2, s + 5_000), ("b", 1, s + 1_000),
                      ("b", 1, s + 31_000), ("c", 2, s + 61_000), ("d", 2, s + 62_000)]


def test_group_state_rules() -> None:
    def make(conf: str, value: tuple[Any, ...] | None = None, present: bool = True) -> GroupState:
        return GroupState(value, processing_time_ms=5_000, watermark_ms=2_000, timeout_conf=conf,
                          has_timed_out=False, watermark_present=present, arity=2)  # fmt: skip

    s = make(GroupStateTimeout.EventTimeTimeout)
    assert not s.exists
    assert s.get_option is None
    with pytest.raises(GroupStateError, match="does not exist"):
        _ = s.get
    with pytest.raises(GroupStateError, match="earlier than the current watermark"):
        s.set_timeout_timestamp(1_999)
    s.set_timeout_timestamp(2_000)  # at the watermark is allowed
    s.set_timeout_timestamp(np.int64(3_000))  # e.g. a pandas max
    assert s.timeout_ms == 3_000
    with pytest.raises(GroupStateError, match="ProcessingTimeTimeout"):
        s.set_timeout_duration(10)
    with pytest.raises(GroupStateError, match="2 values"):
        s.update((1,))
    with pytest.raises(GroupStateError, match="None is not a valid state"):
        s.update(None)  # type: ignore[arg-type]
    p = make(GroupStateTimeout.ProcessingTimeTimeout, (1, 2), present=False)
    p.set_timeout_duration("3 seconds")
    assert p.timeout_ms == 8_000
    with pytest.raises(GroupStateError, match="positive"):
        p.set_timeout_duration(0)
    with pytest.raises(GroupStateError, match="EventTimeTimeout"):
        p.set_timeout_timestamp(9_000)
    with pytest.raises(GroupStateError, match="with_watermark"):
        p.get_current_watermark_ms()
    p.remove()
    assert not p.exists
    assert p.removed


def test_state_removed_with_a_timeout_stays_as_a_timeout() -> None:
    """Spark keeps a removed state whose call set a timeout: the timeout still fires,
    with ``exists`` False."""
    clock = ManualClock(100.0)
    calls: list[tuple[str, bool, bool]] = []

    def func(key: tuple[Any, ...], pdfs: Iterator[pd.DataFrame], state: Any) -> Any:
        calls.append((key[0], state.has_timed_out, state.exists))
        if not state.has_timed_out:
            state.update((1,))
            state.remove()
            state.set_timeout_duration(1_000)
        return iter(())

    events = sk.read_stream.memory(SCHEMA)
    out = events.group_by("k").apply_in_pandas_with_state(
        func, "k string", "n bigint", "append", GroupStateTimeout.ProcessingTimeTimeout
    )
    handle = out.write_stream.processing_clock(clock).memory("removed_timeout").start()
    try:
        events.stream.add_rows(rows("a"))
        handle.process_all_available()
        clock.now = 102.0
        handle.process_all_available()
    finally:
        handle.stop()
    assert calls == [("a", False, False), ("a", True, False)]


def test_function_error_names_the_key() -> None:
    def boom(key: tuple[Any, ...], pdfs: Iterator[pd.DataFrame], state: Any) -> Any:
        if key[0] == "b":
            raise ZeroDivisionError("no")
        return iter(())

    events = sk.read_stream.memory(SCHEMA)
    out = events.group_by("k").apply_in_pandas_with_state(
        boom, "k string", "n bigint", "append", "NoTimeout"
    )
    handle = out.write_stream.memory("boom").start()
    events.stream.add_rows(rows("a", "b"))
    with pytest.raises(StreamingQueryError, match=r"'boom' for key \('b',\) raised ZeroDivision"):
        handle.process_all_available()
    handle.stop()


def test_wrong_returned_columns_or_types_are_refused() -> None:
    def extra(key: tuple[Any, ...], pdfs: Iterator[pd.DataFrame], state: Any) -> Any:
        yield pd.DataFrame({"k": [key[0]], "x": [1]})

    def badtype(key: tuple[Any, ...], pdfs: Iterator[pd.DataFrame], state: Any) -> Any:
        yield pd.DataFrame({"k": [key[0]], "n": ["many"]})

    batch = sk.from_arrow(pa.table({"k": ["a", "b"]}))
    grouped = batch.group_by("k")
    with pytest.raises(StatefulFunctionError, match=r"missing: \['n'\], unexpected: \['x'\]"):
        grouped.apply_in_pandas_with_state(extra, "k string, n bigint", "n bigint", "append",
                                           "NoTimeout").to_arrow()  # fmt: skip
    with pytest.raises(StatefulFunctionError, match=r"key \('a',\) returned values that do not"):
        grouped.apply_in_pandas_with_state(badtype, "k string, n bigint", "n bigint", "append",
                                           "NoTimeout").to_arrow()  # fmt: skip


def test_misuse_is_refused_when_the_query_starts() -> None:
    events = sk.read_stream.memory(SCHEMA)
    grouped = events.group_by("k")

    def f(key: Any, pdfs: Any, state: Any) -> Any:
        return iter(())

    upd = grouped.apply_in_pandas_with_state(f, "k string", "n bigint", "update", "NoTimeout")
    with pytest.raises(PlanError, match=r"same output mode.*\.output_mode\('update'\)"):
        upd.write_stream.output_mode("append").memory("x1").start()
    ev = grouped.apply_in_pandas_with_state(f, "k string", "n bigint", "append", "EventTimeTimeout")
    with pytest.raises(PlanError, match="EventTimeTimeout needs a watermark"):
        ev.write_stream.memory("x2").start()
    with pytest.raises(PlanError, match="output_mode of apply_in_pandas_with_state"):
        grouped.apply_in_pandas_with_state(f, "k string", "n bigint", "complete", "NoTimeout")
    with pytest.raises(PlanError, match="cannot read output_schema"):
        grouped.apply_in_pandas_with_state(f, "k strin", "n bigint", "append", "NoTimeout")
    with pytest.raises(PlanError, match="plain columns"):
        events.group_by(sk.col("k").is_null()).apply_in_pandas_with_state(
            f, "k string", "n bigint", "append", "NoTimeout"
        )


def test_a_batch_run_again_after_a_crash_keeps_its_processing_time(tmp_path: Path) -> None:
    """Spark logs each batch's processing time with its offsets; a re-run reuses it, so
    it times out the same keys as the first run."""
    clock = ManualClock(1000.0)
    events = sk.read_stream.memory(SCHEMA)
    counted = events.group_by("k").apply_in_pandas_with_state(
        idle_expiry, OUT, "n bigint", "update", GroupStateTimeout.ProcessingTimeTimeout
    )
    seen: list[tuple[int, list[Any]]] = []

    def failing(frame: sk.DataFrame, bid: int) -> None:
        if bid == 1:
            raise RuntimeError("sink down")
        collector(seen)(frame, bid)

    def start(sink: Any) -> Any:
        writer = counted.write_stream.output_mode("update").processing_clock(clock)
        return writer.checkpoint(str(tmp_path / "ck")).foreach_batch(sink).start()

    handle = start(failing)
    events.stream.add_rows(rows("a"))  # batch 0 at 1000 s: a due at 1010 s
    handle.process_all_available()
    clock.now = 1005.0
    events.stream.add_rows(rows("b"))  # batch 1 at 1005 s fails in the sink
    with pytest.raises(StreamingQueryError, match="sink down"):
        handle.process_all_available()
    handle.stop()
    clock.now = 1020.0  # the re-run of batch 1 still runs at 1005 s: a is not due there
    handle = start(collector(seen))
    try:
        handle.process_all_available()
    finally:
        handle.stop()
    assert seen == [
        (0, [("a", 1, 1_000_000, False)]),
        (1, [("b", 1, 1_005_000, False)]),
        (2, [("a", 1, 1_020_000, True), ("b", 1, 1_020_000, True)]),
    ]
