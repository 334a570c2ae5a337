"""Operators after ``transform_with_state_in_pandas`` (``event_time_column_name``) and
``apply_in_pandas_with_state`` beyond the differential suite (``tests/differential/
test_transform_chains.py``): the emitted-row check at its boundary, restart equivalence
of a chain whose first operator is a stateful function, the watermark under
``ProcessingTime``, and the plan-time refusals. Expected values are derived by hand in
comments."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.errors import PlanError
from streamkit.streaming.runner import StreamingQueryError
from tests.streamkit.streaming.test_stateful_ops import collector, live_and_restarted
from tests.streamkit.streaming.test_transform_state import FILES, INCREMENTS, write_file

SCHEMA = pa.schema(
    [("ts", pa.timestamp("us", "UTC")), ("k", pa.string()), ("v", pa.int64()), ("u", pa.int64())]
)
T0 = datetime(2024, 1, 1, tzinfo=UTC)
T0_US = int(T0.timestamp()) * 1_000_000
OUT = "k string, at timestamp, v bigint"


class At(sk.StatefulProcessor):
    """Each row as (k, at = T0 + v ms, v): the test picks the emitted event time."""

    def init(self, handle: sk.StatefulProcessorHandle) -> None:
        self.handle = handle

    def handle_input_rows(self, key: Any, rows: Iterator[pd.DataFrame], values: Any) -> Any:
        for pdf in rows:
            at = pd.to_datetime(T0_US // 1000 + pdf["v"], unit="ms", utc=True)
            yield pd.DataFrame({"k": pdf["k"].astype(object), "at": at, "v": pdf["v"]})


class Echo(sk.StatefulProcessor):
    """Each row as (k, at = ts, v), and one event-time timer per key at its latest time
    + 10 s emitting (k, at = the timer, rows seen)."""

    def init(self, handle: sk.StatefulProcessorHandle) -> None:
        self.handle = handle
        self.rows = handle.get_value_state("rows", "n bigint")

    def handle_input_rows(self, key: Any, rows: Iterator[pd.DataFrame], values: Any) -> Any:
        n = (self.rows.get() or (0,))[0]
        for pdf in rows:
            n += len(pdf)
            yield pd.DataFrame({"k": pdf["k"].astype(object), "at": pdf["ts"], "v": pdf["v"]})
            last = int(pdf["ts"].max().timestamp() * 1000)
        self.rows.update((n,))
        for at in self.handle.list_timers():
            self.handle.delete_timer(at)
        self.handle.register_timer(last + 10_000)

    def handle_expired_timer(self, key: Any, values: Any, info: Any) -> Any:
        at = pd.Timestamp(info.get_expiry_time_in_ms(), unit="ms", tz="UTC")
        yield pd.DataFrame({"k": [key[0]], "at": [at], "v": [(self.rows.get() or (0,))[0]]})
        self.rows.clear()


def _at_query(events: sk.DataFrame) -> sk.DataFrame:
    return (
        events.with_watermark("ts", "5 seconds").group_by("k")
        .transform_with_state_in_pandas(At(), OUT, "append", "EventTime",
                                        event_time_column_name="at")
    )  # fmt: skip


@pytest.mark.parametrize(("offset_ms", "fails"), [(0, True), (1, False)])
def test_an_emitted_row_at_the_watermark_fails_the_query(offset_ms: int, fails: bool) -> None:
    """Batch 0 (a row at T0 + 10 s) moves W to T0 + 5 s; the no-data batch 1 has it in
    force and batch 2 judges emitted rows by it (Spark's late-events watermark): a row
    emitted AT T0 + 5 s fails the query, one a millisecond later passes."""
    events = sk.read_stream.memory(SCHEMA)
    seen: list[tuple[int, list[Any]]] = []
    handle = (
        _at_query(events).write_stream.output_mode("append").foreach_batch(collector(seen)).start()
    )
    late = T0 + timedelta(seconds=10)
    try:
        events.stream.add_rows([{"ts": late, "k": "a", "v": 10_000, "u": 0}])
        handle.process_all_available()
        events.stream.add_rows([{"ts": late, "k": "a", "v": 5_000 + offset_ms, "u": 0}])
        if fails:
            with pytest.raises(StreamingQueryError):
                handle.process_all_available()
        else:
            handle.process_all_available()
    finally:
        handle.stop()
    assert [b for b, _ in seen] == ([0, 1] if fails else [0, 1, 2])
    if fails:
        message = str(handle.exception)
        assert "EMITTING_ROWS_OLDER_THAN_WATERMARK_NOT_ALLOWED" in message
        assert f"eventTime={T0_US + 5_000_000}" in message


def echo_window_query(folder: Path) -> Any:
    df = sk.read_stream.files(str(folder), format="json", schema=SCHEMA, max_files_per_trigger=1)
    out = (
        df.with_watermark("ts", "5 seconds").group_by("k")
        .transform_with_state_in_pandas(Echo(), OUT, "append", "EventTime",
                                        event_time_column_name="at")
        .group_by(sk.window("at", "20 seconds")).agg(sk.count().alias("n"), sk.sum("v").alias("s"))
        .select(sk.window_time("window").alias("last"), "n", "s")
    )  # fmt: skip
    return out.write_stream.output_mode("append")


def test_chain_after_a_function_restarts_from_its_checkpoint(tmp_path: Path) -> None:
    """The function's variables and timers and the window counts above it are
    checkpointed together: restarted at each step, the query emits the batches of one
    that never stopped."""
    expected, got = live_and_restarted(
        tmp_path, echo_window_query, lambda folder, i: write_file(folder, i, FILES[i]), INCREMENTS
    )
    assert got == expected
    # by hand (v is 1 on every row): rows at 0, 1, 5, 30, 31, 32, 60, 61, 62, 120 and
    # timers firing at a:15, b:11 (W 25), b:41, a:42 (W 56), c:71, d:72 (W 115) emit
    # `at` values counted per 20 s window; v sums are 1 per row plus the timer rows'
    # counts: a(0,5)=2, b(1)=1, b(31)=1, a(32)=1, c(30,61)=2, d(60,62)=2. Closed windows
    # (end <= 115): [0,20): 0,1,5 + timers 15,11 -> n 5, s 3+2+1; [20,40): 30,31,32 ->
    # n 3, s 3; [40,60): timers 41,42 -> n 2, s 1+1; [60,80): 60,61,62 + timers 71,72
    # -> n 5, s 3+2+2.
    closed = sorted(
        (round(r[0].timestamp() - T0.timestamp()) - 20, r[1], r[2]) for _, b in expected for r in b
    )
    assert closed == [(0, 5, 6), (20, 3, 3), (40, 2, 2), (60, 5, 7)]


def test_processing_time_passes_no_watermark_on() -> None:
    """Under ``ProcessingTime`` the function passes no watermark on (Spark's
    ``produceOutputWatermark``): a window over its event-time column never closes in
    append mode. Emitted rows are still judged by the input's watermark (Spark's
    ``UpdateEventTimeColumnExec`` takes it whatever the time mode), so they are emitted
    ahead of it here: at T0 + 1000 s while W reaches T0 + 1995 s, which would close the
    window [1000 s, 1001 s) under ``EventTime``."""
    events = sk.read_stream.memory(SCHEMA)
    out = (
        events.with_watermark("ts", "5 seconds").group_by("k")
        .transform_with_state_in_pandas(At(), OUT, "append", "ProcessingTime",
                                        event_time_column_name="at")
        .group_by(sk.window("at", "1 second")).agg(sk.count().alias("n"))
    )  # fmt: skip
    seen: list[tuple[int, list[Any]]] = []
    handle = out.write_stream.output_mode("append").foreach_batch(collector(seen)).start()
    try:
        for ts, v in ((10, 1_000_000), (100, 1_000_001), (2000, 1_000_002), (2001, 3_000_000)):
            events.stream.add_rows([{"ts": T0 + timedelta(seconds=ts), "k": "a", "v": v, "u": 0}])
            handle.process_all_available()
    finally:
        handle.stop()
    assert handle.exception is None
    assert len(seen) >= 4
    assert all(rows == [] for _, rows in seen)


def _frame() -> sk.DataFrame:
    return sk.read_stream.memory(SCHEMA)


def capped(key: Any, pdfs: Iterator[pd.DataFrame], state: Any) -> Iterator[pd.DataFrame]:
    n = (state.get[0] if state.exists else 0) + sum(len(p) for p in pdfs)
    state.update((n,))
    yield pd.DataFrame({"k": [key[0]], "n": [n]})


def _apply(mode: str, timeout: str, marked: bool = False) -> sk.DataFrame:
    frame = _frame().with_watermark("ts", "5 seconds") if marked else _frame()
    return frame.group_by("k").apply_in_pandas_with_state(
        capped, "k string, n bigint", "n bigint", mode, timeout
    )


def _start(frame: sk.DataFrame, mode: Any) -> None:
    frame.write_stream.output_mode(mode).foreach_batch(lambda f, i: None).start().stop()


REFUSALS: dict[str, tuple[Any, str, str]] = {
    "etcn_without_watermark": (
        lambda: (
            _frame()
            .group_by("k")
            .transform_with_state_in_pandas(
                At(), OUT, "append", "None", event_time_column_name="at"
            )
        ),
        "append",
        "CANNOT_ASSIGN_EVENT_TIME_COLUMN_WITHOUT_WATERMARK",
    ),
    "etcn_not_a_column": (
        lambda: (
            _frame()
            .with_watermark("ts", "1 second")
            .group_by("k")
            .transform_with_state_in_pandas(
                At(), OUT, "append", "None", event_time_column_name="nope"
            )
        ),
        "append",
        "is not a column of the output schema",
    ),
    "etcn_not_a_timestamp": (
        lambda: (
            _frame()
            .with_watermark("ts", "1 second")
            .group_by("k")
            .transform_with_state_in_pandas(At(), OUT, "append", "None", event_time_column_name="v")
        ),
        "append",
        "must be a timestamp column",
    ),
    "window_append_without_etcn": (
        lambda: (
            _frame()
            .with_watermark("ts", "1 second")
            .group_by("k")
            .transform_with_state_in_pandas(At(), OUT, "append", "EventTime")
            .group_by(sk.window("at", "1 second"))
            .agg(sk.count().alias("n"))
        ),
        "append",
        "without watermark",
    ),
    "apply_update_then_count": (
        lambda: _apply("update", "NoTimeout").group_by("k").agg(sk.count().alias("c")),
        "update",
        "applyInPandasWithState in update mode is not supported with aggregation",
    ),
    "apply_event_time_timeout_then_count": (
        lambda: (
            _apply("append", "EventTimeTimeout", marked=True)
            .group_by("k")
            .agg(sk.count().alias("c"))
        ),
        "update",
        "correctness",
    ),
    "apply_after_aggregation": (
        lambda: (
            _frame()
            .group_by("k")
            .agg(sk.count().alias("n"))
            .group_by("k")
            .apply_in_pandas_with_state(
                capped, "k string, n bigint", "n bigint", "append", "NoTimeout"
            )
        ),
        "update",
        "applyInPandasWithState in append mode is not supported after aggregation",
    ),
    "apply_after_apply": (
        lambda: (
            _apply("append", "NoTimeout")
            .group_by("k")
            .apply_in_pandas_with_state(
                capped, "k string, n bigint", "n bigint", "append", "NoTimeout"
            )
        ),
        "append",
        "Multiple applyInPandasWithStates are not supported",
    ),
    "function_after_update_aggregation": (
        lambda: (
            _frame()
            .group_by("k")
            .agg(sk.count().alias("v"))
            .with_column("ts", sk.lit(T0))
            .group_by("k")
            .transform_with_state_in_pandas(At(), OUT, "append", "None")
        ),
        "update",
        "correctness",
    ),
}


@pytest.mark.parametrize("name", list(REFUSALS))
def test_refused_at_plan_time(name: str) -> None:
    build, mode, reason = REFUSALS[name]
    with pytest.raises(PlanError, match=reason):
        _start(build(), mode)


def test_drop_duplicates_after_a_function_forgets_keys_behind_the_watermark() -> None:
    """``drop_duplicates(k, at)`` above the function judges and expires keys on ``at``
    with the watermark it passes on: once W (T0 + 95 s, in force in the no-data batch
    after the second row) passes T0 + 10 s, that key leaves the state."""
    events = sk.read_stream.memory(SCHEMA)
    out = _at_query(events).drop_duplicates(["k", "at"])
    handle = out.write_stream.output_mode("append").foreach_batch(lambda f, i: None).start()
    try:
        for ts, v in ((10, 10_000), (100, 100_000)):
            events.stream.add_rows([{"ts": T0 + timedelta(seconds=ts), "k": "a", "v": v, "u": 0}])
            handle.process_all_available()
    finally:
        handle.stop()
    assert handle.exception is None
    assert handle.last_progress is not None
    assert handle.last_progress.state_rows == 1


@pytest.mark.parametrize("column", ["at", "t2"])
def test_drop_duplicates_within_watermark_after_a_function_follows_a_rename(column: str) -> None:
    """``at`` renamed ``t2`` between the function and
    ``drop_duplicates_within_watermark(["k"])``: a key expires at its ``t2`` + 5 s as on
    ``at``. By hand (W: latest ts - 5 s): (a, 10) is emitted (a expires at 15; W 5 after);
    (a, 12) is a duplicate (W 7); (b, 30) is emitted (W 25), the no-data batch at W 25
    expires a; (a, 40) is emitted again."""
    events = sk.read_stream.memory(SCHEMA)
    out = _at_query(events)
    if column == "t2":
        out = out.select(sk.col("at").alias("t2"), "k", "v")
    seen: list[list[tuple[str, int]]] = []
    query = out.drop_duplicates_within_watermark(["k"]).write_stream.output_mode("append")
    handle = query.foreach_batch(
        lambda f, i: seen.append([(r["k"], r["v"]) for r in f.to_arrow().to_pylist()])
    ).start()
    try:
        for second, k in ((10, "a"), (12, "a"), (30, "b"), (40, "a")):
            row = {"ts": T0 + timedelta(seconds=second), "k": k, "v": second * 1000, "u": 0}
            events.stream.add_rows([row])
            handle.process_all_available()
    finally:
        handle.stop()
    assert handle.exception is None
    assert [rows for rows in seen if rows] == [[("a", 10_000)], [("b", 30_000)], [("a", 40_000)]]


@pytest.mark.parametrize("column", ["at", "t2"])
def test_window_after_a_function_follows_a_rename(column: str) -> None:
    """``at`` renamed ``t2`` between the function and a 10 s window on it (append): the
    window closes with the watermark the function passes on, as on ``at``. By hand
    (at = ts; W: latest ts - 5 s): rows at 1, 12, then 30 (W 25: the no-data batch closes
    [0, 10) and [10, 20)), then 50 (W 45 closes [30, 40))."""
    events = sk.read_stream.memory(SCHEMA)
    out = _at_query(events)
    if column == "t2":
        out = out.select(sk.col("at").alias("t2"), "k", "v")
    counts = out.group_by(sk.window(column, "10 seconds")).agg(sk.count().alias("n"))
    seen: list[list[tuple[int, int, int]]] = []

    def collect(frame: sk.DataFrame, _: int) -> None:
        rows = frame.to_arrow().to_pylist()
        secs = [((r["window"]["start"] - T0).seconds, (r["window"]["end"] - T0).seconds, r["n"])
                for r in rows]  # fmt: skip
        seen.append(sorted(secs))

    handle = counts.write_stream.output_mode("append").foreach_batch(collect).start()
    try:
        for second in (1, 12, 30, 50):
            row = {"ts": T0 + timedelta(seconds=second), "k": "a", "v": second * 1000, "u": 0}
            events.stream.add_rows([row])
            handle.process_all_available()
    finally:
        handle.stop()
    assert handle.exception is None
    assert [rows for rows in seen if rows] == [[(0, 10, 1), (10, 20, 1)], [(30, 40, 1)]]


class Count(sk.StatefulProcessor):
    """Above another function: rows per key so far, and an event-time timer at the
    key's latest ``at`` + 5 s that emits (k, -n) and forgets the key."""

    def init(self, handle: sk.StatefulProcessorHandle) -> None:
        self.handle = handle
        self.rows = handle.get_value_state("rows", "n bigint")

    def handle_input_rows(self, key: Any, rows: Iterator[pd.DataFrame], values: Any) -> Any:
        n = (self.rows.get() or (0,))[0]
        for pdf in rows:
            n += len(pdf)
            last = int(pdf["at"].max().timestamp() * 1000)
        self.rows.update((n,))
        for at in self.handle.list_timers():
            self.handle.delete_timer(at)
        self.handle.register_timer(last + 5_000)
        yield pd.DataFrame({"k": [key[0]], "n": [n]})

    def handle_expired_timer(self, key: Any, values: Any, info: Any) -> Any:
        yield pd.DataFrame({"k": [key[0]], "n": [-(self.rows.get() or (0,))[0]]})
        self.rows.clear()


