"""An aggregation above a windowed aggregation grouped by its window struct (issue 18),
server-free: the window of the aggregation below carries the watermark (Spark's grouping
attribute keeps the window's event-time metadata), and the aggregation above evicts its
groups and judges late rows by the window's ``end``, as Spark does for a window struct.
The same shapes against PySpark 4.3: ``tests/differential/test_window_struct_chains.py``.

Times are seconds after T0; delay 5 s; ``KEY_BATCHES`` of test_watermark_key.py, one a
batch, then the no-data batch B4. The first aggregation, ``v = sum(v)`` per (10 s window
of ``ts``, ``k``): B0 opens [10, 20) a 1, [90, 100) q 300, [100, 110) z 200 (W = 95
after it); B1 (in force 95) adds 12a ([10, 20) a 4) and 95e, 96e ([90, 100) e 9) and
closes [10, 20) (20 <= 95); in B2 15a is late ([10, 20) ended at 20 <= 95) and 95f, 96f
open [90, 100) f 13; B3's 200a opens [200, 210) and moves W to 195; the no-data B4 closes
[90, 100) (q, e, f) and [100, 110) z. It holds 3, 3, 4, 5, 1 groups. The aggregation above
gets each closed window in the batch it closes, whose end is at or before the watermark
in force, so it emits each of its groups there and holds none:

- per ``window`` (``BY_WINDOW``: (start, count, sum)): B1 (10, 1, 4); B4 (90, 3, 322),
  (100, 1, 200); the same per a rename ``w`` of it, per ``col("window").alias("w")``, and
  above a middle ``(window, k)`` count whose ``s`` is renamed ``v`` (three aggregations);
- per ``(window, k)``: B1 (10, a, 1, 4); B4 (90, e, 1, 9), (90, f, 1, 13),
  (90, q, 1, 300), (100, z, 1, 200);
- sliding 10 s / 5 s below (a row in [t5 - 5, t5 + 5) and [t5, t5 + 10), t5 = t floored
  to 5 s): B1 closes [5, 15) a 4, [10, 20) a 4, [85, 95) q 300; 15a is late in B2 (its
  last window ends at 25 <= 95); B4 closes [90, 100) q 300 e 9 f 13, [95, 105) z 200 e 9
  f 13, [100, 110) z 200. Held below: 6, 5, 7, 9, 2;
- per 20 s window of ``window_time("w")`` (``w`` a rename of ``window``), and of
  ``window_time("window")`` above a middle ``(window, k)`` aggregation that passes the
  window on as a key: B1 (0, 1, 4); B4 (80, 3, 322), (100, 1, 200).

Refused as Spark refuses (PySpark 4.3): ``window.start`` or ``window.end`` carries no
watermark; the window and a window on its ``window_time`` are two event times; update and
complete mode above an aggregation; the session window below as the only key (Spark
fails the batch). Grouped by the session window below and another key, it is Spark's
session window aggregation: the sessions of rows with equal other keys that overlap or
touch merge.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

import streamkit as sk
from streamkit.errors import PlanError
from streamkit.streaming.chain import ChainQuery, make_engine
from streamkit.streaming.incremental import OutputMode
from tests.streamkit.streaming.test_watermark_above import (
    Out,
    drive,
    frame,
    restarted,
    seconds,
    stream,
)
from tests.streamkit.streaming.test_watermark_key import KEY_BATCHES

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

TEN = "10 seconds"
BY_WINDOW: dict[int, list[Out]] = {
    0: [], 1: [(10, 1, 4)], 2: [], 3: [], 4: [(90, 3, 322), (100, 1, 200)],
}  # fmt: skip
BY_WINDOW_K: dict[int, list[Out]] = {
    0: [], 1: [(10, "a", 1, 4)], 2: [], 3: [],
    4: [(90, "e", 1, 9), (90, "f", 1, 13), (90, "q", 1, 300), (100, "z", 1, 200)],
}  # fmt: skip
SLIDING: dict[int, list[Out]] = {
    0: [], 1: [(5, 1, 4), (10, 1, 4), (85, 1, 300)], 2: [], 3: [],
    4: [(90, 3, 322), (95, 3, 222), (100, 1, 200)],
}  # fmt: skip
BELOW = [3, 3, 4, 5, 1]
"""Groups the first aggregation holds after each batch (the one above holds none)."""


def windowed(df: sk.DataFrame, slide: str | None = None) -> sk.DataFrame:
    """The first aggregation: ``v = sum(v)`` per (10 s window of ``ts``, ``k``)."""
    return df.group_by(sk.window("ts", TEN, slide), "k").agg(sk.sum("v").alias("v"))


def top(df: sk.DataFrame, *keys: Any) -> sk.DataFrame:
    return df.group_by(*keys).agg(sk.count().alias("n"), sk.sum("v").alias("s"))


def _renamed_below(d: sk.DataFrame) -> sk.DataFrame:
    return windowed(d).select(sk.col("window").alias("w"), "k", "v")


def _renamed(d: sk.DataFrame) -> sk.DataFrame:
    return top(_renamed_below(d), "w")


def _three(d: sk.DataFrame) -> sk.DataFrame:
    middle = top(windowed(d), "window", "k").select("window", "k", sk.col("s").alias("v"))
    return top(middle, "window")


SHAPES: dict[str, tuple[Callable[[sk.DataFrame], sk.DataFrame], dict[int, list[Out]], list[int]]]
SHAPES = {
    "by_window": (lambda d: top(windowed(d), "window"), BY_WINDOW, BELOW),
    "by_window_and_k": (lambda d: top(windowed(d), "window", "k"), BY_WINDOW_K, BELOW),
    "renamed": (_renamed, BY_WINDOW, BELOW),
    "alias_in_group_by": (
        lambda d: top(windowed(d), sk.col("window").alias("w")), BY_WINDOW, BELOW
    ),
    "three_aggregations": (_three, BY_WINDOW, BELOW),
    "sliding_below": (
        lambda d: top(windowed(d, "5 seconds"), "window"), SLIDING, [6, 5, 7, 9, 2]
    ),
    # 20 s windows of window_time(w) (the end minus 1 us): [10, 20) in [0, 20); [90, 100)
    # in [80, 100); [100, 110) in [100, 120)
    "window_on_the_renamed_window": (
        lambda d: top(_renamed_below(d), sk.window(sk.window_time("w"), "20 seconds")),
        {0: [], 1: [(0, 1, 4)], 2: [], 3: [], 4: [(80, 3, 322), (100, 1, 200)]}, BELOW,
    ),
    # per window above v = sum(v) per 20 s window of window_time("window"), whose windows
    # close as they arrive: [0, 20) v 4 in B1; [80, 100) v 322 and [100, 120) v 200 in B4
    "above_a_window_on_window_time": (
        lambda d: top(
            windowed(d).group_by(sk.window(sk.window_time("window"), "20 seconds"))
            .agg(sk.sum("v").alias("v")),
            "window",
        ),
        {0: [], 1: [(0, 1, 4)], 2: [], 3: [], 4: [(80, 1, 322), (100, 1, 200)]}, BELOW,
    ),
    # the window passed on as a key by a middle (window, k) aggregation, then a 20 s
    # window of its window_time: B1 [0, 20) gets a 4; B4 [80, 100) q 300, e 9, f 13 (3
    # rows) and [100, 120) z 200
    "window_on_the_window_a_key_passed_on": (
        lambda d: top(
            top(windowed(d), "window", "k").select("window", "k", sk.col("s").alias("v")),
            sk.window(sk.window_time("window"), "20 seconds"),
        ),
        {0: [], 1: [(0, 1, 4)], 2: [], 3: [], 4: [(80, 3, 322), (100, 1, 200)]}, BELOW,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(SHAPES))
def test_an_aggregation_by_the_window_below_evicts_by_its_end(name: str) -> None:
    build, expected, held = SHAPES[name]
    engine = make_engine(build(stream()).plan, "append")
    assert isinstance(engine, ChainQuery)
    out, state, _ = drive(engine, KEY_BATCHES)
    assert out == expected
    assert state == held


def test_the_window_keeps_its_watermark_across_a_restart(tmp_path: Path) -> None:
    """KEY_BATCHES one at a time (each owed no-data batch run), a restart after the
    second. b0: W = 95; b1 (no data, in force 95) closes [10, 20) a 1; b2: 12a is late
    ([10, 20) ended), 95e and 96e open [90, 100) e. Restart. b3: 15a late against the
    saved 95; b4: 200a, W = 195; b5 (no data) closes [90, 100) (q, e held across the
    restart, f) and [100, 110) z."""
    seen, late = restarted(lambda d: top(windowed(d), "window"), KEY_BATCHES, "append", tmp_path)
    assert seen == {
        0: [], 1: [(10, 1, 1)], 2: [], 3: [], 4: [], 5: [(90, 3, 322), (100, 1, 200)],
    }  # fmt: skip
    assert late == [(12, "a", 3), (15, "a", 5)]


REFUSED: dict[str, tuple[Callable[[sk.DataFrame], sk.DataFrame], str]] = {
    # Spark: STREAMING_OUTPUT_MODE.UNSUPPORTED_OPERATION (a struct field carries none)
    "by_start": (lambda d: top(d, sk.col("window").get_field("start")), "without watermark"),
    "by_end": (lambda d: top(d, sk.col("window").get_field("end")), "without watermark"),
    # Spark fails the first batch
    "window_and_a_window_on_it": (
        lambda d: top(d, "window", sk.window(sk.window_time("window"), "20 seconds")),
        "MULTIPLE_EVENT_TIME_COLUMNS",
    ),
    "renamed_and_a_window_on_it": (
        lambda d: top(
            d.select(sk.col("window").alias("w"), "v"),
            "w",
            sk.window(sk.window_time("w"), "20 seconds"),
        ),
        "MULTIPLE_EVENT_TIME_COLUMNS",
    ),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_what_spark_refuses_above_the_window_is_refused(name: str) -> None:
    build, reason = REFUSED[name]
    with pytest.raises(PlanError, match=reason):
        make_engine(build(windowed(stream())).plan, "append")


@pytest.mark.parametrize("mode", ["update", "complete"])
def test_other_modes_are_spark_s_correctness_refusal(mode: OutputMode) -> None:
    with pytest.raises(PlanError, match="correctness"):
        make_engine(top(windowed(stream()), "window").plan, mode)


def _sessions(d: sk.DataFrame) -> sk.DataFrame:
    """``v = sum(v)`` per (5 s session of ``ts``, ``k``), and ``x = 1``."""
    below = d.group_by(sk.session_window("ts", "5 seconds"), "k").agg(sk.sum("v").alias("v"))
    return below.with_column("x", sk.lit(1))


def test_the_session_window_below_alone_is_refused() -> None:
    """Spark fails the batch: a session window aggregation needs another key."""
    with pytest.raises(PlanError, match="Global aggregation with session window"):
        make_engine(top(_sessions(stream()), "window").plan, "append")


@pytest.mark.parametrize(
    ("other", "expected"),
    [
        # per k, the sessions emitted together never overlap: one group each
        ("k", {0: [], 1: [(10, "a", 1, 4), (90, "q", 1, 300)], 2: [], 3: [],
               4: [(95, "e", 1, 9), (95, "f", 1, 13), (100, "z", 1, 200)]}),
        # per x = 1: e [95, 101), f [95, 101) and z [100, 105), closed together in B4,
        # merge into [95, 105)
        ("x", {0: [], 1: [(10, 1, 1, 4), (90, 1, 1, 300)], 2: [], 3: [],
               4: [(95, 1, 3, 222)]}),
    ],
)  # fmt: skip
def test_the_sessions_below_merge_per_the_other_keys(other: str, expected: Any) -> None:
    """Spark plans an aggregation grouped by the session window below and another key as
    a session window aggregation: sessions of equal other keys that overlap merge. The
    sessions below (5 s gap, KEY_BATCHES): [10, 17) a 4 and [90, 95) q 300 close in B1
    (15a is late in B2: its session would end at 20 <= 95); [95, 101) e 9, [95, 101) f 13
    and [100, 105) z 200 in B4. Held below: 3, 2, 3, 4, 1."""
    engine = make_engine(top(_sessions(stream()), "window", other).plan, "append")
    out, held, _ = drive(engine, KEY_BATCHES)
    assert out == expected
    assert held == [3, 2, 3, 4, 1]


def test_merged_sessions_merge_again_above() -> None:
    """``v = sum(v)`` per (session, k, x) above the sessions (one session each), then per
    (session, x): the session window passes on, and e, f, z merge as above."""
    middle = _sessions(stream()).group_by("window", "k", "x").agg(sk.sum("v").alias("v"))
    out, held, _ = drive(make_engine(top(middle, "window", "x").plan, "append"), KEY_BATCHES)
    assert out == {0: [], 1: [(10, 1, 1, 4), (90, 1, 1, 300)], 2: [], 3: [], 4: [(95, 1, 3, 222)]}
    assert held == [3, 2, 3, 4, 1]


def test_touching_sessions_merge() -> None:
    """One batch: a [10, 15), b [15, 20), c [30, 35), d [33, 38), z [60, 65) (W = 55);
    the no-data batch closes the first four. Per x = 1, [10, 15) and [15, 20) touch and
    merge (a start at the latest end before it joins, as in Spark), and so do the
    overlapping [30, 35) and [33, 38): (start, end, n, s) = (10, 20, 2, 3),
    (30, 38, 2, 7)."""
    engine = make_engine(top(_sessions(stream()), "window", "x").plan, "append")
    engine.run(frame([(10, "a", 1), (15, "b", 2), (30, "c", 3), (33, "d", 4), (60, "z", 9)]))
    assert engine.owes_batch
    rows = engine.run_no_data().output.to_dicts()
    got = sorted(
        (seconds(r["window"]["start"]), seconds(r["window"]["end"]), r["n"], r["s"]) for r in rows
    )
    assert got == [(10, 20, 2, 3), (30, 38, 2, 7)]


def test_a_fleet_refuses_it() -> None:
    """A fleet runs no operator above an aggregation (one exchange: README, Running on many
    machines, Chains)."""
    from streamkit.fleet.fleet_plan import FleetPlan

    with pytest.raises(PlanError, match=r"stateful operator over an aggregation.*streamkit run"):
        FleetPlan.of(top(windowed(stream()), "window").plan, "append")
