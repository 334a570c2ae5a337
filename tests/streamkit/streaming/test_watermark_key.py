"""Grouping by the watermarked column (or a plain rename of it) without a window (issue 18),
as PySpark 4.3 runs it (the same inputs, Spark-checked batch by batch with its
``numRowsTotal`` and ``numRowsDroppedByWatermark``, are in
``tests/differential/test_watermark_key.py``; the fleet's parity with this engine in
``tests/streamkit/fleet/test_fleet_watermark_above.py``):

- a group whose key is at or before the watermark in force leaves the state (append: it is
  emitted then; update: it was emitted when touched);
- a row whose key is at or before the previous batch's watermark is late (dropped);
- complete mode never evicts nor drops a late row, and owes no no-data batch.

Times are seconds after T0; delay 5 s. B0: W = 95. B1 (in force 95): 10a, 12a, 90q and
95e (95 <= 95) leave; 96e stays. B2: 15a and 95f are late (<= 95), 96f is kept. B3: 200,
W = 195. B4, the no-data batch (in force 195): 96e, 96f, 100z leave.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import polars as pl
import pytest

import streamkit as sk
from streamkit.errors import PlanError
from streamkit.fleet import AggregationStage, FleetPlan, SourceStage
from streamkit.streaming.chain import ChainQuery, make_engine
from streamkit.streaming.incremental import IncrementalQuery, OutputMode
from tests.streamkit.fleet.test_parity_with_engine import step
from tests.streamkit.streaming.test_watermark_above import (
    SHIFT,
    Out,
    Row,
    drive,
    frame,
    restarted,
    rows_of,
    stream,
    us,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

KEY_BATCHES: list[list[Row]] = [
    [(10, "a", 1), (100, "z", 200), (90, "q", 300)],
    [(12, "a", 3), (95, "e", 4), (96, "e", 5)],
    [(15, "a", 5), (95, "f", 6), (96, "f", 7)],
    [(200, "a", 7)],
]
KEYED: dict[str, dict[int, list[Out]]] = {  # (key, k, count, sum of v)
    "update": {
        0: [(10, "a", 1, 1), (90, "q", 1, 300), (100, "z", 1, 200)],
        1: [(12, "a", 1, 3), (95, "e", 1, 4), (96, "e", 1, 5)],
        2: [(96, "f", 1, 7)],
        3: [(200, "a", 1, 7)],
        4: [],
    },
    "append": {
        0: [],
        1: [(10, "a", 1, 1), (12, "a", 1, 3), (90, "q", 1, 300), (95, "e", 1, 4)],
        2: [],
        3: [],
        4: [(96, "e", 1, 5), (96, "f", 1, 7), (100, "z", 1, 200)],
    },
}
KEYED_STATE = [3, 2, 3, 4, 1]
"""Groups held after each batch (Spark's ``numRowsTotal``)."""


def counted(df: sk.DataFrame, *keys: Any) -> sk.DataFrame:
    return df.group_by(*keys).agg(sk.count().alias("n"), sk.sum("v").alias("s"))


SHAPES: dict[str, Callable[[sk.DataFrame], sk.DataFrame]] = {
    "ts_k": lambda d: counted(d, "ts", "k"),
    "k_ts": lambda d: counted(d, "k", "ts").select("ts", "k", "n", "s"),
    "select_alias_ts_dropped": lambda d: counted(
        d.select(sk.col("ts").alias("t"), "k", "v"), "t", "k"
    ),
    "copy_then_original_overwritten": lambda d: counted(
        d.with_column("t", sk.col("ts")).with_column("ts", sk.col("ts") + SHIFT), "t", "k"
    ),
    "alias_in_group_by": lambda d: counted(d, sk.col("ts").alias("t"), "k"),
}
SEVERAL: dict[str, Callable[[sk.DataFrame], sk.DataFrame]] = {
    "two_keys": lambda d: counted(d.with_column("t", sk.col("ts")), "k", "t", "ts"),
    "window_and_key": lambda d: counted(d, sk.window("ts", "10 seconds"), "ts", "k"),
    "two_keys_above_drop_duplicates": lambda d: counted(
        d.drop_duplicates(["k", "ts"]).with_column("t", sk.col("ts")), "t", "ts", "k"
    ),
}


@pytest.mark.parametrize("mode", ["update", "append"])
@pytest.mark.parametrize("name", list(SHAPES))
def test_groups_by_the_watermarked_key_leave_state_and_late_rows_drop(
    name: str, mode: OutputMode
) -> None:
    q = IncrementalQuery(SHAPES[name](stream()).plan, mode)
    out, held, marks = drive(q, KEY_BATCHES)
    assert out == KEYED[mode]
    assert held == KEYED_STATE
    assert marks == [us(95), us(95), us(95), us(195), us(195)]


def test_the_late_rows_of_a_watermarked_key_are_kept_as_read() -> None:
    q = IncrementalQuery(SHAPES["select_alias_ts_dropped"](stream()).plan, "update")
    for batch in KEY_BATCHES[:2]:
        assert not q.run(frame(batch)).late_rows.height
    late = q.run(frame(KEY_BATCHES[2])).late_rows
    assert late.columns == ["ts", "k", "v"]
    assert rows_of(late) == [(15, "a", 5), (95, "f", 6)]


@pytest.mark.parametrize("mode", ["update", "append"])
def test_a_null_key_is_never_late_and_never_leaves(mode: OutputMode) -> None:
    """As Spark (test_watermark_key.py's null_key cases): the group of null keys is
    updated in B1 and B2 (update mode emits it), held to the end, never emitted in append."""
    q = IncrementalQuery(SHAPES["ts_k"](stream()).plan, mode)
    nulls: list[Row | None] = [None, (0, "n", 9), (0, "n", 1), None]
    emitted, held = [], []
    for batch, null in zip(KEY_BATCHES, nulls, strict=True):
        rows = frame(batch if null is None else [*batch, null])
        if null is not None:  # the extra row's ts made null
            rows = rows.with_columns(
                pl.when(pl.col("k") == "n").then(None).otherwise(pl.col("ts")).alias("ts")
            )
        result = q.run(rows)
        assert "n" not in result.late_rows["k"].to_list()
        emitted += result.output.filter(pl.col("ts").is_null()).rows()
        held.append(q.state_rows)
    while q.owes_batch:
        emitted += q.run_no_data().output.filter(pl.col("ts").is_null()).rows()
        held.append(q.state_rows)
    assert held == [3, 3, 4, 5, 2]
    assert emitted == ([(None, "n", 1, 9), (None, "n", 2, 10)] if mode == "update" else [])


def test_complete_mode_never_evicts_nor_drops_by_the_watermarked_key() -> None:
    q = IncrementalQuery(SHAPES["ts_k"](stream()).plan, "complete")
    out, held, _ = drive(q, KEY_BATCHES)
    assert held == [3, 6, 9, 10]  # no no-data batch either
    assert len(out) == 4
    assert (15, "a", 1, 5) in out[3]
    assert (95, "f", 1, 6) in out[3]


@pytest.mark.parametrize("renamed", [False, True])
def test_an_aggregation_by_the_key_of_the_aggregation_below_it(renamed: bool) -> None:
    """Append: group_by(ts, k) then group_by(ts). The first emits a group once ts <= W in
    force; the second takes it and evicts it in the same batch (Spark: it holds 0 rows).
    ``renamed``: the first groups by ``t``, a rename of ts, and the second by ``t``."""
    frame_ = stream().select(sk.col("ts").alias("t"), "k", "v") if renamed else stream()
    key = "t" if renamed else "ts"
    first = frame_.group_by(key, "k").agg(sk.sum("v").alias("v"))
    plan = counted(first, key).plan
    engine = make_engine(plan, "append")
    assert isinstance(engine, ChainQuery)
    out, held, _ = drive(engine, KEY_BATCHES)
    assert out == {
        0: [], 1: [(10, 1, 1), (12, 1, 3), (90, 1, 300), (95, 1, 4)], 2: [], 3: [],
        4: [(96, 2, 12), (100, 1, 200)],
    }  # fmt: skip
    assert held == KEYED_STATE


def test_an_aggregate_named_like_the_event_time_carries_no_watermark() -> None:
    """Spark refuses append here too (max(ts) AS ts has no watermark metadata)."""
    first = stream().group_by(sk.window("ts", "10 seconds"), "k")
    named = first.agg(sk.max("ts").alias("ts"), sk.sum("v").alias("v"))
    with pytest.raises(PlanError, match="without watermark"):
        make_engine(counted(named, "ts").plan, "append")


@pytest.mark.parametrize("name", list(SEVERAL))
def test_several_group_keys_carrying_the_watermark_are_refused_as_spark_fails_them(
    name: str,
) -> None:
    """Spark fails the first batch (MULTIPLE_EVENT_TIME_COLUMNS) in append and update
    mode, and runs the query in complete mode."""
    plan = SEVERAL[name](stream()).plan
    modes: tuple[OutputMode, ...] = ("append", "update")
    for mode in modes:
        with pytest.raises(PlanError, match="MULTIPLE_EVENT_TIME_COLUMNS"):
            make_engine(plan, mode)
    make_engine(plan, "complete")


def test_a_key_computed_from_the_watermarked_column_is_still_refused_in_append() -> None:
    plan = counted(stream().with_column("t", sk.col("ts") + SHIFT), "t", "k").plan
    with pytest.raises(PlanError, match="Invalid streaming output mode: append"):
        IncrementalQuery(plan, "append")


@pytest.mark.parametrize("mode", ["update", "append"])
def test_an_aggregation_by_the_watermarked_key_above_drop_duplicates(mode: OutputMode) -> None:
    """drop_duplicates(k, ts) keeps every row (the pairs are distinct) but drops 15a and
    95f as late; the aggregation above evicts by ts as alone. State: the deduplication's
    keys expire by ts with the same W, so it holds as many as the aggregation."""
    engine = make_engine(counted(stream().drop_duplicates(["k", "ts"]), "ts", "k").plan, mode)
    assert isinstance(engine, ChainQuery)
    out, held, _ = drive(engine, KEY_BATCHES)
    assert out == KEYED[mode]
    assert held == [2 * n for n in KEYED_STATE]


@pytest.mark.parametrize("mode", ["update", "append"])
def test_the_fleet_evicts_by_the_watermarked_key_as_the_engine(mode: OutputMode) -> None:
    """Batch by batch the aggregation tasks emit what the engine emits on KEY_BATCHES,
    with a no-data batch after each one that moves W (``step``): after B0, in force 95,
    so 12a and 95e of B1 are late as well as 15a and 95f of B2."""
    fleet = FleetPlan.of(SHAPES["select_alias_ts_dropped"](stream()).plan, mode)
    assert fleet.key_mark == "t"
    engine = IncrementalQuery(fleet.plan, mode)
    source = SourceStage(fleet)
    stages = [AggregationStage(fleet, query="q") for _ in range(2)]
    top: int | None = None
    engine_late = 0
    for seq, batch in enumerate(KEY_BATCHES):
        top, late = step(
            engine, source, stages, frame(batch), seq=seq, top=top,
            sort=lambda f: f.sort(["t", "k"]),
        )  # fmt: skip
        engine_late += late
    assert sum(s.late_rows for s in stages) == engine_late == 4
    assert sum(s.state_rows for s in stages) == KEYED_STATE[-1]


# -- restart ---------------------------------------------------------------------------
# ``process_all_available`` runs the owed no-data batch at once. b0: KEY_BATCHES[0], W = 95;
# b1 (no data, in force 95): 10a and 90q leave; b2: 12a and 95e are late (<= 95), 96e
# stays. Restart. b3: 15a and 95f are late against the saved 95, 96f is kept; b4: 200,
# W = 195; b5 (no data, in force 195): 96e (held across the restart), 96f and 100z leave.
RESTARTED: dict[str, dict[int, list[Out]]] = {
    "update": {
        0: [(10, "a", 1, 1), (90, "q", 1, 300), (100, "z", 1, 200)],
        1: [], 2: [(96, "e", 1, 5)], 3: [(96, "f", 1, 7)], 4: [(200, "a", 1, 7)], 5: [],
    },
    "append": {
        0: [], 1: [(10, "a", 1, 1), (90, "q", 1, 300)], 2: [], 3: [], 4: [],
        5: [(96, "e", 1, 5), (96, "f", 1, 7), (100, "z", 1, 200)],
    },
}  # fmt: skip


RESTART_SHAPES: dict[str, Callable[[sk.DataFrame], sk.DataFrame]] = {
    "alone": SHAPES["select_alias_ts_dropped"],
    # a chain: drop_duplicates drops the same late rows first; the same output
    "above_drop_duplicates": lambda d: counted(d.drop_duplicates(["k", "ts"]), "ts", "k"),
}


@pytest.mark.parametrize("shape", list(RESTART_SHAPES))
@pytest.mark.parametrize("mode", ["update", "append"])
def test_a_watermarked_key_keeps_its_watermark_and_state_across_a_restart(
    mode: OutputMode, shape: str, tmp_path: Path
) -> None:
    seen, late = restarted(RESTART_SHAPES[shape], KEY_BATCHES, mode, tmp_path)
    assert seen == RESTARTED[mode]
    assert late == [(12, "a", 3), (15, "a", 5), (95, "e", 4), (95, "f", 6)]


# -- above transform_with_state_in_pandas with event_time_column_name="at" (PySpark 4.3:
# tests/differential/test_transform_chains.py, the stamp_key cases). Echo emits each row as
# (k, at = ts, v) and per key a timer at its latest ts + 10 s that emits (k, at = the
# timer, rows seen); delay 5 s, so the watermark in force is none, -2, 7, 20, 35.
# B0: (0,a), (3,b) held. B1: (12,a). B2 (in force 7): (25,b) and (1,a) arrive (a's timer
# moves to 11), then (0,a), (1,a), (3,b) leave (<= 7). B3 (in force 20): (40,a) (a's timer
# moves to 50 before timers fire); (12,a) leaves. B4 (empty file, in force 35): b's timer
# at 35 fires and emits (35, b, 2 rows); (25,b) and (35,b) leave. Held by the aggregation
# 2, 3, 2, 2, 1 and by the processor (a row count per key) 2, 2, 2, 2, 1: Spark's
# numRowsTotal of its two operators.
FUNCTION_BATCHES: list[list[Row]] = [
    [(0, "a", 1), (3, "b", 2)], [(12, "a", 3)], [(25, "b", 4), (1, "a", 5)], [(40, "a", 6)], [],
]  # fmt: skip
ABOVE_FUNCTION: dict[str, dict[int, list[Out]]] = {
    "append": {
        0: [], 1: [], 2: [(0, "a", 1, 1), (1, "a", 1, 5), (3, "b", 1, 2)], 3: [(12, "a", 1, 3)],
        4: [(25, "b", 1, 4), (35, "b", 1, 2)],
    },
    "update": {
        0: [(0, "a", 1, 1), (3, "b", 1, 2)], 1: [(12, "a", 1, 3)],
        2: [(1, "a", 1, 5), (25, "b", 1, 4)], 3: [(40, "a", 1, 6)], 4: [(35, "b", 1, 2)],
    },
}  # fmt: skip
FUNCTION_KEYS: dict[str, Callable[[sk.DataFrame], sk.DataFrame]] = {
    "at_k": lambda d: counted(d, "at", "k"),
    "renamed": lambda d: counted(d.select(sk.col("at").alias("t"), "k", "v"), "t", "k"),
    "alias_in_group_by": lambda d: counted(d, sk.col("at").alias("t"), "k"),
}


@pytest.mark.parametrize("mode", ["update", "append"])
@pytest.mark.parametrize("name", list(FUNCTION_KEYS))
def test_an_aggregation_by_the_event_time_a_processor_passes_on(
    name: str, mode: OutputMode
) -> None:
    from tests.streamkit.streaming.test_transform_chain import OUT, Echo

    emitted = (
        stream()
        .group_by("k")
        .transform_with_state_in_pandas(Echo(), OUT, mode, "EventTime", event_time_column_name="at")
    )
    engine = make_engine(FUNCTION_KEYS[name](emitted).plan, mode)
    assert isinstance(engine, ChainQuery)
    out, held, _ = drive(engine, FUNCTION_BATCHES)
    assert out == ABOVE_FUNCTION[mode]
    assert held == [4, 5, 4, 4, 2]