def two_functions_query(folder: Path) -> Any:
    df = sk.read_stream.files(str(folder), format="json", schema=SCHEMA, max_files_per_trigger=1)
    out = (
        df.with_watermark("ts", "5 seconds").group_by("k")
        .transform_with_state_in_pandas(Echo(), OUT, "append", "EventTime",
                                        event_time_column_name="at")
        .group_by("k").transform_with_state_in_pandas(Count(), "k string, n bigint", "append",
                                                      "EventTime")
    )  # fmt: skip
    return out.write_stream.output_mode("append")


def test_two_functions_restart_from_their_checkpoint(tmp_path: Path) -> None:
    """A function above another (on its ``event_time_column_name``): both stores are
    checkpointed with the chain; restarted at each step, the query emits the batches of
    one that never stopped, and each key's second-level timer fires once."""
    expected, got = live_and_restarted(
        tmp_path, two_functions_query, lambda folder, i: write_file(folder, i, FILES[i]),
        INCREMENTS,
    )  # fmt: skip
    assert got == expected
    fired = sorted(r for _, b in expected for r in b if r[1] < 0)
    # the second processor sees every row and every first-level timer row of a key
    # (a: 0, 5, 15; 32, 42; b: 1, 11; 31, 41; c: 30, 61, 71; d: 60, 62, 72) and fires
    # when W passes the key's latest + 5 s (a twice, b twice, c and d once each)
    assert fired == [("a", -3), ("a", -2), ("b", -2), ("b", -2), ("c", -3), ("d", -3)]


