"""Stream-static joins on a fleet, server-free: each source task joins its own rows with the
static table (the same in every task) before pre-aggregating. With one source shard whose
every batch reaches every partition as one batch, batch by batch the union of the stages'
outputs equals what IncrementalQuery emits on the same batches (inner and left outer,
grouped by a column of the static side, with late rows); in complete mode the final result
equals DuckDB's join and aggregation over all the rows; a stateless plan's join is
checked against DuckDB too."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import duckdb
import polars as pl
import pyarrow as pa
import pytest
from polars.testing import assert_frame_equal

import streamkit as sk
from streamkit.errors import PlanError
from streamkit.fleet import AggregationStage, FleetPlan, SourceStage
from streamkit.fleet.member import start_member
from streamkit.plan import Plan, Scan
from streamkit.streaming.incremental import IncrementalQuery

from . import sim
from .test_parity_with_engine import step

EVENTS = pa.schema([("k", pa.string()), ("v", pa.int64()), ("t", pa.timestamp("us", "UTC"))])
STATIC: dict[str, list[Any]] = {"k": ["k0", "k1", "k2", "k3", "k4"],
                                 "region": ["eu", "us", "eu", "ap", None],
                                 "w": [1, 2, 3, 4, 5]}  # fmt: skip
"""The static table: k5, k6 and null keys of the stream find no row (inner vs left)."""
REPEATED: dict[str, list[Any]] = {"k": [*STATIC["k"], "k1", "k2"],
                                   "region": [*STATIC["region"], "ap", "us"],
                                   "w": [*STATIC["w"], 6, 7]}  # fmt: skip
"""The static table with two rows for k1 and k2: their rows are joined twice (one late
row read each, as the engine counts it, whichever partitions the copies go to)."""
TABLES = pytest.mark.parametrize("table", [STATIC, REPEATED], ids=["unique", "repeated"])


def _static(table: dict[str, list[Any]] = STATIC) -> sk.DataFrame:
    return sk.from_arrow(pa.table(table))


def _aggregated(how: str, table: dict[str, list[Any]] = STATIC) -> Plan:
    """The unbound plan (the fleet and the reference engine each bind their own sides)."""
    df = sk.read_stream.memory(EVENTS).with_watermark("t", "15 minutes")
    joined = df.join(_static(table), on="k", how=how).with_column("vw", sk.col("v") * sk.col("w"))
    agg = joined.group_by(sk.window("t", "10 minutes"), "region").agg(
        sk.count().alias("n"), sk.sum("vw").alias("s"), sk.avg("v").alias("a")
    )
    return agg.plan


def _flat(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select(
        pl.col("window").struct.field("start").dt.epoch("us").alias("ws"),
        "region", "n", "s", "a",
    ).sort(["ws", "region"], nulls_last=True)  # fmt: skip


def _oracle(rows: pl.DataFrame, how: str, table: dict[str, list[Any]]) -> pl.DataFrame:
    """DuckDB: the join and the 10-minute aggregation by region over all ``rows``."""
    con = duckdb.connect()
    con.register("r", rows.with_columns(pl.col("t").dt.epoch("us").alias("u")).to_arrow())
    con.register("s", pa.table(table))
    size = 10 * sim.MIN_US
    join = "JOIN" if how == "inner" else "LEFT JOIN"
    sql = f"""SELECT u // {size} * {size} AS ws, s.region, count(*) AS n, sum(v * w) AS s,
              avg(v) AS a FROM r {join} s ON r.k = s.k GROUP BY ws, s.region"""
    frame = pl.from_arrow(con.sql(sql).to_arrow_table())
    assert isinstance(frame, pl.DataFrame)
    return frame.sort(["ws", "region"], nulls_last=True)


@TABLES
@pytest.mark.parametrize("how", ["inner", "left"])
@pytest.mark.parametrize("mode", ["append", "update", "complete"])
def test_batch_by_batch_a_joined_aggregation_is_the_engines(
    how: str, mode: str, table: dict[str, list[Any]]
) -> None:
    """Late rows too (``step``): each row read once, also when joined twice."""
    rng = random.Random(5)
    rows = sim.table(5, 500)  # random time order: with a 15-minute delay some rows are late
    plan = _aggregated(how, table)
    fleet = FleetPlan.of(plan, mode)  # type: ignore[arg-type]
    engine = IncrementalQuery(plan, mode)  # type: ignore[arg-type]  # not sharing the sides
    source, n = SourceStage(fleet), 3
    stages = [AggregationStage(fleet, query="q") for _ in range(n)]
    at, seq, top, last = 0, 0, None, pl.DataFrame()
    while at < rows.height:
        size = rng.randint(1, 60)
        top, _ = step(engine, source, stages, rows.slice(at, size), seq=seq, top=top, sort=_flat)
        at, seq = at + size, seq + 1
    assert sum(s.late_rows for s in stages) > 0 or mode == "complete"
    if mode == "complete":  # every stage's last output holds its keys: the whole result
        last = pl.concat([s.run_no_data(now=1e9).output for s in stages])
        assert_frame_equal(_flat(last), _oracle(rows, how, table), check_dtypes=False)


def _stateless(how: str) -> FleetPlan:
    df = sk.read_stream.memory(EVENTS)
    joined = df.join(_static(), on="k", how=how).filter(sk.col("v") > 20)
    return FleetPlan.of(joined.select("k", "v", "t", "region").plan, "append")


@pytest.mark.parametrize("how", ["inner", "left"])
def test_a_stateless_join_in_a_source_task_is_duckdbs(how: str) -> None:
    """The engine a source task runs on a stateless plan (``IncrementalQuery(fleet.plan)``)
    joins each batch with the static table."""
    fleet = _stateless(how)
    assert fleet.stateless
    assert len(fleet.static) == 1
    engine = IncrementalQuery(fleet.plan, "append")
    rows = sim.table(9, 300)
    got = pl.concat([engine.run(rows.slice(at, 70)).output for at in range(0, 300, 70)])
    con = duckdb.connect()
    con.register("r", rows.to_arrow())
    con.register("s", pa.table(STATIC))
    join = "JOIN" if how == "inner" else "LEFT JOIN"
    want = pl.from_arrow(
        con.sql(
            f"SELECT r.k, v, t, region FROM r {join} s ON r.k = s.k WHERE v > 20"
        ).to_arrow_table()
    )
    assert isinstance(want, pl.DataFrame)
    want = want.with_columns(pl.col("t").dt.convert_time_zone("UTC"))  # DuckDB's Etc/UTC
    order = ["k", "v", "t", "region"]
    assert_frame_equal(got.sort(order, nulls_last=True), want.sort(order, nulls_last=True),
                       check_dtypes=False)  # fmt: skip


def _two_streams() -> Any:
    left = sk.read_stream.memory(EVENTS).with_watermark("t", "5 minutes")
    other = sk.read_stream.memory(EVENTS).with_watermark("t", "5 minutes")
    return left.join(other.select(sk.col("k").alias("k2"), sk.col("t").alias("t2")),
                     on=sk.col("k") == sk.col("k2"))  # fmt: skip


def test_a_join_of_two_streams_not_read_from_kinesis_is_refused_by_the_worker(
    tmp_path: Path,
) -> None:
    """The fleet plan splits it (the engine side: tests/streamkit/fleet/
    test_fleet_stream_join.py); a worker joins two Kinesis streams (the LocalStack test
    streamkit_kinesis_tests/fleet/test_fleet_stream_join.py), and refuses memory streams
    naming the side and what to do."""
    df = _two_streams()
    assert FleetPlan.of(df.plan, "append").joined is not None
    writer = df.write_stream.checkpoint(str(tmp_path / "ck")).parquet(str(tmp_path / "out"))
    with pytest.raises(PlanError, match=r"joins two Kinesis streams, but the left side reads "
                       r".*sk.read_stream.kinesis.*streamkit run"):  # fmt: skip
        start_member(writer)


def test_a_join_after_the_aggregation_is_refused() -> None:
    df = sk.read_stream.memory(EVENTS).with_watermark("t", "5 minutes")
    agg = df.group_by(sk.window("t", "10 minutes"), "k").agg(sk.count().alias("n"))
    with pytest.raises(PlanError, match="a stream-static join after the aggregation"):
        FleetPlan.of(agg.join(_static(), on="k").plan, "append")


@TABLES
@pytest.mark.parametrize("how", ["inner", "left"])
def test_batch_by_batch_drop_duplicates_after_a_join_is_the_engines(
    how: str, table: dict[str, list[Any]]
) -> None:
    """``drop_duplicates`` over the joined rows: source tasks join, then keep the first
    row of each key of their batch; the stages hold the keys, and count late rows (each
    row read once: ``step``), as the engine does."""
    rng = random.Random(8)
    base = sim.table(8, 300, keys=7)
    rows = pl.concat([base, base.sample(100, seed=8)]).sample(fraction=1.0, shuffle=True, seed=8)
    df = sk.read_stream.memory(EVENTS).with_watermark("t", "15 minutes")
    joined = df.join(_static(table), on="k", how=how).drop_duplicates(["region", "t"])
    plan = joined.select("region", "t", "v").plan
    fleet = FleetPlan.of(plan, "append")
    engine = IncrementalQuery(plan, "append")  # its own static side, not the fleet's
    source, n = SourceStage(fleet), 3
    stages = [AggregationStage(fleet, query="q") for _ in range(n)]
    at, seq, top = 0, 0, None

    def order(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.sort(["region", "t", "v"], nulls_last=True)

    while at < rows.height:
        size = rng.randint(1, 40)
        top, _ = step(engine, source, stages, rows.slice(at, size), seq=seq, top=top, sort=order)
        at, seq = at + size, seq + 1
        assert sum(s.state_rows for s in stages) == engine.state_rows


class _Slow:
    """A static source whose read takes 0.3 s (so concurrent first reads overlap)."""

    def __init__(self) -> None:
        frame = pl.from_arrow(pa.table(STATIC))
        assert isinstance(frame, pl.DataFrame)
        self.frame, self.schema = frame, frame.schema

    def batches(self, columns: list[str], dictionary: list[str]) -> Iterator[pl.DataFrame]:
        time.sleep(0.3)
        yield self.frame.select(columns)

    def describe(self) -> str:
        return "slow static table"


def test_source_tasks_refreshing_one_static_side_at_once_read_it_once() -> None:
    """The source tasks of a worker share the plan's static sides and refresh them from
    their threads at once: the table is read once, and each sees all of it."""
    df = sk.read_stream.memory(EVENTS)
    joined = df.join(sk.DataFrame(Scan(cast("Any", _Slow()))), on="k")
    fleet = FleetPlan.of(joined.group_by("region").agg(sk.count().alias("n")).plan, "update")
    (side,) = fleet.static
    stages = [SourceStage(fleet) for _ in range(4)]
    rows = sim.table(3, 50)
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda stage: stage.run(rows), stages))
    assert side.loads == 1
    assert len({out.states.to_arrow().to_pylist().__repr__() for out in outs}) == 1
