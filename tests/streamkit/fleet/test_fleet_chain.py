"""Chains (README rule 11) on a fleet, server-free: ``with_watermark`` ->
``drop_duplicates`` -> a stream-static join -> a windowed aggregation. Rows are routed by
the ``drop_duplicates`` key the aggregation also groups by, and each aggregation task runs
the whole chain on its rows. With one source shard whose every batch reaches every
partition as one batch, batch by batch the union of the stages' outputs (late rows, state
rows) equals what the single-process engine (:class:`ChainQuery`) emits on the same
batches, also across a restore of every stage from its checkpoint; with many shards,
copies of rows on different shards, re-emitted chunks and crashes, the appended windows
equal DuckDB's join and aggregation over the distinct rows. What the fleet cannot route
is refused by name."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pytest
from polars.testing import assert_frame_equal

import streamkit as sk
from streamkit.errors import PlanError
from streamkit.fleet import AggregationStage, FleetPlan, SourceStage
from streamkit.plan import Plan
from streamkit.streaming.chain import ChainQuery
from streamkit.streaming.checkpoint import CheckpointLog
from streamkit.streaming.checkpoint_store import LocalCheckpointStore

from . import sim
from .test_parity_with_engine import checkpoint_all, step

EVENTS = pa.schema([("k", pa.string()), ("v", pa.int64()), ("t", pa.timestamp("us", "UTC"))])
STATIC: dict[str, list[Any]] = {"k": ["k0", "k1", "k2", "k3", "k4"],
                                 "region": ["eu", "us", "eu", "ap", None],
                                 "w": [1, 2, 3, 4, 5]}  # fmt: skip
"""k5, k6 and null keys of the stream find no row (inner vs left)."""


def _static() -> sk.DataFrame:
    return sk.from_arrow(pa.table(STATIC))


def _chain(subset: list[str] | None, within: bool, how: str, delay: str = "15 minutes") -> Plan:
    """The unbound plan (the fleet and the reference engine each bind their own sides)."""
    df = sk.read_stream.memory(EVENTS).with_watermark("t", delay)
    deduped = df.drop_duplicates_within_watermark(subset) if within else df.drop_duplicates(subset)
    joined = deduped.join(_static(), on="k", how=how).with_column("vw", sk.col("v") * sk.col("w"))
    return (
        joined.group_by(sk.window("t", "10 minutes"), "k", "region")
        .agg(sk.count().alias("n"), sk.sum("vw").alias("s"))
        .plan
    )


def _flat(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select(
        pl.col("window").struct.field("start").dt.epoch("us").alias("ws"), "k", "region", "n", "s"
    ).sort(["ws", "k", "region"], nulls_last=True)


def _with_copies(seed: int, n: int) -> pl.DataFrame:
    """``n`` rows and a copy of a third of them, roughly in event-time order (each row
    moved up to 60 places: about 18 minutes, so with a 15-minute delay some are late and
    the watermark moves all along)."""
    rng = random.Random(seed)
    base = sim.table(seed, n, keys=7)
    both = pl.concat([base, base.sample(n // 3, seed=seed)]).sort("t")
    jitter = pl.Series([i + rng.randint(0, 60) for i in range(both.height)])
    return both.with_columns(jitter.alias("__o")).sort("__o").drop("__o")


CASES = [(["k", "t"], False, "inner", "append"), (["k", "t"], False, "left", "update"),
         (["k", "v"], False, "left", "append"), (["k"], True, "inner", "append"),
         (None, False, "left", "complete")]  # fmt: skip


@pytest.mark.parametrize(("subset", "within", "how", "mode"), CASES)
def test_batch_by_batch_the_fleet_runs_the_chain_as_the_engine(
    subset: list[str] | None, within: bool, how: str, mode: str, tmp_path: Path
) -> None:
    rng = random.Random(21)
    rows = _with_copies(21, 300)
    plan = _chain(subset, within, how)
    fleet = FleetPlan.of(plan, mode)  # type: ignore[arg-type]
    assert fleet.route_keys == ["k"]
    engine = ChainQuery(plan, mode)  # type: ignore[arg-type]  # its own static side
    source, n = SourceStage(fleet), 3
    stages = [AggregationStage(fleet, query="q") for _ in range(n)]
    logs = [CheckpointLog(LocalCheckpointStore(tmp_path / f"p{p}")) for p in range(n)]
    at, seq, top, bid, engine_late, restored = 0, 0, None, 0, 0, False
    while at < rows.height:
        size = rng.randint(1, 40)
        top, late = step(engine, source, stages, rows.slice(at, size), seq=seq, top=top,
                         sort=_flat)  # fmt: skip
        at, seq, engine_late = at + size, seq + 1, engine_late + late
        assert sum(s.state_rows for s in stages) == engine.state_rows
        take_over = not restored and at > rows.height // 2  # every task taken over once
        stages = checkpoint_all(fleet, stages, logs, bid, take_over=take_over)
        restored, bid = restored or take_over, bid + 1
        assert sum(s.state_rows for s in stages) == engine.state_rows
    assert sum(s.late_rows for s in stages) == engine_late
    if mode == "complete":
        got = pl.concat([s.current_result() for s in stages])
        assert_frame_equal(_flat(got), _flat(engine.current_result()))
    else:
        assert engine_late > 0  # the case did exercise late rows


def _truth(rows: pl.DataFrame) -> pl.DataFrame:
    """DuckDB: the distinct rows left-joined with the table, per 10-minute window, k and
    region: count and sum of ``v * w``."""
    con = duckdb.connect()
    distinct = rows.unique().with_columns(pl.col("t").dt.epoch("us").alias("u"))
    con.register("r", distinct.to_arrow())
    con.register("s", pa.table(STATIC))
    size = 10 * sim.MIN_US
    frame = pl.from_arrow(con.sql(
        f"SELECT u // {size} * {size} AS ws, r.k, s.region, count(*) AS n, sum(v * w) AS s "
        "FROM r LEFT JOIN s ON r.k = s.k GROUP BY ALL"
    ).to_arrow_table())  # fmt: skip
    assert isinstance(frame, pl.DataFrame)
    return frame.sort(["ws", "k", "region"], nulls_last=True)


def test_many_shards_with_copies_reemitted_chunks_and_crashes_give_duckdbs_windows(
    tmp_path: Path,
) -> None:
    """Copies of rows dealt to other shards (so they reach a task from several source
    shards), chunks sometimes put twice, stages crashing before and after their commits:
    every window is appended once, with DuckDB's values over the distinct rows."""
    rows = _with_copies(5, 600)
    fleet = FleetPlan.of(_chain(None, False, "left", "1 hour"), "append")
    flush = pl.DataFrame({"k": ["k0"], "v": [0], "t": [sim.T0.replace(year=2027)]},
                         schema=sim.SCHEMA)  # fmt: skip
    fl = sim.Fleet(fleet, sim.shards(rows, 5, seed=5), 3, seed=5, dup_rate=0.3,
                   crash_rate=0.1, checkpoints=tmp_path)  # fmt: skip
    fl.run(flush)
    got = pl.concat([out for per in fl.outputs for out in per.values()])
    assert_frame_equal(_flat(got), _truth(rows), check_dtypes=False)
    assert fl.restarts > 0
    assert sum(s.duplicates_dropped for s in fl.stages) > 0