def tally(key: Any, pdfs: Iterator[pd.DataFrame], state: Any) -> Any:
    """``EventTimeTimeout``: (k, rows so far) per call; when the watermark passes the key's
    latest event time (``at``, else ``ts``) + 5 s, (k, -rows) and the key is forgotten."""
    if state.hasTimedOut:
        (n,) = state.get
        state.remove()
        yield pd.DataFrame({"k": [key[0]], "n": [-n]})
        return
    n = state.get[0] if state.exists else 0
    latest = state.getCurrentWatermarkMs()
    for pdf in pdfs:
        n += len(pdf)
        times = pd.to_datetime(pdf["at" if "at" in pdf.columns else "ts"], utc=True)
        latest = max(latest, int(times.max().timestamp() * 1000))
    state.update((n,))
    state.setTimeoutTimestamp(latest + 5_000)
    yield pd.DataFrame({"k": [key[0]], "n": [n]})


def _apply_tally(frame: sk.DataFrame) -> Any:
    out = frame.group_by("k").apply_in_pandas_with_state(
        tally, "k string, n bigint", "n bigint", "append", "EventTimeTimeout"
    )
    return out.write_stream.output_mode("append")


def dedup_apply_query(folder: Path) -> Any:
    df = sk.read_stream.files(str(folder), format="json", schema=SCHEMA, max_files_per_trigger=1)
    return _apply_tally(df.with_watermark("ts", "5 seconds").drop_duplicates(["k", "ts"]))


