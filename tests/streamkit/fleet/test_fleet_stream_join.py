"""Joins of two streams on a fleet, server-free (README "Running on many machines", steps
2-5): source tasks run each side's plan and route its rows by the join keys (Int32 ids on
the left, Int64 on the right, other names), aggregation tasks run the single-process join
on their partition's rows of both sides with the fleet watermark (the minimum of the two
sides', each with its own delay).

With one shard per stream (both named ``shard-000``: the streams' shard ids repeat),
every batch of both reaching every partition as one batch, batch by batch the union of
the stages' outputs, late rows, watermark and buffered rows equal what
:class:`StreamJoinQuery` (or the chain above it) gives on the same batches: inner, left,
right and full outer joins, rows late on both sides, no-data batches emitting the outer
rows, and every stage restored from its checkpoint mid-run. With many shards per stream,
re-emitted chunks and tasks crashing before and after their commits, the output equals
DuckDB's join of all the rows. What the fleet cannot run is refused by name."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from polars.testing import assert_frame_equal

import streamkit as sk
from streamkit.fleet import FleetPlan
from streamkit.fleet.join_source import SideStage
from streamkit.fleet.join_stage import JoinStage
from streamkit.plan import Plan
from streamkit.streaming.chain import ChainQuery, make_engine
from streamkit.streaming.checkpoint import CheckpointLog
from streamkit.streaming.checkpoint_store import LocalCheckpointStore
from streamkit.streaming.stream_join import StreamJoinQuery

from . import sim

TS = pa.timestamp("us", "UTC")
LEFT = pa.schema([("id", pa.int32()), ("v", pa.int64()), ("t", TS)])
RIGHT = pa.schema([("rid", pa.int64()), ("w", pa.int64()), ("t2", TS)])
LEFT_PL = pl.Schema([("id", pl.Int32()), ("v", pl.Int64()), ("t", pl.Datetime("us", "UTC"))])
RIGHT_PL = pl.Schema([("rid", pl.Int64()), ("w", pl.Int64()), ("t2", pl.Datetime("us", "UTC"))])
WITHIN_US = 10 * sim.MIN_US
"""A right row matches left rows at most 10 minutes before it (t <= t2 <= t + 10 min)."""


def _sides() -> tuple[sk.DataFrame, sk.DataFrame]:
    """Each side with its own delay, a filter and a projection below the join."""
    left = sk.read_stream.memory(LEFT).with_watermark("t", "10 minutes")
    right = sk.read_stream.memory(RIGHT).with_watermark("t2", "4 minutes")
    return left.filter(sk.col("v") > -40), right.with_column("w2", sk.col("w") * 2)


def _condition() -> sk.Expr:
    return (
        (sk.col("id") == sk.col("rid"))
        & (sk.col("t2") >= sk.col("t"))
        & (sk.col("t2") <= sk.col("t") + timedelta(minutes=10))
    )


def _join(how: str) -> sk.DataFrame:
    left, right = _sides()
    return left.join(right, _condition(), how)


def _counted(how: str) -> Plan:
    """Per 10-minute window of ``t`` and id: the joined rows and the sum of ``w``."""
    grouped = _join(how).group_by(sk.window("t", "10 minutes"), "id")
    return grouped.agg(sk.count().alias("n"), sk.sum("w").alias("s")).plan


def _side_rows(seed: int, n: int, schema: pl.Schema, jitter: int) -> pl.DataFrame:
    """``n`` rows of one side over two hours: ids 0-6 and some nulls, values -50..100,
    times roughly in order (each row moved up to ``jitter`` places, so with the short
    delays some arrive late); ``jitter`` 0: in event-time order."""
    rng = random.Random(seed)
    key, value, time = schema.names()
    rows = sorted(rng.randint(0, 120 * 60) for _ in range(n))
    frame = pl.DataFrame(
        {
            key: [rng.choice([*range(7), None]) for _ in range(n)],
            value: [rng.randint(-50, 100) for _ in range(n)],
            time: [sim.T0 + timedelta(seconds=s) for s in rows],
        },
        schema=schema,
    )
    order = pl.Series([i + rng.randint(0, jitter) for i in range(n)])
    return frame.with_columns(order.alias("__o")).sort("__o", maintain_order=True).drop("__o")


def _packed(left: pl.DataFrame, right: pl.DataFrame) -> pl.DataFrame:
    """Both sides' rows as the single-process engine reads two streams (a struct column
    per side, null on the other side's rows)."""
    none_r = pl.lit(None, dtype=pl.Struct(dict(RIGHT_PL))).alias("right")
    none_l = pl.lit(None, dtype=pl.Struct(dict(LEFT_PL))).alias("left")
    lefts = left.select(pl.struct(pl.all()).alias("left"), none_r)
    rights = right.select(none_l, pl.struct(pl.all()).alias("right"))
    return pl.concat([lefts, rights])


def _ordered(frame: pl.DataFrame) -> pl.DataFrame:
    if "window" in frame.columns:
        frame = frame.with_columns(pl.col("window").struct.field("start").alias("window"))
    return frame.sort(frame.columns, nulls_last=True)


