"""``transform_with_state_in_pandas(..., initial_state=...)``: Spark's rules for the
initial state (its ``TransformWithStateInPandasExec`` co-groups the initial state with
batch 0's rows; later batches and restarts never see it). Expected batches are derived
by hand in comments."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.errors import PlanError
from tests.streamkit.streaming.test_stateful_ops import collector
from tests.streamkit.streaming.test_transform_state import SCHEMA, ManualClock, rows

SEEDS = pa.table({"k": ["a", "b", "c"], "n": [10, 20, 30], "note": ["x", "y", "z"]})
OUT = "k string, kind string, n bigint, at bigint"


class Seeded(sk.StatefulProcessor):
    """Per key a count: the initial state sets it to the sum of its ``n`` (and, for key
    ``c``, registers a processing-time timer at the batch's time + 5 s); each batch
    adds the key's rows and emits the count; a timer emits the count."""

    def init(self, handle: sk.StatefulProcessorHandle) -> None:
        self.handle = handle
        self.count = handle.get_value_state("count", "n bigint")

    def handle_initial_state(
        self, key: tuple[Any, ...], initial_state: pd.DataFrame, timer_values: sk.TimerValues
    ) -> None:
        assert list(initial_state.columns) == ["k", "n", "note"], initial_state.columns
        self.count.update((int(initial_state["n"].sum()),))
        if key[0] == "c":
            self.handle.register_timer(timer_values.get_current_processing_time_in_ms() + 5000)

    def handle_input_rows(
        self, key: tuple[Any, ...], rows: Iterator[pd.DataFrame], timer_values: sk.TimerValues
    ) -> Iterator[pd.DataFrame]:
        n = (self.count.get() or (0,))[0] + sum(len(p) for p in rows)
        self.count.update((n,))
        yield pd.DataFrame({"k": [key[0]], "kind": ["data"], "n": [n], "at": [None]})

    def handle_expired_timer(
        self, key: tuple[Any, ...], timer_values: sk.TimerValues, info: sk.ExpiredTimerInfo
    ) -> Iterator[pd.DataFrame]:
        n = (self.count.get() or (-1,))[0]
        yield pd.DataFrame({"k": [key[0]], "kind": ["fire"], "n": [n],
                            "at": [info.get_expiry_time_in_ms()]})  # fmt: skip


def query(events: Any, initial: Any = None) -> Any:
    initial = initial if initial is not None else sk.from_arrow(SEEDS).group_by("k")
    return events.group_by("k").transform_with_state_in_pandas(
        Seeded(), OUT, "update", "ProcessingTime", initial_state=initial
    )


def test_initial_state_seeds_the_first_batch_only(tmp_path: Path) -> None:
    clock = ManualClock(1000.0)
    events = sk.read_stream.memory(SCHEMA)
    seen: list[tuple[int, list[Any]]] = []

    def start() -> Any:
        writer = query(events).write_stream.output_mode("update").processing_clock(clock)
        return writer.checkpoint(str(tmp_path / "ck")).foreach_batch(collector(seen)).start()

    handle = start()
    try:
        # batch 0 at 1000 s: a 10 + 2 rows; d has no initial state: 1; b and c have
        # initial state and no rows: no call of handle_input_rows; c's timer at 1005 s
        events.stream.add_rows(rows(("a", 1, 0), ("a", 1, 0), ("d", 1, 0)))
        handle.process_all_available()
        clock.now = 1001.0  # batch 1: b 20 + 1 (seeded in batch 0, not seeded again)
        events.stream.add_rows(rows(("b", 1, 0)))
        handle.process_all_available()
    finally:
        handle.stop()
    clock.now = 1010.0
    handle = start()  # restarted from batch 1: the initial state is not read again
    try:
        events.stream.add_rows(rows(("a", 1, 0), ("b", 1, 0)))
        handle.process_all_available()
    finally:
        handle.stop()
    s = 1000
    assert seen == [
        (0, [("a", "data", 12, None), ("d", "data", 1, None)]),
        (1, [("b", "data", 21, None)]),
        # a 12 + 1, b 21 + 1 (re-seeding would give 11 and 21); c's timer (1005 s) fires
        (2, [("a", "data", 13, None), ("b", "data", 22, None), ("c", "fire", 30, 1005 * s)]),
    ]


def test_initial_state_is_read_again_when_batch_0_never_committed(tmp_path: Path) -> None:
    """A crash in batch 0 leaves no committed state: its re-run seeds again (Spark's
    batch 0 re-run has the initial state too)."""
    events = sk.read_stream.memory(SCHEMA)
    seen: list[tuple[int, list[Any]]] = []

    def failing(frame: sk.DataFrame, bid: int) -> None:
        raise RuntimeError("sink down")

    def start(sink: Any) -> Any:
        writer = query(events).write_stream.output_mode("update")
        return writer.checkpoint(str(tmp_path / "ck")).foreach_batch(sink).start()

    handle = start(failing)
    events.stream.add_rows(rows(("a", 1, 0)))
    with pytest.raises(sk.streaming.runner.StreamingQueryError, match="sink down"):
        handle.process_all_available()
    handle.stop()
    handle = start(collector(seen))
    try:
        handle.process_all_available()
    finally:
        handle.stop()
    assert seen[0] == (0, [("a", "data", 11, None)])


def test_initial_state_on_a_batch_dataframe() -> None:
    """One batch: the initial state, then the rows (a: 10 + 1; b and c seeded only; the
    2024 timers are not due before now, c's is now + 5 s: not fired)."""
    batch = sk.from_arrow(pa.Table.from_pylist(rows(("a", 1, 0), ("e", 1, 0)), schema=SCHEMA))
    out = query(batch).to_arrow().to_pylist()
    assert sorted(tuple(r.values()) for r in out) == [
        ("a", "data", 11, None),
        ("e", "data", 1, None),
    ]


def test_camel_case_spelling_and_default_no_op() -> None:
    """``initialState=`` (PySpark's keyword) and a processor without
    ``handle_initial_state``: the initial state is ignored."""

    class NoInitial(sk.StatefulProcessor):
        def init(self, handle: sk.StatefulProcessorHandle) -> None:
            self.count = handle.get_value_state("count", "n bigint")

        def handleInputRows(self, key: Any, rows: Any, timerValues: Any) -> Any:
            yield pd.DataFrame({"k": [key[0]], "kind": ["data"], "n": [1], "at": [None]})

    batch = sk.from_arrow(pa.Table.from_pylist(rows(("a", 1, 0)), schema=SCHEMA))
    seeds = sk.from_arrow(SEEDS).group_by("k")
    out = batch.group_by("k").transformWithStateInPandas(
        NoInitial(), OUT, "Update", "None", initialState=seeds
    )
    assert [tuple(r.values()) for r in out.to_arrow().to_pylist()] == [("a", "data", 1, None)]


def test_initial_state_refusals() -> None:
    events = sk.read_stream.memory(SCHEMA)
    with pytest.raises(PlanError, match="must be a batch DataFrame"):
        query(events, sk.read_stream.memory(SCHEMA).group_by("k"))
    ints = sk.from_arrow(pa.table({"k": [1], "n": [1]})).group_by("k")
    with pytest.raises(PlanError, match="key columns must match in number and type"):
        query(events, ints)
    with pytest.raises(PlanError, match="must be a grouped DataFrame"):
        query(events, sk.from_arrow(SEEDS))