def _marked() -> sk.DataFrame:
    return sk.read_stream.memory(EVENTS).with_watermark("t", "15 minutes")


def test_rows_are_routed_by_the_key_through_a_rename_and_a_join() -> None:
    renamed = _marked().drop_duplicates(["k", "t"]).join(_static(), on="k")
    renamed = renamed.select(sk.col("k").alias("key"), "t", "region")
    plan = renamed.group_by(sk.window("t", "10 minutes"), "key").agg(sk.count().alias("n")).plan
    assert FleetPlan.of(plan, "append").route_keys == ["k"]


@pytest.mark.parametrize(
    "build",
    [
        lambda df: df.drop_duplicates(["k", "t"]).join(_static(), on="k")
        .group_by(sk.window("t", "10 minutes"), "region").agg(sk.count().alias("n")),
        lambda df: df.drop_duplicates(["k", "t"]).with_column("k", sk.col("k") + "x")
        .group_by(sk.window("t", "10 minutes"), "k").agg(sk.count().alias("n")),
    ],
    ids=["grouped_by_a_static_column", "key_recomputed"],
)  # fmt: skip
def test_a_chain_without_a_shared_key_is_refused_naming_what_to_do(build: Any) -> None:
    with pytest.raises(
        PlanError,
        match=r"not supported on a fleet yet: drop_duplicates on "
        r"\['k', 't'\] then an aggregation.*group by one of the drop_dup",
    ):
        FleetPlan.of(build(_marked()).plan, "append")


def test_an_operator_over_an_aggregation_is_refused_naming_what_to_do() -> None:
    agg = _marked().group_by(sk.window("t", "10 minutes"), "k").agg(sk.count().alias("n"))
    above = agg.group_by(sk.window(sk.window_time("window"), "1 hour"), "k").agg(sk.count())
    with pytest.raises(PlanError, match=r"stateful operator over an aggregation.*streamkit run"):
        FleetPlan.of(above.plan, "append")
