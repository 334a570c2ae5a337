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
from dataclasses import replace
from datetime import timedelta
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
from streamkit.fleet.chunk import ChunkError, ChunkHeader, encode_chunk
from streamkit.fleet.join_source import SideStage
from streamkit.fleet.join_stage import JoinStage
from streamkit.fleet.source_progress import SourceProgress, advance
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


def _sides(right_mark: bool = True) -> tuple[sk.DataFrame, sk.DataFrame]:
    """Each side with its own delay (the right side none unless ``right_mark``), a filter
    and a projection below the join."""
    left = sk.read_stream.memory(LEFT).with_watermark("t", "10 minutes")
    right = sk.read_stream.memory(RIGHT)
    right = right.with_watermark("t2", "4 minutes") if right_mark else right
    return left.filter(sk.col("v") > -40), right.with_column("w2", sk.col("w") * 2)


def _condition() -> sk.Expr:
    return (
        (sk.col("id") == sk.col("rid"))
        & (sk.col("t2") >= sk.col("t"))
        & (sk.col("t2") <= sk.col("t") + timedelta(minutes=10))
    )


def _join(how: str, right_mark: bool = True) -> sk.DataFrame:
    left, right = _sides(right_mark)
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
         ("inner", "update"), ("left", "append"), ("inner", "unmarked"),
         ("full", "dedup")]  # fmt: skip
"""(how, mode of an aggregation above the join; None: the join alone, append mode;
"unmarked": the join alone, the right side without a watermark: W is the left side's,
no buffer evicts; "dedup": ``drop_duplicates`` by both keys and ``t2`` above the
join)."""


