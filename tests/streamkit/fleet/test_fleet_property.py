"""The fleet's key property: S source shards, N aggregation stages, random batches,
interleavings that keep each shard's order and re-emitted chunks; the union of the
stages' results equals DuckDB's GROUP BY over all rows (:func:`sim.oracle`)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from tests.streamkit.fleet import sim

TYPES = {"ws": pl.Int64, "we": pl.Int64, "k": pl.String, "n": pl.Int64, "s": pl.Int64,
         "a": pl.Float64, "lo": pl.Int64, "hi": pl.Int64}  # fmt: skip
CASES = [
    ("tumbling", "update"), ("tumbling", "complete"), ("tumbling", "append"),
    ("sliding", "update"), ("sliding", "complete"), ("sliding", "append"),
    ("session", "complete"), ("session", "append"), ("none", "update"), ("none", "complete"),
]  # fmt: skip
DELAY_MIN = 200
FLUSH = sim.T0 + timedelta(minutes=120 + DELAY_MIN + 60)


def _typed(frame: pl.DataFrame) -> pl.DataFrame:
    cols = [c for c in TYPES if c in frame.columns]
    return frame.select(pl.col(c).cast(TYPES[c]) for c in cols)


def _flush_rows() -> pl.DataFrame:
    """One row far after the data: moves every shard's watermark past all data windows."""
    return pl.DataFrame({"k": ["zz"], "v": [0], "t": [FLUSH]}, schema=sim.SCHEMA)


def fleet_result(fleet: sim.Fleet, mode: str, keys: list[str]) -> pl.DataFrame:
    """The fleet's result as a reader of the sink sees it."""
    parts = []
    for sink in fleet.outputs:
        outputs = [sink[bid] for bid in sorted(sink)]
        if mode == "complete":
            parts.append(outputs[-1])
        elif mode == "update":
            got = pl.concat([sim.flat(o) for o in outputs if o.height] or [pl.DataFrame()])
            parts.append(got.unique(keys, keep="last", maintain_order=True) if got.height else got)
        else:
            parts += outputs
    frames = [_typed(sim.flat(p)) for p in parts if p.height]
    return pl.concat(frames).sort(keys, nulls_last=True)


@pytest.mark.parametrize(("window", "mode"), CASES)
@pytest.mark.parametrize("seed", [1, 2])
def test_the_fleet_equals_a_group_by_over_all_rows(window: str, mode: str, seed: int) -> None:
    rows = sim.table(seed, 600, keys=40 if window == "none" else 7)  # enough to split chunks
    fleet = sim.Fleet(sim.plan(window, mode, f"{DELAY_MIN} minutes"), sim.shards(rows, 4, seed),
                      n=3, seed=seed)  # fmt: skip
    flush = _flush_rows() if mode == "append" else None
    fleet.run(flush)
    keys = ["k"] if window == "none" else ["ws", "we", "k"]
    got = fleet_result(fleet, mode, keys)
    everything = pl.concat([rows, flush]) if flush is not None else rows
    want = _typed(sim.oracle(everything, window))
    if mode == "append":  # emitted: exactly the windows the final watermark closed, once
        marks = {stage.fleet_watermark for stage in fleet.stages}
        assert len(marks) == 1
        (mark,) = marks
        want = want.filter(pl.col("we") <= mark)
        assert got.select(keys).is_duplicated().sum() == 0
    assert_frame_equal(got, want.sort(keys, nulls_last=True), check_exact=False)
    assert sum(s.duplicates_dropped for s in fleet.stages) > 0  # the re-emissions were seen
    assert fleet.split_batches > 0  # and chunks in several parts



@pytest.mark.parametrize(("window", "mode"), [("tumbling", "append"), ("sliding", "update"),
                                              ("session", "append"), ("none", "complete")])
def test_stages_restarted_from_their_checkpoints_give_the_same_result(
    window: str, mode: str, tmp_path: Path
) -> None:
    seed = 5
    rows = sim.table(seed, 500)
    fleet = sim.Fleet(sim.plan(window, mode, f"{DELAY_MIN} minutes"), sim.shards(rows, 3, seed),
                      n=2, seed=seed, crash_rate=0.15, checkpoints=tmp_path)  # fmt: skip
    flush = _flush_rows() if mode == "append" else None
    fleet.run(flush)
    keys = ["k"] if window == "none" else ["ws", "we", "k"]
    got = fleet_result(fleet, mode, keys)
    everything = pl.concat([rows, flush]) if flush is not None else rows
    want = _typed(sim.oracle(everything, window))
    if mode == "append":
        (mark,) = {stage.fleet_watermark for stage in fleet.stages}
        want = want.filter(pl.col("we") <= mark)
        assert got.select(keys).is_duplicated().sum() == 0
    assert fleet.restarts > 5
    assert_frame_equal(got, want.sort(keys, nulls_last=True), check_exact=False)


@pytest.mark.parametrize(("shards", "partitions"), [(1, 1), (1, 4), (6, 1), (7, 5)])
def test_any_number_of_shards_and_partitions(shards: int, partitions: int) -> None:
    seed = 8
    rows = sim.table(seed, 400)
    fleet = sim.Fleet(sim.plan("session", "append", f"{DELAY_MIN} minutes"),
                      sim.shards(rows, shards, seed), n=partitions, seed=seed)  # fmt: skip
    fleet.run(_flush_rows())
    keys = ["ws", "we", "k"]
    got = fleet_result(fleet, "append", keys)
    (mark,) = {stage.fleet_watermark for stage in fleet.stages}
    want = _typed(sim.oracle(pl.concat([rows, _flush_rows()]), "session"))
    assert got.select(keys).is_duplicated().sum() == 0
    want = want.filter(pl.col("we") <= mark).sort(keys, nulls_last=True)
    assert_frame_equal(got, want, check_exact=False)


@pytest.mark.parametrize("window", ["tumbling", "sliding", "session"])
@pytest.mark.parametrize("expect", [True, False])
def test_append_with_a_short_delay_emits_every_window_once_while_shards_start_late(
    window: str, expect: bool
) -> None:
    """Each shard's rows in time order and a 5-minute delay: windows close during the run
    and shards start reading at random moments. Told which shards exist, no stage judges a
    row late, so the windows the final watermark closed are emitted once each with
    DuckDB's values. Not told, the first shard heard from moves the watermark past rows
    other shards have not sent yet: rows are lost (the case the lead's note reported)."""
    seed = 21
    rows = sim.table(seed, 800)
    fleet = sim.Fleet(sim.plan(window, "append", "5 minutes"), sim.shards(rows, 4, seed),
                      n=3, seed=seed, expect=expect)  # fmt: skip
    fleet.run(_flush_rows())
    keys = ["ws", "we", "k"]
    got = fleet_result(fleet, "append", keys)
    (mark,) = {stage.fleet_watermark for stage in fleet.stages}
    want = _typed(sim.oracle(pl.concat([rows, _flush_rows()]), window))
    want = want.filter(pl.col("we") <= mark).sort(keys, nulls_last=True)
    late = sum(stage.late_rows for stage in fleet.stages)
    if not expect:
        assert late > 0
        return
    assert late == 0
    assert len([o for sink in fleet.outputs for o in sink.values() if o.height]) > 3
    assert got.select(keys).is_duplicated().sum() == 0
    assert_frame_equal(got, want, check_exact=False)
