"""A group key carrying the watermark deeper in a chain (issue 18), server-free: an
aggregation grouped by such a key passes the watermark on in it wherever it sits in the
chain, so an aggregation above it, grouped by that key (or a rename of it) or by a
window on it, evicts by it in append mode. The same shapes against PySpark 4.3:
``tests/differential/test_watermark_key_chains.py``.

Times are seconds after T0; delay 5 s; ``KEY_BATCHES`` of test_watermark_key.py. The
middle aggregation ``v = sum(v)`` per ``(ts, k)`` sees 10a, 90q, 100z (W = 95 after B0);
12a, 95e, 96e; then 15a and 95f are late (<= 95, dropped below it) and 96f kept; 200a
moves W to 195, and the no-data batch B4 runs in force 195. It emits a group once its
``ts`` <= W in force: 10a(1), 12a(3), 90q(300), 95e(4) in B1; 96e(5), 96f(7), 100z(200)
in B4. The top aggregation gets those rows in the same batch and, by the same W:

- per ``ts`` (``BY_TS``, (ts, count, sum)): emits each group at once (holds none): B1
  (10, 1, 1), (12, 1, 3), (90, 1, 300), (95, 1, 4); B4 (96, 2, 12), (100, 1, 200);
- per 10 s window of ``ts`` (``BY_WINDOW``, (start, count, sum)): B1 closes [10, 20)
  (2, 4) and keeps [90, 100); B4 adds 96e and 96f to it (4, 316) and closes it and
  [100, 110) (1, 200). It holds 0, 1, 1, 1, 0 windows.

Rows held (all operators): ``drop_duplicates(k, ts)`` holds as many keys as the middle
aggregation groups (3, 2, 3, 4, 1: a key expires when its ts <= W);
``drop_duplicates_within_watermark`` keeps a key until ts + 5 s <= W (3, 3, 4, 5, 1).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest

import streamkit as sk
from streamkit.errors import PlanError
from streamkit.streaming.chain import ChainQuery, make_engine
from streamkit.streaming.incremental import OutputMode
from tests.streamkit.streaming.test_watermark_above import Out, drive, restarted, stream
from tests.streamkit.streaming.test_watermark_key import FUNCTION_BATCHES, KEY_BATCHES

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

BY_TS: dict[int, list[Out]] = {
    0: [], 1: [(10, 1, 1), (12, 1, 3), (90, 1, 300), (95, 1, 4)], 2: [], 3: [],
    4: [(96, 2, 12), (100, 1, 200)],
}  # fmt: skip
BY_WINDOW: dict[int, list[Out]] = {
    0: [], 1: [(10, 2, 4)], 2: [], 3: [], 4: [(90, 4, 316), (100, 1, 200)],
}  # fmt: skip
MIDDLE = [3, 2, 3, 4, 1]
"""Groups the middle aggregation holds after each batch."""
WINDOWS = [0, 1, 1, 1, 0]
WITHIN = [3, 3, 4, 5, 1]
"""Keys ``drop_duplicates_within_watermark`` holds."""


def middle(df: sk.DataFrame, *keys: Any) -> sk.DataFrame:
    return df.group_by(*keys).agg(sk.sum("v").alias("v"))


def top(df: sk.DataFrame, *keys: Any) -> sk.DataFrame:
    return df.group_by(*keys).agg(sk.count().alias("n"), sk.sum("v").alias("s"))


def _deduped(d: sk.DataFrame) -> sk.DataFrame:
    return d.drop_duplicates(["k", "ts"])


def _plus(*parts: list[int]) -> list[int]:
    return [sum(p) for p in zip(*parts, strict=True)]


TEN = sk.window("ts", "10 seconds")
SHAPES: dict[str, tuple[Callable[[sk.DataFrame], sk.DataFrame], dict[int, list[Out]], list[int]]]
SHAPES = {
    "dedup_agg_then_key": (
        lambda d: top(middle(_deduped(d), "ts", "k"), "ts"), BY_TS, _plus(MIDDLE, MIDDLE)
    ),
    "dedup_within_agg_then_key": (
        lambda d: top(middle(d.drop_duplicates_within_watermark(["k", "ts"]), "ts", "k"), "ts"),
        BY_TS, _plus(WITHIN, MIDDLE),
    ),
    "dedup_agg_then_window": (
        lambda d: top(middle(_deduped(d), "ts", "k"), TEN), BY_WINDOW,
        _plus(MIDDLE, MIDDLE, WINDOWS),
    ),
    "agg_then_window": (
        lambda d: top(middle(d, "ts", "k"), TEN), BY_WINDOW, _plus(MIDDLE, WINDOWS)
    ),
    "dedup_agg_renamed_then_key": (
        lambda d: top(
            middle(_deduped(d), "ts", "k").select(sk.col("ts").alias("t"), "v"), "t"
        ),
        BY_TS, _plus(MIDDLE, MIDDLE),
    ),
    "dedup_alias_agg_then_key": (
        lambda d: top(middle(_deduped(d), sk.col("ts").alias("t"), "k"), "t"),
        BY_TS, _plus(MIDDLE, MIDDLE),
    ),
    "renamed_dedup_agg_then_key": (
        lambda d: top(
            middle(d.select(sk.col("ts").alias("t"), "k", "v").drop_duplicates(["k", "t"]),
                   "t", "k"),
            "t",
        ),
        BY_TS, _plus(MIDDLE, MIDDLE),
    ),
    # (ts, k, w) below (ts, k): each row is its own group at the bottom, emitted as the
    # middle's would be; the two above it evict what they get at once
    "agg_agg_then_key": (
        lambda d: top(middle(middle(d, "ts", "k", sk.col("v").alias("w")), "ts", "k"), "ts"),
        BY_TS, MIDDLE,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(SHAPES))
def test_an_aggregation_above_a_deeper_key_carrying_the_watermark_evicts_by_it(name: str) -> None:
    build, expected, held = SHAPES[name]
    engine = make_engine(build(stream()).plan, "append")
    assert isinstance(engine, ChainQuery)
    out, state, _ = drive(engine, KEY_BATCHES)
    assert out == expected
    assert state == held


def test_above_a_processor_an_aggregation_by_its_event_time_passes_it_on() -> None:
    """Echo (``event_time_column_name="at"``; W in force none, -2, 7, 20, 35; batches of
    test_watermark_key.py), then ``(at, k)`` then per ``at``: the middle aggregation emits
    (0 a), (1 a), (3 b) in B2, (12 a) in B3, (25 b) and b's timer row (35 b, v 2) in B4;
    the top one emits each there. Held: the processor's 2, 2, 2, 2, 1 and the middle
    aggregation's 2, 3, 2, 2, 1."""
    from tests.streamkit.streaming.test_transform_chain import OUT, Echo

    emitted = (
        stream()
        .group_by("k")
        .transform_with_state_in_pandas(
            Echo(), OUT, "append", "EventTime", event_time_column_name="at"
        )
    )
    plan = top(middle(emitted, "at", "k"), "at").plan
    out, held, _ = drive(make_engine(plan, "append"), FUNCTION_BATCHES)
    assert out == {
        0: [], 1: [], 2: [(0, 1, 1), (1, 1, 5), (3, 1, 2)], 3: [(12, 1, 3)],
        4: [(25, 1, 4), (35, 1, 2)],
    }  # fmt: skip
    assert held == [4, 5, 4, 4, 2]


