"""``transform_with_state_in_pandas`` (``EventTime``) above an aggregation in append mode,
server-free (the same shapes against PySpark 4.3: ``tests/differential/
test_chain_renames.py``): the function gets the watermark in ms for its timers whichever
column carries it (a group key under any alias or rename, or none), and a row whose
event time is an aggregate (``max("ts")`` named ``ts``) is never late above it. Expected
values are derived by hand in the test's docstring."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pandas as pd
import pytest

import streamkit as sk
from tests.streamkit.streaming.test_stateful_ops import collector
from tests.streamkit.streaming.test_transform_chain import SCHEMA, T0

T0_MS = int(T0.timestamp()) * 1000


class Watch(sk.StatefulProcessor):
    """Per call (k, rows so far, the watermark it sees); a timer at the key's latest
    ``at`` + 5 s emits (k, -rows, the watermark) and forgets the key."""

    def init(self, handle: sk.StatefulProcessorHandle) -> None:
        self.handle = handle
        self.rows = handle.get_value_state("rows", "n bigint")

    def handle_input_rows(self, key: Any, rows: Iterator[pd.DataFrame], values: Any) -> Any:
        n = (self.rows.get() or (0,))[0]
        last = 0
        for pdf in rows:
            n += len(pdf)
            last = max(last, int(pdf["at"].max().timestamp() * 1000))
        self.rows.update((n,))
        self.handle.register_timer(last + 5_000)
        yield pd.DataFrame({"k": [key[0]], "n": [n], "wm": [values.get_current_watermark_in_ms()]})

    def handle_expired_timer(self, key: Any, values: Any, info: Any) -> Any:
        n = (self.rows.get() or (0,))[0]
        yield pd.DataFrame({"k": [key[0]], "n": [-n], "wm": [values.get_current_watermark_in_ms()]})
        self.rows.clear()


def _sum(grouped: Any, *more: Any) -> Any:
    return grouped.agg(sk.sum("v").alias("s"), *more)


SHAPES: dict[str, Callable[[Any], Any]] = {
    "alias_in_group_by": lambda m: _sum(m.group_by(sk.col("ts").alias("at"), "k")),
    "renamed_before": lambda m: _sum(
        m.select(sk.col("ts").alias("at"), "k", "v").group_by("at", "k")
    ),
    "renamed_after": lambda m: _sum(m.group_by("ts", "k")).select(
        sk.col("ts").alias("at"), "k", "s"
    ),
    "window_end": lambda m: _sum(m.group_by(sk.window("ts", "10 seconds"), "k")).select(
        sk.col("window").get_field("end").alias("at"), "k", "s"
    ),
    "aggregate_named_ts": lambda m: _sum(
        m.group_by(sk.window("ts", "10 seconds"), "k"), sk.max("ts").alias("ts")
    ).select(sk.col("ts").alias("at"), "k", "s"),
}


def _run(shape: str, batches: list[list[tuple[int, str]]]) -> list[list[Any]]:
    events = sk.read_stream.memory(SCHEMA)
    counts = SHAPES[shape](events.with_watermark("ts", "5 seconds"))
    out = counts.group_by("k").transform_with_state_in_pandas(
        Watch(), "k string, n bigint, wm bigint", "append", "EventTime"
    )
    seen: list[tuple[int, list[Any]]] = []
    handle = out.write_stream.output_mode("append").foreach_batch(collector(seen)).start()
    try:
        for rows in batches:
            events.stream.add_rows(
                [{"ts": T0 + timedelta(seconds=s), "k": k, "v": 1, "u": 0} for s, k in rows]
            )
            handle.process_all_available()
    finally:
        handle.stop()
    assert handle.exception is None
    return [rows for _, rows in seen if rows]


@pytest.mark.parametrize("shape", ["alias_in_group_by", "renamed_before", "renamed_after"])
def test_function_above_a_key_carrying_the_watermark_gets_it(shape: str) -> None:
    """Delay 5 s: a@10, b@12 (W 7 after), then c@100 (W 95 after); the no-data batch at
    W 95 emits the groups at 10 and 12, the function sees them with W 95 s (in ms) and
    their timers (15 s, 17 s) fire in the same batch."""
    wm = T0_MS + 95_000
    emitted = _run(shape, [[(10, "a"), (12, "b")], [(100, "c")]])
    assert emitted == [[("a", -1, wm), ("a", 1, wm), ("b", -1, wm), ("b", 1, wm)]]


def test_function_above_a_window_end_gets_the_watermark() -> None:
    """``window.end`` is computed (carries none), yet the function's timers see W: the
    windows [10, 20) of a and b (at 20) are emitted at W 95 and their timers (25 s) fire."""
    wm = T0_MS + 95_000
    emitted = _run("window_end", [[(10, "a"), (12, "b")], [(100, "c")]])
    assert emitted == [[("a", -1, wm), ("a", 1, wm), ("b", -1, wm), ("b", 1, wm)]]


def test_an_aggregate_named_ts_is_not_late_above_the_aggregation() -> None:
    """a@3, b@12 (W 7 after), then c@20 (W 15 after): the no-data batch at W 15 (7 in force
    before it) emits a's window [0, 10) with ``at`` = max(ts) = 3, behind 7, but an
    aggregate carries no watermark (as in Spark): the function gets the row, and its
    timer (8 s) fires at W 15."""
    wm = T0_MS + 15_000
    emitted = _run("aggregate_named_ts", [[(3, "a"), (12, "b")], [(20, "c")]])
    assert emitted == [[("a", -1, wm), ("a", 1, wm)]]
