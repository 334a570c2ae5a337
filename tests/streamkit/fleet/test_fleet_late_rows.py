"""The fleet counts late rows as the single-process engine does (README rule 2): rows read,
a row late when all its windows are dropped, each row read once. Expected counts are worked
out by hand in the comments (times in minutes after T0, a 5-minute delay; batch n judges
late rows against the watermark in force in batch n-1) and the engine is run beside to
show it agrees with them."""

from __future__ import annotations

import random
from datetime import timedelta

import polars as pl
import pyarrow as pa

import streamkit as sk
from streamkit.fleet import AggregationStage, FleetPlan, SourceStage
from streamkit.fleet.chunk import ChunkHeader, decode_chunk, encode_chunk
from streamkit.fleet.late_rows import LATE
from streamkit.plan import Plan
from streamkit.streaming.incremental import IncrementalQuery

from . import sim
from .sim import SCHEMA, T0

EMPTY = pa.table({"k": pa.array([], pa.string()), "v": pa.array([], pa.int64()),
                  "t": pa.array([], pa.timestamp("us", "UTC"))})  # fmt: skip


def rows(*items: tuple[str, float] | tuple[str, float, int]) -> pl.DataFrame:
    """(key, minute[, v]) rows."""
    return pl.DataFrame(
        {"k": [i[0] for i in items], "v": [i[2] if len(i) > 2 else 1 for i in items],
         "t": [T0 + timedelta(minutes=i[1]) for i in items]}, schema=SCHEMA,
    )  # fmt: skip


def late_counts(plan: Plan, mode: str, batches: list[pl.DataFrame]) -> tuple[list[int], list[int]]:
    """Per batch, the late rows of the fleet (one source shard, 2 aggregation stages) and of
    the engine, over ``batches``."""
    fleet = FleetPlan.of(plan, mode)  # type: ignore[arg-type]
    engine = IncrementalQuery(plan, mode)  # type: ignore[arg-type]
    source = SourceStage(fleet)
    stages = [AggregationStage(fleet, query="q") for _ in range(2)]
    top: int | None = None
    got, want = [], []
    for seq, batch in enumerate(batches):
        want.append(engine.run(batch).late_rows.height)
        out = source.run(batch)
        top = max(top or 0, out.max_event or 0)
        first = str(seq) if seq else None
        chunks = source.chunks(out, "s", first, str(seq + 1), top, False, 2, "q")
        before = sum(s.late_rows for s in stages)
        results = [s.apply(c, now=float(seq)) for s, c in zip(stages, chunks, strict=True)]
        got.append(sum(s.late_rows for s in stages) - before)
        late = [r.late_rows for r in results if LATE in r.late_rows.columns]
        if late:  # the late partial states (or rows) the stages report: the same count
            assert sum(int(f[LATE].sum()) for f in late) == got[-1]
    return got, want


def test_a_sliding_row_is_late_once_when_its_last_window_is_dropped() -> None:
    df = sk.from_arrow(EMPTY).with_watermark("t", "5 minutes")
    plan = df.group_by(sk.window("t", "10 minutes", "5 minutes"), "k").agg(sk.count()).plan
    batches = [
        rows(("a", 40)),  # W 35
        rows(("a", 41)),  # late mark None (in force in batch 0); W 36
        # late mark 35: a@22 (windows ending 25, 30), a@27 and b@28 (30, 35) are late;
        # a@31 and b@33 (35, 40) and a@36 (40, 45) count in their open windows
        rows(("a", 22), ("a", 27), ("b", 28), ("a", 31), ("b", 33), ("a", 36)),
        # late mark 36: a@22 twice again (late); b@31 (35, 40) counts in [30, 40)
        rows(("a", 22), ("a", 22), ("b", 31)),
    ]
    for mode in ("append", "update"):
        got, want = late_counts(plan, mode, batches)
        assert got == [0, 0, 3, 2]  # late partial states hold 8 rows in batch 2, 5 in 3
        assert want == got


def test_sliding_rows_count_late_once_with_aggregates_that_read_rows() -> None:
    """The same rows and counts as above with sketch aggregates (built from the rows, not
    from per-group expressions), alone and beside a count."""
    df = sk.from_arrow(EMPTY).with_watermark("t", "5 minutes")
    grouped = df.group_by(sk.window("t", "10 minutes", "5 minutes"), "k")
    batches = [
        rows(("a", 40)),
        rows(("a", 41)),
        rows(("a", 22), ("a", 27), ("b", 28), ("a", 31), ("b", 33), ("a", 36)),
        rows(("a", 22), ("a", 22), ("b", 31)),
    ]
    for aggs in ([sk.approx_count_distinct("v")], [sk.count(), sk.approx_percentile("v", 0.5)]):
        got, want = late_counts(grouped.agg(*aggs).plan, "update", batches)
        assert got == [0, 0, 3, 2]
        assert want == got


