"""TTL on ``transform_with_state_in_pandas`` state variables (Spark's rules, read from
its ``StateTTL`` / ``*StateImplWithTTL`` classes): an update at batch processing time P
makes what it writes expire at P + TTL (a value; each list element; each map entry); a
batch at or past the expiry no longer sees it; the end of that batch removes it from
the state and the checkpoints. Processing time comes from an injected clock, so the
boundaries are exact; expected batches are derived by hand in the comments.

Also here: the work an append or a map update costs (review finding 3: they used to
copy the whole list or map), counted in state items written, not in time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import pytest

import streamkit as sk
from streamkit.stateful import Clock, StatefulFunctionError
from streamkit.streaming.state.processor_store import ProcessorStore
from streamkit.streaming.state.processor_ttl import SLACK
from streamkit.streaming.state.processor_vars import StateVar
from streamkit.transform_state import ProcessorCalls, TransformWithState, declared_state
from tests.streamkit.streaming.test_stateful_ops import collector
from tests.streamkit.streaming.test_transform_state import SCHEMA, ManualClock, rows

TTL_MS = 10_000
OUT = "k string, last bigint, vals string, users string, alive string"


class Expiring(sk.StatefulProcessor):
    """Per key, all with a TTL of ``ttl`` ms: ``last`` (the batch's largest v), ``vals``
    (every v appended, one element per row) and ``users`` (rows per u, one entry each).
    Each batch emits what the key held before the batch's updates (as seen through get,
    exists and iteration), then updates."""

    def __init__(self, ttl: int = TTL_MS) -> None:
        self.ttl = ttl

    def init(self, handle: sk.StatefulProcessorHandle) -> None:
        self.last = handle.get_value_state("last", "v bigint", ttl_duration_ms=self.ttl)
        self.vals = handle.get_list_state("vals", "v bigint", self.ttl)
        self.users = handle.getMapState("users", "u bigint", "c bigint", ttlDurationMs=self.ttl)

    def handle_input_rows(
        self, key: tuple[Any, ...], rows: Iterator[pd.DataFrame], timer_values: sk.TimerValues
    ) -> Iterator[pd.DataFrame]:
        pdf = pd.concat(list(rows))
        alive = "".join("01"[s.exists()] for s in (self.last, self.vals, self.users))
        yield pd.DataFrame({
            "k": [key[0]], "last": [(self.last.get() or (None,))[0]],
            "vals": [",".join(str(v) for (v,) in self.vals.get())],
            "users": [",".join(f"{u}:{c}" for (u,), (c,) in sorted(self.users.iterator()))],
            "alive": [alive],
        })  # fmt: skip
        self.last.update((int(pdf["v"].max()),))
        for v in pdf["v"]:
            self.vals.append_value((int(v),))
        for u in pdf["u"]:
            old = self.users.get_value((int(u),))
            self.users.update_value((int(u),), ((old or (0,))[0] + 1,))


def start(events: Any, clock: ManualClock, seen: list[Any], checkpoint: Path | None = None) -> Any:
    out = events.group_by("k").transform_with_state_in_pandas(
        Expiring(), OUT, "update", "ProcessingTime"
    )
    writer = out.write_stream.output_mode("update").processing_clock(clock)
    if checkpoint is not None:
        writer = writer.checkpoint(str(checkpoint))
    return writer.foreach_batch(collector(seen)).start()


def test_entries_expire_on_their_own_at_the_exact_boundary(tmp_path: Path) -> None:
    clock = ManualClock(1000.0)
    events = sk.read_stream.memory(SCHEMA)
    seen: list[tuple[int, list[Any]]] = []
    handle = start(events, clock, seen, tmp_path / "ck")
    steps = [
        # (clock s, rows (k, v, u)); expiries in s
        (1000.0, [("a", 1, 1)]),  # last 1@1010, vals [1@1010], users 1:1@1010
        (1005.0, [("a", 2, 2)]),  # last 2@1015, vals [1@1010, 2@1015], users 1@1010 2@1015
        # 1009.999 < 1010: everything of batch 0 is still there
        (1009.999, [("b", 1, 1)]),
        # 1010 >= 1010: batch 0's element and entry are gone, batch 1's are not;
        # then last 3@1020, vals [2@1015, 3@1020], users 2:2@1020
        (1010.0, [("a", 3, 2)]),
        (1016.0, [("a", 4, 5)]),  # 2@1015 gone: vals [3]; users 2:2@1020 stays
    ]
    try:
        for now, batch in steps:
            clock.now = now
            events.stream.add_rows(rows(*batch))
            handle.process_all_available()
    finally:
        handle.stop()
    # where the clock moves onto an expiry before rows come (1010, 1016), the runner may
    # run a no-data batch first (the expiry is due): it removes what the rows' batch
    # would not see anyway, so the data batches are compared without batch ids
    assert [rows for _, rows in seen if rows] == [
        [("a", None, "", "", "000")],
        [("a", 1, "1", "1:1", "111")],
        [("b", None, "", "", "000")],
        [("a", 2, "2", "2:1", "111")],
        [("a", 3, "3", "2:2", "111")],
    ]
    # restart at 1025.5: batch 4's writes (expiring at 1026) are all that is left of a;
    # b's entries (expiring at 1019.999) are due: a no-data batch removes them first
    clock.now = 1025.5
    seen.clear()
    handle = start(events, clock, seen, tmp_path / "ck")
    try:
        handle.process_all_available()  # the expiries were checkpointed: b's are due
        assert handle.recent_progress[-1].state_rows == 1  # b removed, a kept
        # a sees last 4@1026, vals [4@1026], users 5:1@1026 (3 and 2:2 expired at 1020);
        # then last 9@1035.5, vals [4@1026, 9@1035.5], users 5:1@1026, 9:1@1035.5
        events.stream.add_rows(rows(("a", 9, 9)))
        handle.process_all_available()
        clock.now = 1026.0  # 4 and 5:1 are due: a no-data batch removes them, a stays
        handle.process_all_available()
        assert handle.recent_progress[-1].state_rows == 1
        clock.now = 1035.5  # the rest is due: a no-data batch removes a
        handle.process_all_available()
        assert handle.recent_progress[-1].state_rows == 0
        handle.process_all_available()  # nothing due: no batch
    finally:
        handle.stop()
    assert [rows for _, rows in seen] == [[], [("a", 4, "4", "5:1", "111")], [], []]


def test_a_huge_ttl_never_expires_and_an_update_in_the_batch_is_visible() -> None:
    clock = ManualClock(1000.0)
    events = sk.read_stream.memory(SCHEMA)
    seen: list[tuple[int, list[Any]]] = []
    out = events.group_by("k").transform_with_state_in_pandas(
        Expiring(10**15), OUT, "update", "ProcessingTime"
    )
    handle = out.write_stream.processing_clock(clock).foreach_batch(collector(seen)).start()
    try:
        for now in (1000.0, 10**9):
            clock.now = now
            events.stream.add_rows(rows(("a", 1, 1), ("a", 2, 1)))
            handle.process_all_available()
    finally:
        handle.stop()
    assert seen == [(0, [("a", None, "", "", "000")]), (1, [("a", 2, "1,2", "1:2", "111")])]


@pytest.mark.parametrize(
    ("time_mode", "ttl", "message"),
    [
        ("None", 1000, r"needs time_mode 'ProcessingTime' \(this query uses 'None'\)"),
        ("EventTime", 1000, r"needs time_mode 'ProcessingTime' \(this query uses 'EventTime'\)"),
        ("ProcessingTime", 0, "must be a positive whole number of ms, got 0"),
        ("ProcessingTime", 1.5, "must be a positive whole number of ms, got 1.5"),
    ],
)
def test_ttl_refusals(time_mode: str, ttl: Any, message: str) -> None:
    """Spark refuses a TTL outside ProcessingTime, and one not positive."""
    events = sk.read_stream.memory(SCHEMA)
    out = (
        events.with_watermark("ts", "1 second")
        .group_by("k")
        .transform_with_state_in_pandas(Expiring(ttl), OUT, "update", time_mode)
    )
    with pytest.raises(StatefulFunctionError, match=message):
        out.write_stream.output_mode("update").memory(f"ttl_{time_mode}_{ttl}").start()


# --- the work of appends and map updates (review finding 3) ------------------------------


class Appender(sk.StatefulProcessor):
    """Per row: one append to a list and one update of a map entry (the same entry, and
    a new one every 10 rows), the per-event pattern that was O(n²)."""

    def init(self, handle: sk.StatefulProcessorHandle) -> None:
        self.vals = handle.get_list_state("vals", "v bigint")
        self.users = handle.get_map_state("users", "u bigint", "c bigint")

    def handle_input_rows(self, key: Any, rows: Any, timer_values: Any) -> Any:
        for pdf in rows:
            for v in pdf["v"]:
                self.vals.append_value((int(v),))
                self.users.update_value((int(v) // 10,), (int(v),))
        yield pd.DataFrame({"k": [key[0]], "n": [len(list(self.vals.get()))]})


def test_appends_and_map_updates_write_only_what_they_add() -> None:
    """n appends and n single-entry map updates write 2n state items in all, however
    long the list and map grow (a copy of the whole list or map per call: n² / 2 each).
    Counted by the store (:attr:`ProcessorStore.written`) over two batches, the second
    starting from a list and a map of n / 2."""
    n = 2000
    events = sk.read_stream.memory(SCHEMA)
    node = (
        events.group_by("k")
        .transform_with_state_in_pandas(Appender(), "k string, n bigint", "append", "None")
        .plan
    )
    assert isinstance(node, TransformWithState)
    variables, _ = declared_state(node)
    store = ProcessorStore(node.key_schema(), variables.values())
    calls = ProcessorCalls(node, store)
    out = []
    for part in range(2):
        batch = pl.DataFrame(
            {"k": ["a"] * (n // 2), "v": range(part * n // 2, (part + 1) * n // 2)}
        )
        out += calls.run(batch, Clock(0), None).rows()
    assert out == [("a", n // 2), ("a", n)]
    assert store.written == 2 * n


# --- the expiry index ----------------------------------------------------------------------


def _store(kind: str) -> ProcessorStore:
    var = StateVar("x", kind, pl.Schema({"v": pl.Int64()}), None, TTL_MS)  # type: ignore[arg-type]
    return ProcessorStore(pl.Schema({"k": pl.String()}), [var])


def test_the_index_stays_bounded_when_values_are_updated_every_batch() -> None:
    """Ten values updated in each of 5,000 batches under a TTL that never passes leave
    50,000 stale candidates unless the index is compacted (to 2 x live + SLACK)."""
    store = _store("value")
    for batch in range(5000):
        store.now = batch
        for key in range(10):
            store.write((str(key),), "x", (batch,))
    assert store.expiry_candidates <= 2 * 10 + SLACK
    store.now = 4999 + TTL_MS  # every value's expiry
    assert store.expire() == 10
    assert store.height == 0


def test_an_element_appended_after_the_clock_went_back_is_removed_at_its_expiry() -> None:
    store = _store("list")
    store.now = 100
    store.write(("a",), "x", [(1,)])  # expires at 100 + TTL
    store.now = 50
    store.append(("a",), "x", [(2,)])  # expires at 50 + TTL: earlier than the first
    store.now = 50 + TTL_MS
    assert store.read(("a",), "x") == [(1,)]
    assert store.expire() == 1
    assert store.rows()["__v_x"].to_list() == [[{"v": 1}]]


def test_the_next_expiry_skips_candidates_of_entries_updated_since() -> None:
    """A value rewritten every 100 ms for a second under a 10 s TTL expires 10 s after
    its last write (900 + 10,000), not after its first: the nine older candidates are
    stale, so a stream gone idle owes no no-data batch before 10,900 (none that would
    remove nothing). The same for a map entry and for a list whose earliest element was
    removed by a put."""
    for kind in ("value", "map", "list"):
        store = _store(kind)
        for now in range(0, 1000, 100):
            store.now = now
            if kind == "value":
                store.write(("a",), "x", (now,))
            elif kind == "map":
                store.map_put(("a",), "x", (1,), (now,))
            else:
                store.write(("a",), "x", [(now,)])  # a put replaces the whole list
        assert store.next_expiry() == 900 + TTL_MS, kind
        store.now = 900 + TTL_MS - 1
        assert store.expire() == 0
        store.now = 900 + TTL_MS
        assert store.expire() == 1, kind
        assert store.next_expiry() is None