def echo_apply_query(folder: Path) -> Any:
    df = sk.read_stream.files(str(folder), format="json", schema=SCHEMA, max_files_per_trigger=1)
    echoed = (
        df.with_watermark("ts", "5 seconds")
        .group_by("k")
        .transform_with_state_in_pandas(
            Echo(), OUT, "append", "EventTime", event_time_column_name="at"
        )
    )
    return _apply_tally(echoed)


@pytest.mark.parametrize("column", ["ts", "at"])
def test_function_after_drop_duplicates_follows_a_rename_between_them(column: str) -> None:
    """``ts`` renamed ``at`` between ``drop_duplicates`` and the function (``at``: a plain
    alias keeps Spark's event-time metadata): the function sees the watermark as without
    the rename (EventTimeTimeout runs; timeouts fire at it). By hand (delay 5 s, timeout at
    a key's latest time + 5 s): a@10 twice and b@12 give (a, 1), (b, 1) (W 7 after);
    a@10 again is a duplicate, c@100 gives (c, 1) (W 95 after); the no-data batch at W 95
    times a (15) and b (17) out; a@10 once more is late (nothing)."""
    events = sk.read_stream.memory(SCHEMA)
    deduped = events.with_watermark("ts", "5 seconds").drop_duplicates(["k", "ts"])
    if column == "at":
        deduped = deduped.select(sk.col("ts").alias("at"), "k", "v")
    seen: list[tuple[int, list[Any]]] = []
    handle = _apply_tally(deduped).foreach_batch(collector(seen)).start()
    try:
        for rows in ([(10, "a"), (10, "a"), (12, "b")], [(10, "a"), (100, "c")], [(10, "a")]):
            events.stream.add_rows(
                [{"ts": T0 + timedelta(seconds=s), "k": k, "v": 1, "u": 0} for s, k in rows]
            )
            handle.process_all_available()
    finally:
        handle.stop()
    assert handle.exception is None
    emitted = [rows for _, rows in seen if rows]
    assert emitted == [[("a", 1), ("b", 1)], [("c", 1)], [("a", -1), ("b", -1)]]