class _Fleet:
    """One shard per stream (``shard-000`` in both), ``n`` join stages, checkpoints."""

    def __init__(self, fleet: FleetPlan, n: int, root: Path) -> None:
        self.fleet, self.n, self.seq = fleet, n, 0
        self.sides = [SideStage(fleet, "left"), SideStage(fleet, "right")]
        self.tops: list[int | None] = [None, None]
        self.stages = [JoinStage(fleet, query="q") for _ in range(n)]
        self.logs = [CheckpointLog(LocalCheckpointStore(root / f"p{p}")) for p in range(n)]

    def batch(self, left: pl.DataFrame, right: pl.DataFrame) -> list[Any]:
        """Both shards' next batch, put to every partition; each stage applies its
        partition's chunks of both (right first in odd batches) as one batch."""
        per: list[list[bytes]] = [[] for _ in range(self.n)]
        first = str(self.seq) if self.seq else None
        for i, rows in ((self.seq % 2, (left, right)[self.seq % 2]),
                        (1 - self.seq % 2, (left, right)[1 - self.seq % 2])):  # fmt: skip
            out = self.sides[i].run(rows)
            top = self.tops[i]
            self.tops[i] = top if out.max_event is None else max(top or 0, out.max_event)
            chunks = self.sides[i].chunks(
                out, "shard-000", first, str(self.seq + 1), self.tops[i], False, self.n, "q"
            )
            for p, parts in enumerate(chunks):
                per[p] += parts
        self.seq += 1
        now = float(self.seq)
        return [s.apply(parts, now=now) for s, parts in zip(self.stages, per, strict=True)]

    def checkpoint(self, bid: int, take_over: bool) -> None:
        for stage, log in zip(self.stages, self.logs, strict=True):
            stage.checkpoint_state(log, bid)
        if take_over:
            self.stages = [JoinStage(self.fleet, query="q") for _ in range(self.n)]
            for stage, log in zip(self.stages, self.logs, strict=True):
                stage.restore(CheckpointLog(log.store), bid)


CASES = [("inner", None), ("left", None), ("right", None), ("full", None),
         ("inner", "update"), ("left", "append")]  # fmt: skip
"""(how, mode of an aggregation above the join; None: the join alone, append mode)."""


@pytest.mark.parametrize(("how", "agg_mode"), CASES)
def test_batch_by_batch_the_fleet_joins_as_the_engine(
    how: str, agg_mode: str | None, tmp_path: Path
) -> None:
    rng = random.Random(31)
    left = _side_rows(31, 300, LEFT_PL, jitter=40)
    right = _side_rows(32, 300, RIGHT_PL, jitter=40)
    plan = _join(how).plan if agg_mode is None else _counted(how)
    mode: Any = agg_mode or "append"
    fleet = FleetPlan.of(plan, mode)
    engine: StreamJoinQuery | ChainQuery = (
        StreamJoinQuery(plan, mode) if agg_mode is None else make_engine(plan, mode)  # type: ignore[assignment]
    )
    fl = _Fleet(fleet, 3, tmp_path)
    at = [0, 0]
    bid, engine_late, restored, emitted = 0, 0, False, []
    while at[0] < left.height or at[1] < right.height:
        sizes = [rng.randint(0, 30), rng.randint(0, 30)]
        lb, rb = left.slice(at[0], sizes[0]), right.slice(at[1], sizes[1])
        at = [at[0] + sizes[0], at[1] + sizes[1]]
        want = engine.run(_packed(lb, rb))
        before = sum(s.late_rows for s in fl.stages)
        got = fl.batch(lb, rb)
        assert {s.fleet_watermark for s in fl.stages} == {engine.watermark}
        late = want.late_rows.height
        assert sum(s.late_rows for s in fl.stages) - before == late
        assert_frame_equal(_ordered(pl.concat([g.output for g in got])), _ordered(want.output))
        engine_late += late
        emitted.append(want.output)
        while engine.owes_batch:
            assert all(s.owes_batch for s in fl.stages)
            want = engine.run_no_data()
            got = [s.run_no_data(now=float(fl.seq)) for s in fl.stages]
            assert_frame_equal(_ordered(pl.concat([g.output for g in got])), _ordered(want.output))
            emitted.append(want.output)
        assert not any(s.owes_batch for s in fl.stages)
        assert sum(s.state_rows for s in fl.stages) == engine.state_rows
        take_over = not restored and at[0] > left.height // 2  # every task taken over once
        fl.checkpoint(bid, take_over)
        restored, bid = restored or take_over, bid + 1
        assert sum(s.state_rows for s in fl.stages) == engine.state_rows
    assert restored
    assert engine_late > 0  # the case did exercise late rows
    out = pl.concat(emitted)
    assert out.height > 50
    if agg_mode is None and how != "inner":  # and null-extended rows of each preserved side
        assert how == "right" or out["rid"].null_count() > 0
        assert how == "left" or out["id"].null_count() > 0
