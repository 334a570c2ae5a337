"""``transform_with_state_in_pandas`` beyond the differential suite: processing-time
timers on an injected clock, the value / list / map state rules, restart equivalence
from a checkpoint, and the refusals. Expected batches are derived by hand in comments."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.errors import PlanError
from streamkit.stateful import StatefulFunctionError
from streamkit.streaming.runner import StreamingQueryError
from tests.streamkit.streaming.test_stateful_ops import collector, live_and_restarted

SCHEMA = pa.schema(
    [("ts", pa.timestamp("us", "UTC")), ("k", pa.string()), ("v", pa.int64()), ("u", pa.int64())]
)
T0 = datetime(2024, 1, 1, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)


class ManualClock:
    """Processing time the test sets (seconds since the epoch)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def rows(*keyed: tuple[str, int, int]) -> list[dict[str, Any]]:
    """(k, v, u) rows at T0."""
    return [{"ts": T0, "k": k, "v": v, "u": u} for k, v, u in keyed]


class Idle(sk.StatefulProcessor):
    """Rows per key; 10 s of processing time without rows emits and clears the key. Key
    ``z`` registers a timer at the batch's own processing time: due at once."""

    def init(self, handle: sk.StatefulProcessorHandle) -> None:
        self.handle = handle
        self.count = handle.get_value_state("count", "n bigint")

    def handle_input_rows(
        self, key: tuple[Any, ...], rows: Iterator[pd.DataFrame], timer_values: sk.TimerValues
    ) -> Iterator[pd.DataFrame]:
        now = timer_values.get_current_processing_time_in_ms()
        n = (self.count.get() or (0,))[0] + sum(len(p) for p in rows)
        self.count.update((n,))
        for at in self.handle.list_timers():
            self.handle.delete_timer(at)
        self.handle.register_timer(now if key[0] == "z" else now + 10_000)
        yield pd.DataFrame({"k": [key[0]], "kind": ["data"], "n": [n], "at": [now]})

    def handle_expired_timer(
        self, key: tuple[Any, ...], timer_values: sk.TimerValues, info: sk.ExpiredTimerInfo
    ) -> Iterator[pd.DataFrame]:
        n = (self.count.get() or (-1,))[0]
        self.count.clear()
        yield pd.DataFrame({"k": [key[0]], "kind": ["fire"], "n": [n],
                            "at": [info.get_expiry_time_in_ms()]})  # fmt: skip


IDLE_OUT = "k string, kind string, n bigint, at bigint"


def test_processing_time_timers_follow_the_injected_clock() -> None:
    clock = ManualClock(1000.0)
    events = sk.read_stream.memory(SCHEMA)
    out = events.group_by("k").transform_with_state_in_pandas(
        Idle(), IDLE_OUT, "update", sk.TimeMode.PROCESSING_TIME
    )
    seen: list[tuple[int, list[Any]]] = []
    q = (
        out.write_stream.output_mode("update")
        .processing_clock(clock)
        .foreach_batch(collector(seen))
    )
    handle = q.start()
    try:
        events.stream.add_rows(rows(("a", 1, 0), ("a", 1, 0), ("b", 1, 0)))  # P 1000 s
        handle.process_all_available()
        clock.now = 1005.0  # a re-armed to 1015 s
        events.stream.add_rows(rows(("a", 1, 0)))
        handle.process_all_available()
        clock.now = 1010.0  # b's timer (1010 s) is due AT the clock: one no-data batch
        handle.process_all_available()
        clock.now = 1012.0  # z's timer is the batch's own time: it fires in that batch
        events.stream.add_rows(rows(("c", 1, 0), ("z", 1, 0)))
        handle.process_all_available()
        clock.now = 1030.0  # a (1015 s) and c (1022 s): one more no-data batch
        handle.process_all_available()
        handle.process_all_available()  # nothing is due: no batch
    finally:
        handle.stop()
    s = 1000
    assert seen == [
        (0, [("a", "data", 2, 1000 * s), ("b", "data", 1, 1000 * s)]),
        (1, [("a", "data", 3, 1005 * s)]),
        (2, [("b", "fire", 1, 1010 * s)]),
        (3, [("c", "data", 1, 1012 * s), ("z", "data", 1, 1012 * s), ("z", "fire", 1, 1012 * s)]),
        (4, [("a", "fire", 3, 1015 * s), ("c", "fire", 1, 1022 * s)]),
    ]
    assert handle.recent_progress[-1].state_rows == 0