def test_above_a_join_an_aggregation_by_the_key_passes_it_on(tmp_path: Path) -> None:
    """``lk = rk AND rt BETWEEN lt AND lt + 10 s`` (delays 5 s) on HAND_PROBE's files (the
    join passes on W - 10.001 s: 87.999, 114.999, 119.999 and 184.999 in force from batch
    1), ``v = sum(rv)`` per ``(lt, lk)``: pairs give lt 100 -> 10 + 12, 103 -> 10 + 12,
    101 -> 10 + 12 (batch 2), 130 -> 11 + 13, 135 -> 13. 100, 101, 103 leave in batch 2,
    130 and 135 in the no-data batch 4, and the count per ``lt`` above emits each there.
    Held (join buffers + middle groups): 5, 8, 6, 9, 3."""
    from tests.differential.test_joins_stream_agg import HAND_PROBE, run_streamkit, write_case
    from tests.differential.test_watermark_key_chains import JoinKeys

    ours, held = run_streamkit(JoinKeys("renamed"), write_case(tmp_path, HAND_PROBE))
    us = 1_704_067_200_000_000  # T0 in epoch microseconds

    def t(second: int) -> int:
        return us + second * 1_000_000

    assert ours == [
        (0, []), (1, []), (2, [(t(100), 1, 22), (t(101), 1, 22), (t(103), 1, 22)]), (3, []),
        (4, [(t(130), 1, 24), (t(135), 1, 13)]),
    ]  # fmt: skip
    assert held == [5, 8, 6, 9, 3]


