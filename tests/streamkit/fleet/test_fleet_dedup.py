"""``drop_duplicates`` on a fleet, server-free: with one source shard whose every batch
reaches every partition as one batch, the fleet's watermark is the single-process
engine's, so batch by batch the union of the stages' outputs (and late rows, and keys held)
equals what IncrementalQuery emits on the same batches, also across a restore of every
stage from its checkpoint; with many shards and re-emitted chunks, the result equals
DuckDB's DISTINCT over the rows."""

from __future__ import annotations

import random
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pytest
from polars.testing import assert_frame_equal

import streamkit as sk
from streamkit.errors import PlanError
from streamkit.fleet import AggregationStage, FleetPlan, SourceStage
from streamkit.streaming.checkpoint import CheckpointLog
from streamkit.streaming.checkpoint_store import LocalCheckpointStore
from streamkit.streaming.incremental import IncrementalQuery

from . import sim
from .test_parity_with_engine import checkpoint_all, step


def _stream() -> sk.DataFrame:
    empty = pa.table({"k": pa.array([], pa.string()), "v": pa.array([], pa.int64()),
                      "t": pa.array([], pa.timestamp("us", "UTC"))})  # fmt: skip
    return sk.from_arrow(empty)


def _plan(subset: list[str] | None, within: bool, delay: str = "15 minutes") -> FleetPlan:
    df = _stream().with_watermark("t", delay).filter(sk.col("v") > -40)
    deduped = df.drop_duplicates_within_watermark(subset) if within else df.drop_duplicates(subset)
    return FleetPlan.of(deduped.select("k", "t", "v").plan, "append")


def _rows(seed: int, n: int) -> pl.DataFrame:
    """Rows with about a third repeated (same values), in random order."""
    rng = random.Random(seed)
    base = sim.table(seed, n, span_min=120, keys=5)
    again = base.sample(n // 3, seed=seed, with_replacement=True)
    both = pl.concat([base, again])
    order = list(range(both.height))
    rng.shuffle(order)
    return both[order]


def _sorted(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(["k", "t", "v"], nulls_last=True)


CASES = [(["k", "t"], False), (["k"], False), (None, False), (["k"], True), (["k", "t"], True)]


@pytest.mark.parametrize(("subset", "within"), CASES)
def test_batch_by_batch_the_fleet_deduplicates_as_the_engine(
    subset: list[str] | None, within: bool, tmp_path: Path
) -> None:
    rng = random.Random(14)
    rows = _rows(14, 300)
    fleet = _plan(subset, within)
    engine = IncrementalQuery(fleet.plan, "append")
    source, n = SourceStage(fleet), 3
    stages = [AggregationStage(fleet, query="q") for _ in range(n)]
    logs = [CheckpointLog(LocalCheckpointStore(tmp_path / f"p{p}")) for p in range(n)]
    at, seq, top, bid, engine_late, restored = 0, 0, None, 0, 0, False
    while at < rows.height:
        size = rng.randint(1, 40)
        batch = rows.slice(at, size)
        at += size
        top, late = step(engine, source, stages, batch, seq=seq, top=top, sort=_sorted)
        engine_late += late
        seq += 1
        assert sum(s.state_rows for s in stages) == engine.state_rows
        take_over = not restored and at > rows.height // 2  # every task taken over once
        stages = checkpoint_all(fleet, stages, logs, bid, take_over=take_over)
        restored, bid = restored or take_over, bid + 1
        assert sum(s.state_rows for s in stages) == engine.state_rows
    # rows read, as the engine counts them (also where the source kept one row of a key)
    assert 0 < sum(s.late_rows for s in stages) == engine_late


def test_many_shards_with_reemitted_chunks_give_duckdbs_distinct_rows() -> None:
    """Rows dealt to 6 shards, each read in random batches, chunks sometimes put twice,
    3 partitions polled in random interleavings: the union of what the stages emitted is
    the distinct rows (no watermark: nothing is late, nothing forgotten)."""
    rows = _rows(7, 500)
    fleet = FleetPlan.of(_stream().drop_duplicates().plan, "append")
    fl = sim.Fleet(fleet, sim.shards(rows, 6, seed=7), 3, seed=7, dup_rate=0.3)
    fl.run()
    got = pl.concat([out for per in fl.outputs for out in per.values()])
    con = duckdb.connect()
    con.register("r", rows.to_arrow())
    want = pl.from_arrow(con.sql("SELECT DISTINCT k, v, t FROM r").to_arrow_table())
    assert isinstance(want, pl.DataFrame)
    want = want.with_columns(pl.col("t").dt.convert_time_zone("UTC"))
    assert_frame_equal(_sorted(got), _sorted(want))
    assert fl.stages[0].duplicates_dropped + fl.stages[1].duplicates_dropped > 0


def test_the_watermark_column_must_reach_the_drop_duplicates() -> None:
    df = _stream().with_watermark("t", "5 minutes").select("k", "v")
    with pytest.raises(PlanError, match="keep 't' up to the drop_duplicates"):
        FleetPlan.of(df.drop_duplicates(["k"]).plan, "append")
