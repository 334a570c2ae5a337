"""A fleet runs a window on the watermark column renamed or computed after
``with_watermark`` as the single-process engine does (issue 18; the engine's rules are
Spark's, tests/streamkit/streaming/test_watermark_above.py): a plain rename evicts and
drops late partial states, a computed column never does. Batch by batch the stages'
outputs equal the engine's (test_parity_with_engine's ``step``), and the late rows
counted are the engine's."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta

import polars as pl
import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.errors import PlanError
from streamkit.fleet import AggregationStage, FleetPlan, SourceStage
from streamkit.streaming.incremental import IncrementalQuery

from . import sim
from .test_parity_with_engine import step

SHAPES: dict[str, Callable[[sk.DataFrame], sk.DataFrame]] = {
    "renamed": lambda d: d.select(sk.col("t").alias("u"), "k", "v"),
    "copied": lambda d: d.with_column("u", sk.col("t")),
    "computed": lambda d: d.with_column("u", sk.col("t") + timedelta(minutes=7)),
}


def _by_key(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(["u", "k"], nulls_last=True)


def fleet_plan(shape: str, mode: str, *, keyed: bool = False) -> FleetPlan:
    """``keyed``: group by ``u`` itself instead of a window on it."""
    empty = pa.table({"k": pa.array([], pa.string()), "v": pa.array([], pa.int64()),
                      "t": pa.array([], pa.timestamp("us", "UTC"))})  # fmt: skip
    df = SHAPES[shape](sk.from_arrow(empty).with_watermark("t", "15 minutes"))
    group = "u" if keyed else sk.window("u", "10 minutes")
    counts = df.group_by(group, "k").agg(
        sk.count().alias("n"), sk.sum("v").alias("s"), sk.avg("v").alias("a"),
        sk.min("v").alias("lo"), sk.max("v").alias("hi"),
    )  # fmt: skip
    return FleetPlan.of(counts.plan, mode)  # type: ignore[arg-type]


@pytest.mark.parametrize("keyed", [False, True], ids=["window", "key"])
@pytest.mark.parametrize(
    ("shape", "mode"),
    [("renamed", "append"), ("renamed", "update"), ("copied", "append"), ("computed", "update")],
)
def test_the_fleet_follows_the_watermark_through_a_rename(
    shape: str, mode: str, keyed: bool
) -> None:
    """``keyed``: grouped by ``u`` itself, groups leave and partial states are late by the
    key (test_watermark_key.py), as in the engine."""
    rng = random.Random(5)
    rows = sim.table(5, 300)  # out of order: with a 15-minute delay, some rows are late
    fleet = fleet_plan(shape, mode, keyed=keyed)
    marked = fleet.key_mark if keyed else fleet.window_mark
    assert (marked is None) == (shape == "computed")
    engine = IncrementalQuery(fleet.plan, mode)  # type: ignore[arg-type]
    source = SourceStage(fleet)
    stages = [AggregationStage(fleet, query="q") for _ in range(3)]
    at, seq, top, engine_late = 0, 0, None, 0
    order = _by_key if keyed else None
    while at < rows.height:
        size = rng.randint(1, 50)
        batch = rows.slice(at, size)
        top, late = step(engine, source, stages, batch, seq=seq, top=top, sort=order)
        at, seq, engine_late = at + size, seq + 1, engine_late + late
    fleet_late = sum(s.late_rows for s in stages)
    assert fleet_late == engine_late
    assert (fleet_late > 0) == (shape != "computed")  # a computed window drops none


def test_the_fleet_refuses_append_on_a_computed_window_as_the_engine_does() -> None:
    with pytest.raises(PlanError, match="Invalid streaming output mode: append"):
        fleet_plan("computed", "append")