@pytest.mark.parametrize(("how", "agg_mode"), CASES)
def test_batch_by_batch_the_fleet_joins_as_the_engine(
    how: str, agg_mode: str | None, tmp_path: Path
) -> None:
    rng = random.Random(31)
    left = _side_rows(31, 300, LEFT_PL, jitter=40)
    right = _side_rows(32, 300, RIGHT_PL, jitter=40)
    alone = agg_mode in (None, "unmarked")
    plan = _join(how, agg_mode is None).plan if alone else _counted(how)
    if agg_mode == "dedup":
        plan = _join(how).select("id", "rid", "t2", "w").drop_duplicates(["id", "rid", "t2"]).plan
    mode: Any = "append" if alone or agg_mode == "dedup" else agg_mode
    fleet = FleetPlan.of(plan, mode)
    engine: StreamJoinQuery | ChainQuery = (
        StreamJoinQuery(plan, mode) if alone else make_engine(plan, mode)  # type: ignore[assignment]
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
    if alone and how != "inner":  # and null-extended rows of each preserved side
        assert how == "right" or out["rid"].null_count() > 0
        assert how == "left" or out["id"].null_count() > 0


FLUSH = sim.T0.replace(year=2027)
"""The time of each shard's last row: the watermark passes every row before it, so every
buffered row leaves (and an outer join emits its unmatched rows)."""


def _flat(frame: pl.DataFrame) -> pl.DataFrame:
    """The join's output as the oracle's: times as epoch us, the flush rows left out."""
    cut = int(FLUSH.timestamp()) * 1_000_000
    out = frame.select(
        "id", "v", pl.col("t").dt.epoch("us").alias("u"), "rid", "w", "w2",
        pl.col("t2").dt.epoch("us").alias("u2"),
    ).filter((pl.col("u").fill_null(0) < cut) & (pl.col("u2").fill_null(0) < cut))  # fmt: skip
    return out.sort(out.columns, nulls_last=True)


def _truth(left: pl.DataFrame, right: pl.DataFrame, how: str) -> pl.DataFrame:
    """DuckDB's join of all the rows: the left rows with ``v > -40``, ids equal (a full
    outer join matches null ids as Spark's state does), ``t <= t2 <= t + 10 min``."""
    con = duckdb.connect()
    con.register("l", left.with_columns(pl.col("t").dt.epoch("us").alias("u")).to_arrow())
    con.register("r", right.with_columns(pl.col("t2").dt.epoch("us").alias("u2")).to_arrow())
    kind = {"inner": "JOIN", "left": "LEFT JOIN", "right": "RIGHT JOIN", "full": "FULL JOIN"}
    equal = "l.id IS NOT DISTINCT FROM r.rid" if how == "full" else "l.id = r.rid"
    frame = pl.from_arrow(con.sql(
        f"SELECT l.id, l.v, l.u, r.rid, r.w, r.w * 2 AS w2, r.u2 "
        f"FROM (SELECT * FROM l WHERE v > -40) l {kind[how]} r "
        f"ON {equal} AND r.u2 >= l.u AND r.u2 <= l.u + {WITHIN_US}"
    ).to_arrow_table())  # fmt: skip
    assert isinstance(frame, pl.DataFrame)
    return frame.sort(frame.columns, nulls_last=True)


def _run(fleet: FleetPlan, left: pl.DataFrame, right: pl.DataFrame, root: Path) -> sim.Fleet:
    """4 shards per stream (ids ``shard-000``.. in both), 3 tasks, a third of the puts
    sent again (some only to some partitions), tasks crashing before and after their
    commits; every shard ends with a row at :data:`FLUSH`."""
    sources = sim.shards(left, 4, seed=41, stream="left")
    sources += sim.shards(right, 4, seed=42, stream="right", time="t2")
    fl = sim.Fleet(fleet, sources, 3, seed=43, dup_rate=0.3, crash_rate=0.1, checkpoints=root)
    flush = {
        "left": pl.DataFrame({"id": [0], "v": [0], "t": [FLUSH]}, schema=LEFT_PL),
        "right": pl.DataFrame({"rid": [0], "w": [0], "t2": [FLUSH]}, schema=RIGHT_PL),
    }
    fl.run(flush)
    return fl


def _exercised(fl: sim.Fleet) -> None:
    """The run did re-send chunks and crash tasks; no row was late (each shard is in
    event-time order)."""
    assert fl.restarts > 0
    assert sum(s.duplicates_dropped for s in fl.stages) > 0
    assert sum(s.late_rows for s in fl.stages) == 0


@pytest.mark.parametrize("how", ["inner", "left", "right", "full"])
def test_many_shards_reemitted_chunks_and_crashes_give_duckdbs_join(
    how: str, tmp_path: Path
) -> None:
    left = _side_rows(51, 500, LEFT_PL, jitter=0)
    right = _side_rows(52, 500, RIGHT_PL, jitter=0)
    fl = _run(FleetPlan.of(_join(how).plan, "append"), left, right, tmp_path)
    got = pl.concat([out for per in fl.outputs for out in per.values()])
    want = _truth(left, right, how)
    assert want.height > 300
    assert_frame_equal(_flat(got), want, check_dtypes=False)
    _exercised(fl)


def test_an_aggregation_over_the_join_keyed_by_its_key_gives_duckdbs_windows(
    tmp_path: Path,
) -> None:
    """A left join, then count and sum of ``w`` per 10-minute window of ``t`` and id (the
    join key): each group lives in the task of its id, which runs both operators."""
    left = _side_rows(61, 500, LEFT_PL, jitter=0)
    right = _side_rows(62, 500, RIGHT_PL, jitter=0)
    fl = _run(FleetPlan.of(_counted("left"), "append"), left, right, tmp_path)
    got = pl.concat([out for per in fl.outputs for out in per.values()])
    got = got.select(
        pl.col("window").struct.field("start").dt.epoch("us").alias("ws"), "id", "n", "s"
    ).filter(pl.col("ws") < int(FLUSH.timestamp()) * 1_000_000)
    con = duckdb.connect()
    con.register("j", _truth(left, right, "left").to_arrow())
    size = 10 * sim.MIN_US
    want = pl.from_arrow(con.sql(
        f"SELECT u // {size} * {size} AS ws, id, count(*) AS n, sum(w) AS s FROM j GROUP BY ALL"
    ).to_arrow_table())  # fmt: skip
    assert isinstance(want, pl.DataFrame)
    order = ["ws", "id"]
    assert_frame_equal(got.sort(order, nulls_last=True), want.sort(order, nulls_last=True),
                       check_dtypes=False)  # fmt: skip
    _exercised(fl)


def test_equal_shard_ids_of_the_two_streams_are_two_shards() -> None:
    """The dedup map knows a shard by stream and id: the right stream's first range of
    ``shardId-000000000000`` is applied after the left stream's, not taken for it."""
    sources: dict[str, SourceProgress] = {}
    for stream in ("left", "right"):
        header = ChunkHeader("q", "shardId-000000000000", None, "5", 0, 1, 9, False, 0,
                             stream=stream)  # fmt: skip
        assert advance(sources, header, 0.0) == "applied"
    assert set(sources) == {"left/shardId-000000000000", "right/shardId-000000000000"}


def _stream_static_side() -> sk.DataFrame:
    table = pa.table({"rid": pa.array([1], pa.int64()), "region": ["eu"]})
    right = _sides()[1].join(sk.from_arrow(table), on="rid")
    return _sides()[0].join(right, _condition(), "inner")


@pytest.mark.parametrize(
    ("build", "mode", "refusal"),
    [
        (lambda: _join("inner").group_by(sk.window("t", "10 minutes"), "v").agg(sk.count()),
         "append", r"an aggregation above a join of two streams that does not key by the "
         r"join key 'id' or 'rid'.*add 'id' or 'rid' to its keys"),
        (lambda: _join("left").group_by(sk.window("t", "10 minutes"), "rid").agg(sk.count()),
         "append", r"an aggregation above a join of two streams that does not key by the "
         r"join key 'id' \("),
        (lambda: _join("full").select("id", "rid", "t2").drop_duplicates(["id", "t2"]),
         "append", r"drop_duplicates above a join of two streams that does not key by the "
         r"join key 'id' and 'rid'"),
        (lambda: _join("inner").select("id", "t").drop_duplicates(["id", "t"])
         .group_by(sk.window("t", "10 minutes"), "id").agg(sk.count()),
         "append", r"more than one aggregation or drop_duplicates.*above a join of two"),
        (_stream_static_side, "append", r"a stream-static join in a query that joins two"),
        (lambda: _sides()[0].join(
            _sides()[1].with_column("rf", sk.col("rid").cast("double")),
            (sk.col("id") == sk.col("rf")) & (sk.col("t2") >= sk.col("t")), "inner"),
         "append", r"join key 'id' \(Int32, left side\) = 'rf' \(Float64, right side\)"),
    ],
    ids=["agg_without_the_key", "left_join_keyed_by_the_right_key",
         "full_join_keyed_by_one_side", "two_operators", "stream_static_in_a_side",
         "keys_hashing_apart"],
)  # fmt: skip
def test_what_the_fleet_cannot_route_is_refused_naming_what_to_do(
    build: Any, mode: Any, refusal: str
) -> None:
    with pytest.raises(PlanError, match=f"not supported on a fleet yet: {refusal}"):
        FleetPlan.of(build().plan, mode)


@pytest.mark.parametrize(
    "build",
    [
        lambda: _join("inner").group_by(sk.window("t", "10 minutes"), "rid").agg(sk.count()),
        lambda: _join("right").select(sk.col("rid").alias("key"), "t2", "w")
        .drop_duplicates(["key", "t2"]),
        lambda: _join("full").select("id", "rid", "t2").drop_duplicates(["id", "rid", "t2"]),
    ],
    ids=["inner_by_the_right_key", "right_join_by_a_rename", "full_join_by_both"],
)  # fmt: skip
def test_an_operator_keyed_by_the_join_key_runs_in_the_join_task(build: Any) -> None:
    fleet = FleetPlan.of(build().plan, "append")
    assert fleet.joined is not None
    assert fleet.joined.above is not None
    JoinStage(fleet)  # the single-process chain builds


def test_an_expected_shard_of_a_side_without_a_watermark_holds_nothing() -> None:
    """The right side has no watermark: its shards never send an event time, so only the
    left side's expected shards hold the fleet watermark (its max less 10 minutes, as
    the one-process join takes W from the left side alone)."""
    fleet = FleetPlan.of(_join("inner", right_mark=False).plan, "append")
    stage = JoinStage(fleet, query="q")
    stage.expect_sources(["left/shard-000", "right/shard-000", "left/shard-001"])
    left = _side_rows(71, 20, LEFT_PL, jitter=0)
    sides = {name: SideStage(fleet, name) for name in ("left", "right")}
    out = sides["left"].run(left)
    assert out.max_event is not None
    ((chunk,),) = sides["left"].chunks(out, "shard-000", None, "1", out.max_event, False, 1, "q")
    stage.apply([chunk], now=1.0)
    assert stage.watermark is None  # left/shard-001 has sent nothing yet
    out1 = sides["left"].run(left.head(1))
    ((later,),) = sides["left"].chunks(out1, "shard-001", None, "1", out.max_event, False, 1, "q")
    stage.apply([later], now=2.0)
    assert stage.watermark == out.max_event - 10 * 60_000


def test_a_chunk_or_a_shard_name_without_its_stream_is_refused(tmp_path: Path) -> None:
    """A join task refuses a chunk naming no stream, and shard names without one; a
    one-stream task refuses a join's chunk (two queries on one exchange stream)."""
    fleet = FleetPlan.of(_join("inner").plan, "append")
    assert not fleet.stateless  # rows go through the exchange
    stage = JoinStage(fleet, query="q")
    header = ChunkHeader("q", "shard-000", None, "1", 0, 1, None, False, 0)
    with pytest.raises(ChunkError, match="names no stream of a join of two streams"):
        stage.apply([encode_chunk(header, pl.DataFrame())], now=1.0)
    with pytest.raises(ValueError, match="named 'left/<shard id>'"):
        stage.expect_sources(["left/shard-000", "shard-000"])
    one = sim.plan("tumbling", "append")
    marker = encode_chunk(replace(header, stream="left"), pl.DataFrame())
    with pytest.raises(ChunkError, match="of a join of two streams read by a query that"):
        AggregationStage(one, query="q").apply([marker], now=1.0)
    with pytest.raises(PlanError, match="run a SideStage per stream"):
        SourceStage(fleet)


def test_one_plan_below_or_one_set_of_route_keys_is_refused_for_a_join() -> None:
    fleet = FleetPlan.of(_join("left").plan, "append")
    assert fleet.joined is not None
    assert (fleet.joined.keys(0), fleet.joined.keys(1)) == (["id"], ["rid"])
    for name in ("below", "route_keys"):
        with pytest.raises(PlanError, match=f"FleetPlan.{name} is not one plan for a join"):
            getattr(fleet, name)


def test_a_reread_batch_gives_the_same_parts_and_markers_carry_their_stream() -> None:
    """A side's batch read again after a takeover encodes to the same bytes (so its
    chunks are dropped as duplicates); start and end markers of equal shard ids of the
    two streams are two shards' markers."""
    fleet = FleetPlan.of(_join("full").plan, "append")
    rows = _side_rows(81, 60, RIGHT_PL, jitter=5)
    again = [SideStage(fleet, "right", budget=1200) for _ in range(2)]
    first, second = (s.chunks(s.run(rows), "shard-000", None, "9", None, False, 4, "q")
                     for s in again)  # fmt: skip
    assert first == second
    assert sum(len(parts) for parts in first) > 4  # split into several parts somewhere
    stage = JoinStage(fleet, query="q")
    for name in ("left", "right"):
        (marker,) = SideStage(fleet, name).start_chunks("shard-000", None, 1, "q")[0]
        stage.apply([marker], now=1.0)
    assert set(stage.sources) == {"left/shard-000", "right/shard-000"}
    (end,) = SideStage(fleet, "left").end_chunks("shard-000", "0", 1, "q")[0]
    stage.apply([end], now=2.0)
    assert stage.sources["left/shard-000"].ended
    assert not stage.sources["right/shard-000"].ended


def test_a_side_its_readers_say_is_idle_stops_holding_the_watermark() -> None:
    """The fleet's rule for idle shards (README, step 4): silence is not idleness (the
    left side's shard silent for a day still holds); once its reader's idle marker says
    it found nothing newer at its tip, the watermark follows the right side's."""
    fleet = FleetPlan.of(_join("inner").plan, "append")
    stage = JoinStage(fleet, query="q")
    sides = {name: SideStage(fleet, name) for name in ("left", "right")}
    left = _side_rows(91, 10, LEFT_PL, jitter=0)
    right = _side_rows(92, 40, RIGHT_PL, jitter=0)

    def chunk(name: str, rows: pl.DataFrame, first: str | None, last: str) -> bytes:
        out = sides[name].run(rows)
        ((part,),) = sides[name].chunks(out, "s0", first, last, out.max_event, False, 1, "q")
        return part

    l_ms = int(left["t"].dt.epoch("ms").max())  # type: ignore[arg-type]
    stage.apply([chunk("left", left, None, "1"), chunk("right", right.head(5), None, "1")], 0.0)
    early = int(right.head(5)["t2"].dt.epoch("ms").max())  # type: ignore[arg-type]
    assert stage.watermark == min(l_ms - 600_000, early - 240_000)
    stage.apply([chunk("right", right.slice(5), "1", "2")], 86_400.0)  # the left: silent
    r_ms = int(right["t2"].dt.epoch("ms").max())  # type: ignore[arg-type]
    assert r_ms - 240_000 > l_ms - 600_000
    assert stage.watermark == l_ms - 600_000  # the silent left side still holds
    ((idle,),) = sides["left"].idle_chunks("s0", "1", 1, "q")
    stage.apply([idle], 86_401.0)
    assert stage.watermark == r_ms - 240_000