class Bag(sk.StatefulProcessor):
    """Exercises value, list and map state (time mode None). Per batch and key: ``last``
    holds the batch's largest v; ``vals`` gets every v (sorted) and keeps the last two
    once it holds more than three; ``users`` counts rows per u and drops user 0. Key
    ``reset`` clears everything after reading it. ``calls`` counts calls on this copy of
    the processor: a new copy runs each batch."""

    def init(self, handle: sk.StatefulProcessorHandle) -> None:
        self.calls = 0
        self.last = handle.get_value_state("last", "v bigint")
        self.vals = handle.get_list_state("vals", "v bigint")
        self.users = handle.get_map_state("users", "u bigint", "c bigint")

    def handle_input_rows(self, key: Any, rows: Any, timer_values: Any) -> Any:
        assert timer_values.get_current_watermark_in_ms() == -1
        self.calls += 1
        pdf = pd.concat(list(rows))
        before = (self.last.exists(), self.vals.exists(), self.users.exists())
        self.last.update((int(pdf["v"].max()),))
        self.vals.append_list([(int(v),) for v in sorted(pdf["v"])])
        held = list(self.vals.get())
        if len(held) > 3:
            self.vals.put(held[-2:])
        for u in pdf["u"]:
            old = self.users.get_value((int(u),))
            self.users.update_value((int(u),), ((old or (0,))[0] + 1,))
        if self.users.contains_key((0,)):
            self.users.remove_key((0,))
        summary = {
            "k": key[0], "calls": self.calls, "before": "".join("01"[b] for b in before),
            "last": (self.last.get() or (None,))[0],
            "vals": ",".join(str(v) for (v,) in self.vals.get()),
            "users": ",".join(f"{u}:{c}" for (u,), (c,) in sorted(self.users.iterator())),
            "keys": len(list(self.users.keys())), "values": sum(c for (c,) in self.users.values()),
        }  # fmt: skip
        if key[0] == "reset":
            self.last.clear()
            self.vals.clear()
            self.users.clear()
        yield pd.DataFrame({k: [v] for k, v in summary.items()})


BAG_OUT = (
    "k string, calls bigint, before string, last bigint, vals string, users string, "
    "keys bigint, values bigint"
)


def test_value_list_and_map_state() -> None:
    events = sk.read_stream.memory(SCHEMA)
    out = events.group_by("k").transform_with_state_in_pandas(Bag(), BAG_OUT, "append", "None")
    seen: list[tuple[int, list[Any]]] = []
    handle = out.write_stream.foreach_batch(collector(seen)).start()
    try:
        events.stream.add_rows(rows(("a", 5, 1), ("a", 3, 0), ("reset", 7, 2)))
        handle.process_all_available()
        events.stream.add_rows(rows(("a", 1, 1), ("a", 9, 2), ("reset", 4, 3)))
        handle.process_all_available()
        events.stream.add_rows(rows(("b", 2, 0)))
        handle.process_all_available()
    finally:
        handle.stop()
    assert seen == [
        # a: last 5; vals 3,5; users 1:1 (user 0 dropped); reset: read, then cleared
        (0, [("a", 1, "000", 5, "3,5", "1:1", 1, 1), ("reset", 2, "000", 7, "7", "2:1", 1, 1)]),
        # a: last 9; vals 3,5,1,9 -> more than three: the last two; users 1:2, 2:1;
        # reset starts again from nothing (and calls restart: a new processor copy)
        (1, [("a", 1, "111", 9, "1,9", "1:2,2:1", 2, 3),
             ("reset", 2, "000", 4, "4", "3:1", 1, 1)]),
        # b: user 0 only: the map is empty again, so it does not exist
        (2, [("b", 1, "000", 2, "2", "", 0, 0)]),
    ]  # fmt: skip
    assert handle.recent_progress[-1].state_rows == 2  # a and b (b: value and list)


# --- event-time timers across restarts ---------------------------------------------------