REPEATED = [FILES[0], FILES[1] + [(0, "a", 1)], FILES[2] + [(5, "a", 2), (30, "c", 1)], *FILES[3:]]
"""FILES with repeats of earlier rows: (a, 0) in batch 1, (a, 5) late and (c, 30) in batch 2."""


def test_function_after_drop_duplicates_restarts_from_its_checkpoint(tmp_path: Path) -> None:
    """The deduplication's keys and the function's states and timeouts are checkpointed
    together: restarted at each step, the query emits the batches of one that never
    stopped, and each key's timeout counts its distinct rows once."""
    expected, got = live_and_restarted(
        tmp_path, dedup_apply_query, lambda folder, i: write_file(folder, i, REPEATED[i]),
        INCREMENTS,
    )  # fmt: skip
    assert got == expected
    # by hand: distinct (k, ts) rows a 0 5 32, b 1 31, c 30 61, d 60 62, e 120 (the
    # repeats dropped; (a, 5) again in file 2 is late too, W 25). A timeout forgets the
    # key, so its timeouts add up to its distinct rows: a and b time out in the no-data
    # batch after file 1 (W 25 passes 10 and 6) and again later, c and d at the end
    # (W 115 passes 66 and 67); e (125) never does
    totals: dict[str, int] = {}
    for _, batch in expected:
        for k, n in batch:
            if n < 0:
                totals[k] = totals.get(k, 0) - n
    assert totals == {"a": 3, "b": 2, "c": 2, "d": 2}


def test_function_after_a_processor_restarts_from_its_checkpoint(tmp_path: Path) -> None:
    """``apply_in_pandas_with_state`` on a processor's ``event_time_column_name``: both
    functions' states and timers are checkpointed with the chain; restarted at each step,
    the query emits the batches of one that never stopped."""
    expected, got = live_and_restarted(
        tmp_path, echo_apply_query, lambda folder, i: write_file(folder, i, FILES[i]), INCREMENTS
    )
    assert got == expected
    assert any(n < 0 for _, b in expected for _, n in b), "no timeout fired: tests none"