def test_partial_marks_rows_on_each_rows_last_window_only() -> None:
    """``partial(..., last_rows)``: each partial state carries the rows whose last window
    it is, 0 on its other windows (minutes 3 and 7 with 10-minute windows every 5: the row
    at 3 is in [-5, 5) and [0, 10), last [0, 10); the one at 7 in [0, 10) and [5, 15),
    last [5, 15))."""
    from streamkit import aggregate as K
    from streamkit.execute import aggregate_rows

    df = sk.from_arrow(EMPTY).with_watermark("t", "5 minutes")
    plan = df.group_by(sk.window("t", "10 minutes", "5 minutes"), "k").agg(sk.count()).plan
    fleet = FleetPlan.of(plan, "update")
    agg, spec = fleet.agg, fleet.spec
    assert agg is not None
    states = K.partial(aggregate_rows(rows(("a", 3), ("a", 7)).lazy(), agg, spec), spec, "m")
    minute = 60_000_000  # microseconds
    starts = states.select((pl.col("__wstart") - sim.T0_US) // minute, "m")
    got = sorted(starts.iter_rows())
    assert got == [(-5, 0), (0, 0), (0, 1), (5, 1)]


def test_repeated_late_rows_of_one_key_are_each_late_in_drop_duplicates() -> None:
    df = sk.from_arrow(EMPTY).with_watermark("t", "5 minutes")
    batches = [
        rows(("a", 40)),  # W 35
        rows(("a", 41)),  # late mark None; W 36
        # late mark 35: a@30 three times (one key of k and t, values differ) and b@35 are
        # late; b@36 and the repeat of a@41 are not
        rows(("a", 30, 1), ("a", 30, 2), ("a", 30, 3), ("b", 35), ("b", 36), ("a", 41)),
        # late mark 36: a@30 twice and b@36 again are late; c@50 is not
        rows(("a", 30), ("a", 30), ("b", 36), ("c", 50)),
    ]
    for keys in (["k", "t"], None):  # the source keeps the first row of each key: it
        plan = df.drop_duplicates(keys).plan  # stands for the batch's rows of the key
        got, want = late_counts(plan, "append", batches)
        assert got == [0, 0, 4, 3]
        assert want == got
    plan = df.drop_duplicates(["k"]).plan  # every row sent, each judged
    got, want = late_counts(plan, "append", batches)
    assert got == want == [0, 0, 4, 3]


STATIC = {"k": ["a", "a", "b"], "region": ["eu", "us", "eu"]}
"""Key a has two rows: a joined row of key a is repeated."""


def test_a_row_a_join_repeats_is_one_late_row() -> None:
    df = sk.read_stream.memory(EMPTY.schema).with_watermark("t", "5 minutes")
    joined = df.join(sk.from_arrow(pa.table(STATIC)), on="k", how="inner")
    tumbling = joined.group_by(sk.window("t", "10 minutes"), "region").agg(sk.count()).plan
    sliding = joined.group_by(sk.window("t", "10 minutes", "5 minutes"), "region")
    batches = [
        rows(("a", 40)),  # W 35
        rows(("a", 41)),  # late mark None; W 36
        # late mark 35: a@12 (joined twice: eu and us) and b@14 are late; c@3 has no
        # match (dropped by the join, not late); a@38 is not late
        rows(("a", 12), ("b", 14), ("c", 3), ("a", 38)),
        # late mark 36: a@22 twice (each joined twice) is late; a@33: sliding, it counts in
        # [30, 40), tumbling [30, 40) too
        rows(("a", 22), ("a", 22), ("a", 33)),
    ]
    for plan in (tumbling, sliding.agg(sk.count()).plan):
        got, want = late_counts(plan, "update", batches)
        assert got == [0, 0, 2, 2]  # late partial states hold 3 and 4 joined rows
        assert want == got
    # sessions (gap 4): a row at t is late when t + 4 <= the late mark: the same rows
    session = joined.group_by(sk.session_window("t", "4 minutes"), "region").agg(sk.count())
    got, want = late_counts(session.plan, "append", batches)
    assert got == want == [0, 0, 2, 2]
    # drop_duplicates judges the event time itself: a@33 is late too (33 <= 36); by
    # region and t the source keeps one row per key, by region alone it sends every row
    for keys in (["region", "t"], ["region"]):
        got, want = late_counts(joined.drop_duplicates(keys).plan, "append", batches)
        assert got == want == [0, 0, 2, 3]


def test_a_version_1_chunk_beside_a_version_2_one_counts_by_its_row_count() -> None:
    """A chunk an older worker left on the exchange (version 1, no late-row column) is
    applied beside one with it: its late partial states count ``__n`` rows."""
    df = sk.from_arrow(EMPTY).with_watermark("t", "5 minutes")
    fleet = FleetPlan.of(
        df.group_by(sk.window("t", "10 minutes", "5 minutes"), "k").agg(sk.count()).plan,
        "append",
    )
    source, stage = SourceStage(fleet), AggregationStage(fleet, query="q")
    ticks = [0]

    def chunk(shard: str, seq: int, batch: pl.DataFrame, old: bool = False) -> bytes:
        out = source.run(batch)
        ticks[0] = max(ticks[0], out.max_event or 0)
        first = str(seq) if seq else None
        ((data,),) = source.chunks(out, shard, first, str(seq + 1), ticks[0], False, 1, "q")
        if not old:
            return data
        header, states = decode_chunk(data)
        return encode_chunk(ChunkHeader(**{**header.__dict__, "v": 1}), states.drop(LATE))

    stage.apply([chunk("s", 0, rows(("a", 40))), chunk("o", 0, rows(("a", 40)), True)], 0)
    stage.apply([chunk("s", 1, rows(("a", 41))), chunk("o", 1, rows(("a", 41)), True)], 1)
    assert decode_chunk(chunk("x", 0, rows(("a", 1)), True))[0].v == 1
    # late mark 35: a@22 is late: 1 row read from s, and from o its late states [15, 25)
    # and [20, 30), one row each, as a version-1 aggregation task counted them
    stage.apply([chunk("s", 2, rows(("a", 22))), chunk("o", 2, rows(("a", 22)), True)], 2)
    assert stage.late_rows == 1 + 2


def test_a_batch_large_enough_for_slot_partials_counts_the_same() -> None:
    """70,000 rows in one batch (the kernel reduces by dense slots from 65,536 rows on,
    with integer keys), minutes 0-60 at random: with late mark 35, a row is late when its
    last window (the one starting at its 5-minute slot) ends by 35, i.e. when it is
    before minute 30."""
    df = sk.from_arrow(EMPTY).with_watermark("t", "5 minutes")
    plan = df.group_by(sk.window("t", "10 minutes", "5 minutes"), "v").agg(sk.count()).plan
    rng = random.Random(3)
    big = rows(*(("a", rng.randrange(0, 3600) / 60, rng.randrange(3)) for _ in range(70_000)))
    before_30 = big.filter(pl.col("t") < T0 + timedelta(minutes=30)).height
    assert 30_000 < before_30 < 40_000
    got, want = late_counts(plan, "update", [rows(("a", 40)), rows(("a", 41)), big])
    assert got == want == [0, 0, before_30]


def test_only_a_static_side_that_repeats_a_join_key_may_repeat_a_row() -> None:
    """Null keys match nothing; a semi join never repeats a row; a join with no equality
    may."""
    from streamkit.fleet.late_rows import joins_may_repeat

    stream = sk.read_stream.memory(EMPTY.schema)

    def may_repeat(keys: list[str | None], how: str = "inner", on: object = "k") -> bool:
        static = sk.from_arrow(pa.table({"k": pa.array(keys, pa.string()), "x": [1] * len(keys)}))
        side = static if isinstance(on, str) else static.select(sk.col("k").alias("k2"), "x")
        joined = stream.join(side, on=on, how=how)
        fleet = FleetPlan.of(joined.drop_duplicates().plan, "append")
        fleet.refresh_static()
        return joins_may_repeat(fleet.below)

    assert not may_repeat(["a", "b", None, None])
    assert may_repeat(["a", "b", "a"])
    assert may_repeat(["a", "b", "a"], how="left")
    assert not may_repeat(["a", "b", "a"], how="left_semi")
    assert may_repeat(["a", "b"], on=sk.col("v") < sk.col("x"))


def test_sliding_windows_whose_size_is_no_multiple_of_the_slide_count_as_the_engine() -> None:
    """10-minute windows every 3 minutes from minute 1 (buckets of 1 minute, 3 or 4
    windows a row), rows out of order in random batches: batch by batch as the engine."""
    df = sk.from_arrow(EMPTY).with_watermark("t", "15 minutes")
    window = sk.window("t", "10 minutes", "3 minutes", start_offset="1 minute")
    plan = df.group_by(window, "k").agg(sk.count()).plan
    table = sim.table(21, 400)
    rng = random.Random(21)
    cuts = sorted(rng.sample(range(1, table.height), 12))
    ends = [*cuts, table.height]
    batches = [table.slice(a, b - a) for a, b in zip([0, *cuts], ends, strict=True)]
    got, want = late_counts(plan, "append", batches)
    assert got == want
    assert sum(got) > 20