class Sessions(sk.StatefulProcessor):
    """Per key: rows (value), event times (list), rows per user (map); an event-time
    timer at the last event time + 10 s emits them all and clears the key."""

    def init(self, handle: sk.StatefulProcessorHandle) -> None:
        self.handle = handle
        self.n = handle.get_value_state("n", "n bigint")
        self.times = handle.get_list_state("times", "t bigint")
        self.users = handle.get_map_state("users", "u bigint", "c bigint")

    def handle_input_rows(self, key: Any, rows: Any, timer_values: Any) -> Any:
        for pdf in rows:
            ms = (pd.to_datetime(pdf["ts"], utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(
                milliseconds=1
            )
            self.n.update(((self.n.get() or (0,))[0] + len(pdf),))
            self.times.append_list([(int(t),) for t in sorted(ms)])
            for u in pdf["u"]:
                self.users.update_value(
                    (int(u),), ((self.users.get_value((int(u),)) or (0,))[0] + 1,)
                )
        for at in self.handle.list_timers():
            self.handle.delete_timer(at)
        self.handle.register_timer(max(t for (t,) in self.times.get()) + 10_000)
        return iter(())

    def handle_expired_timer(self, key: Any, timer_values: Any, info: Any) -> Any:
        times = [t for (t,) in self.times.get()]
        users = ",".join(f"{u}:{c}" for (u,), (c,) in sorted(self.users.iterator()))
        yield pd.DataFrame({"k": [key[0]], "n": [(self.n.get() or (0,))[0]],
                            "first": [min(times)], "last": [max(times)], "users": [users],
                            "wm": [timer_values.get_current_watermark_in_ms()]})  # fmt: skip
        self.n.clear()
        self.times.clear()
        self.users.clear()


def write_file(folder: Path, index: int, keyed: list[tuple[int, str, int]]) -> None:
    path = folder / f"f-{index:03d}.json"
    body = "".join(
        json.dumps({"ts": (T0 + timedelta(seconds=s)).isoformat(), "k": k, "v": 1, "u": u}) + "\n"
        for s, k, u in keyed
    )
    path.write_text(body)
    os.utime(path, (1_700_000_000 + index, 1_700_000_000 + index))


FILES = [
    [(0, "a", 1), (1, "b", 1)], [(5, "a", 2), (30, "c", 1)], [(31, "b", 3), (32, "a", 1)], [],
    [(60, "d", 2), (61, "c", 2)], [(62, "d", 2)], [(120, "e", 1)],
]  # fmt: skip
INCREMENTS = (2, 3, 5, len(FILES))


def sessions_query(folder: Path) -> Any:
    df = sk.read_stream.files(str(folder), format="json", schema=SCHEMA, max_files_per_trigger=1)
    out = df.with_watermark("ts", "5 seconds").group_by("k").transform_with_state_in_pandas(
        Sessions(), "k string, n bigint, first bigint, last bigint, users string, wm bigint",
        "append", "EventTime",
    )  # fmt: skip
    return out.write_stream.output_mode("append")


def test_restart_from_checkpoint_gives_the_uninterrupted_batches(tmp_path: Path) -> None:
    """State variables and timers are checkpointed with the query: a query restarted from
    its checkpoint at each step emits the batches of one that never stopped."""
    expected, got = live_and_restarted(
        tmp_path, sessions_query, lambda folder, i: write_file(folder, i, FILES[i]), INCREMENTS
    )
    assert got == expected
    # by hand (files 0-1, 2, 3-4, 5-6 arrive in four steps; every time the watermark
    # moves, a no-data batch follows): batches 0, 1 (c@30: W 25), no-data 2: a (0, 5)
    # fires at 15 and b (1) at 11; 3 (W 27), no-data 4; 5 (empty), 6 (c@61: W 56),
    # no-data 7: b (31) at 41 and a (32) at 42; 8 (W 57), 9 (e@120: W 115), no-data 10:
    # c (30, 61) at 71 and d (60, 62) at 72; e stays open.
    fired = sorted(r for _, b in expected for r in b)
    s = T0_MS // 1000

    def ms(x: int) -> int:
        return (s + x) * 1000

    assert fired == [
        ("a", 1, ms(32), ms(32), "1:1", ms(56)), ("a", 2, ms(0), ms(5), "1:1,2:1", ms(25)),
        ("b", 1, ms(1), ms(1), "1:1", ms(25)), ("b", 1, ms(31), ms(31), "3:1", ms(56)),
        ("c", 2, ms(30), ms(61), "1:1,2:1", ms(115)), ("d", 2, ms(60), ms(62), "2:2", ms(115)),
    ]  # fmt: skip
    assert [b for b, rows in expected if rows] == [2, 7, 10]


# --- refusals -----------------------------------------------------------------------------


class Plain(sk.StatefulProcessor):
    def __init__(self, act: str = "") -> None:
        self.act = act

    def init(self, handle: sk.StatefulProcessorHandle) -> None:
        self.handle = handle
        self.v = handle.get_value_state("v", "n bigint")
        if self.act == "read_in_init":
            self.v.get()
        if self.act == "ttl":
            handle.get_list_state("l", "n bigint", ttl_duration_ms=1000)

    def handle_input_rows(self, key: Any, rows: Any, timer_values: Any) -> Any:
        if self.act == "timer":
            self.handle.register_timer(5)
        if self.act == "declare_late":
            self.handle.get_value_state("w", "n bigint")
        if self.act == "bad_tuple":
            self.v.update((1, 2))
        if self.act == "bad_type":
            self.v.update(("many",))
        yield pd.DataFrame({"k": [key[0]]})


@pytest.mark.parametrize(
    ("act", "message"),
    [
        ("timer", r"register_timer needs time_mode 'ProcessingTime' or 'EventTime'"),
        ("declare_late", r"state variable 'w' declared outside init"),
        ("bad_tuple", r"'v' takes tuples of 1 values \(\['n'\]\), got 2"),
        ("bad_type", r"does not fit its variable's schema \(v\)"),
    ],
)
def test_misuse_in_a_batch_fails_the_query(act: str, message: str) -> None:
    events = sk.read_stream.memory(SCHEMA)
    out = events.group_by("k").transform_with_state_in_pandas(
        Plain(act), "k string", "append", "None"
    )
    handle = out.write_stream.memory(f"misuse_{act}").start()
    try:
        events.stream.add_rows(rows(("a", 1, 0)))
        with pytest.raises(StreamingQueryError, match=message):
            handle.process_all_available()
    finally:
        handle.stop()


@pytest.mark.parametrize(
    ("act", "message"),
    [
        ("read_in_init", r"state variable 'v' used in init: state is read and written only"),
        ("ttl", r"ttl_duration_ms on state variable 'l' needs time_mode 'ProcessingTime'"),
    ],
)
def test_misuse_in_init_is_refused_when_the_query_starts(act: str, message: str) -> None:
    """``init`` runs once when the query starts, as Spark's driver-side pre-init does."""
    events = sk.read_stream.memory(SCHEMA)
    out = events.group_by("k").transform_with_state_in_pandas(
        Plain(act), "k string", "append", "None"
    )
    with pytest.raises(StatefulFunctionError, match=message):
        out.write_stream.memory(f"misuse_{act}").start()


def test_misuse_of_the_operator_is_refused() -> None:
    events = sk.read_stream.memory(SCHEMA)
    grouped = events.group_by("k")
    with pytest.raises(PlanError, match="must be 'append' or 'update'"):
        grouped.transform_with_state_in_pandas(Plain(), "k string", "complete", "None")
    with pytest.raises(PlanError, match="time_mode must be one of"):
        grouped.transform_with_state_in_pandas(Plain(), "k string", "append", "Wallclock")
    with pytest.raises(PlanError, match="needs a StatefulProcessor"):
        grouped.transform_with_state_in_pandas(object(), "k string", "append", "None")
    with pytest.raises(PlanError, match="plain columns"):
        events.group_by(sk.col("k").is_null()).transform_with_state_in_pandas(
            Plain(), "k string", "append", "None"
        )
    out = grouped.transform_with_state_in_pandas(Plain(), "k string", "update", "none")
    with pytest.raises(PlanError, match="complete mode needs an aggregation"):
        out.write_stream.output_mode("complete").memory("tws_complete").start()
    batch = sk.from_arrow(pa.Table.from_pylist(rows(("a", 1, 0)), schema=SCHEMA))
    wrong = batch.group_by("k").transform_with_state_in_pandas(
        Plain(), "k string, n bigint", "append", "None"
    )
    with pytest.raises(StatefulFunctionError, match=r"missing: \['n'\]"):
        wrong.to_arrow()


def test_a_batch_run_again_after_a_crash_fires_the_same_timers(tmp_path: Path) -> None:
    """Each batch's processing time is logged with its offsets: a batch re-run after a
    crash sees its first run's time, so it fires the same processing-time timers."""
    clock = ManualClock(1000.0)
    events = sk.read_stream.memory(SCHEMA)
    out = events.group_by("k").transform_with_state_in_pandas(
        Idle(), IDLE_OUT, "update", "ProcessingTime"
    )
    seen: list[tuple[int, list[Any]]] = []

    def failing(frame: sk.DataFrame, bid: int) -> None:
        if bid == 1:
            raise RuntimeError("sink down")
        collector(seen)(frame, bid)

    def start(sink: Any) -> Any:
        writer = out.write_stream.output_mode("update").processing_clock(clock)
        return writer.checkpoint(str(tmp_path / "ck")).foreach_batch(sink).start()

    handle = start(failing)
    events.stream.add_rows(rows(("a", 1, 0)))  # batch 0 at 1000 s: a's timer at 1010 s
    handle.process_all_available()
    clock.now = 1005.0
    events.stream.add_rows(rows(("b", 1, 0)))  # batch 1 at 1005 s fails in the sink
    with pytest.raises(StreamingQueryError, match="sink down"):
        handle.process_all_available()
    handle.stop()
    clock.now = 1020.0  # the re-run of batch 1 still runs at 1005 s: a is not due there
    handle = start(collector(seen))
    try:
        handle.process_all_available()
    finally:
        handle.stop()
    s = 1000
    assert seen == [
        (0, [("a", "data", 1, 1000 * s)]),
        (1, [("b", "data", 1, 1005 * s)]),
        (2, [("a", "fire", 1, 1010 * s), ("b", "fire", 1, 1015 * s)]),
    ]
