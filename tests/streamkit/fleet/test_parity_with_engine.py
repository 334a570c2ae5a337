"""With one source shard, whose every batch reaches every partition as one batch, the
fleet's watermark is the single-process engine's, so batch by batch the union of the
stages' outputs and late rows equals what IncrementalQuery emits on the same batches:
late rows, eviction, no-data batches and output modes are the engine's, with rows out of
order and a short delay so that rows do arrive late."""

from __future__ import annotations

import random
from collections.abc import Callable

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from streamkit.fleet import AggregationStage, FleetPlan, SourceStage
from streamkit.streaming.chain import ChainQuery
from streamkit.streaming.checkpoint import CheckpointLog
from streamkit.streaming.incremental import IncrementalQuery

from . import sim

CASES = [("tumbling", "append"), ("tumbling", "update"), ("sliding", "append"),
         ("sliding", "update"), ("session", "append"), ("tumbling", "complete"),
         ("session", "complete")]  # fmt: skip


def _sorted(frame: pl.DataFrame) -> pl.DataFrame:
    return sim.flat(frame).sort(["ws", "we", "k"], nulls_last=True)


def step(
    engine: IncrementalQuery | ChainQuery, source: SourceStage, stages: list[AggregationStage],
    batch: pl.DataFrame, *, seq: int, top: int | None,
    sort: Callable[[pl.DataFrame], pl.DataFrame] | None = None,
) -> tuple[int | None, int]:
    """Batch ``seq`` (one source shard) through the engine and through the fleet's stages,
    then the no-data batches the engine owes: asserts the stages' watermark, the union
    of their outputs and their late-row count equal the engine's each time. Returns (the
    source's top event time, the engine's late rows). ``sort`` orders outputs for
    comparison (default: windows)."""
    order = sort or _sorted
    want = engine.run(batch)
    late = want.late_rows.height
    out = source.run(batch)
    top = out.max_event if top is None else max(top, out.max_event or top)
    first = str(seq) if seq else None
    chunks = source.chunks(out, "s", first, str(seq + 1), top, False, len(stages), "q")
    before = sum(s.late_rows for s in stages)
    got = [s.apply(parts, now=float(seq + 1)) for s, parts in zip(stages, chunks, strict=True)]
    assert {s.fleet_watermark for s in stages} == {engine.watermark}
    assert sum(s.late_rows for s in stages) - before == late  # rows read, as the engine
    assert_frame_equal(order(pl.concat([g.output for g in got])), order(want.output))
    while engine.owes_batch:
        assert all(s.owes_batch for s in stages)
        want = engine.run_no_data()
        got = [s.run_no_data(now=float(seq + 1)) for s in stages]
        assert_frame_equal(order(pl.concat([g.output for g in got])), order(want.output))
    return top, late


def checkpoint_all(
    fleet: FleetPlan, stages: list[AggregationStage], logs: list[CheckpointLog], bid: int,
    *, take_over: bool,
) -> list[AggregationStage]:
    """Every stage's state checkpointed as batch ``bid`` in its log; with ``take_over``,
    new stages restored from those checkpoints (every task taken over once), else
    ``stages``."""
    for stage, log in zip(stages, logs, strict=True):
        stage.checkpoint_state(log, bid)
    if not take_over:
        return stages
    fresh = [AggregationStage(fleet, query="q") for _ in stages]
    for stage, log in zip(fresh, logs, strict=True):
        stage.restore(CheckpointLog(log.store), bid)
    return fresh


@pytest.mark.parametrize(("window", "mode"), CASES)
def test_batch_by_batch_the_fleet_emits_what_the_engine_emits(window: str, mode: str) -> None:
    rng = random.Random(11)
    rows = sim.table(11, 400)  # times in random order: with a 15-minute delay, some are late
    fleet = sim.plan(window, mode, "15 minutes")
    engine = IncrementalQuery(fleet.plan, mode)  # type: ignore[arg-type]
    source, n = SourceStage(fleet), 3
    stages = [AggregationStage(fleet, query="q") for _ in range(n)]
    at, seq, top, engine_late = 0, 0, None, 0
    while at < rows.height:
        size = rng.randint(1, 60)
        batch = rows.slice(at, size)
        at += size
        top, late = step(engine, source, stages, batch, seq=seq, top=top)
        engine_late += late
        seq += 1
        assert not any(s.owes_batch for s in stages)
    fleet_late = sum(s.late_rows for s in stages)
    if mode != "complete" or window == "session":
        assert fleet_late > 0  # the case did exercise late rows
    assert fleet_late == engine_late