def test_above_a_join_a_rename_reaches_a_window_through_drop_duplicates(tmp_path: Path) -> None:
    """The same join, ``lt`` renamed ``t``, ``drop_duplicates(["lk", "t"])``, a count per
    10 s window of ``t``. Pairs by lt: 100, 103 (B0); 130 (B1); 101 twice, 100, 103, 130
    and 135 (B2), the repeats dropped. [100, 110) holds 100, 101, 103 and closes in B2
    (110 <= 114.999); [130, 140) holds 130, 135 and closes in the no-data batch 4. Held:
    join buffers 3, 5, 4, 6, 2 + dedup keys 2, 3, 2, 3, 1 (a key leaves when t <= the
    join's watermark) + windows 1, 2, 1, 2, 1."""
    from tests.differential.test_joins_stream_agg import HAND_PROBE, run_streamkit, write_case
    from tests.differential.test_watermark_key_chains import JoinKeys

    ours, held = run_streamkit(JoinKeys("dedup_window"), write_case(tmp_path, HAND_PROBE))
    us = 1_704_067_200_000_000  # T0 in epoch microseconds

    def window(start: int) -> tuple[int, int]:
        return us + start * 1_000_000, us + (start + 10) * 1_000_000

    assert ours == [
        (0, []), (1, []), (2, [(*window(100), 3)]), (3, []), (4, [(*window(130), 2)]),
    ]  # fmt: skip
    assert held == [6, 10, 7, 11, 4]


def test_a_deeper_key_keeps_its_watermark_across_a_restart(tmp_path: Path) -> None:
    """KEY_BATCHES one at a time (``process_all_available`` runs each owed no-data batch),
    a restart after the second. b0: W = 95; b1 (no data, in force 95): 10a and 90q leave
    both aggregations; b2: 12a and 95e are late, 96e stays. Restart. b3: 15a and 95f are
    late against the saved 95; b4: 200, W = 195; b5 (no data): 96e (held across the
    restart), 96f and 100z leave the middle one, and the top one emits (96, 2, 12) and
    (100, 1, 200)."""
    seen, late = restarted(
        lambda d: top(middle(_deduped(d), "ts", "k"), "ts"), KEY_BATCHES, "append", tmp_path
    )
    assert seen == {
        0: [], 1: [(10, 1, 1), (90, 1, 300)], 2: [], 3: [], 4: [],
        5: [(96, 2, 12), (100, 1, 200)],
    }  # fmt: skip
    assert late == [(12, "a", 3), (15, "a", 5), (95, "e", 4), (95, "f", 6)]


REFUSED: dict[str, tuple[Callable[[sk.DataFrame], sk.DataFrame], str]] = {
    # Spark: STREAMING_OUTPUT_MODE.UNSUPPORTED_OPERATION (no watermark above)
    "computed_key": (
        lambda m: top(m.select((sk.col("ts") + timedelta(seconds=1)).alias("t"), "v"), "t"),
        "without watermark",
    ),
    "by_k_only": (lambda m: top(m, "k"), "without watermark.*group it by 'ts'"),
    # Spark fails the first batch
    "two_keys": (
        lambda m: top(m.select("ts", sk.col("ts").alias("t"), "v"), "ts", "t"),
        "MULTIPLE_EVENT_TIME_COLUMNS",
    ),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_what_spark_refuses_above_a_deeper_key_is_refused(name: str) -> None:
    build, reason = REFUSED[name]
    plan = build(middle(_deduped(stream()), "ts", "k")).plan
    with pytest.raises(PlanError, match=reason):
        make_engine(plan, "append")


@pytest.mark.parametrize("mode", ["update", "complete"])
def test_other_modes_above_the_middle_aggregation_are_spark_s_correctness_refusal(
    mode: OutputMode,
) -> None:
    plan = top(middle(_deduped(stream()), "ts", "k"), TEN).plan
    with pytest.raises(PlanError, match="correctness"):
        make_engine(plan, mode)
