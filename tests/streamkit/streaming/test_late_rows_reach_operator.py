"""Late rows are the rows that reach the stateful operator and are dropped there as late
(issue 18, review finding F3): a row behind the watermark that a filter or an inner
stream-static join below the operator rejects is neither aggregated nor late, as Spark's
``numRowsDroppedByWatermark`` counts only what its stateful operator drops. The late rows
are the rows as read, each once (a row a join repeats included).

Every shape runs the same batches (minutes after T0, key, value), windows of 10 minutes,
a delay of 5, and the rows of key ``z`` rejected below the operator. Worked out by hand:

- batch 0: ``(40, a, 1)`` -> W = 40 - 5 = 35 (nothing in force yet: nothing is late);
- a no-data batch puts W = 35 in force;
- batch 1 (late mark 35): ``(10, z, 4)`` is behind it ([10,20) ends at 20 <= 35) but
  rejected; ``(11, a, 8)`` is late ([10,20)); ``(38, a, 16)`` is on time ([30,40) ends at
  40 > 35).

So the late rows of batch 1 are ``[(11, a, 8)]`` (before the fix: ``(10, z, 4)`` too).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.fleet import AggregationStage, FleetPlan, SourceStage
from streamkit.group_state import GroupStateTimeout
from streamkit.streaming.incremental import IncrementalQuery
from streamkit.streaming.sources.memory import MemoryStream
from streamkit.streaming.watermark_input import operator_rows

T0 = datetime(2024, 1, 1, tzinfo=UTC)
DELAY = timedelta(minutes=5)
SHIFT = timedelta(minutes=7)
SCHEMA = pa.schema([("t", pa.timestamp("us", "UTC")), ("k", pa.string()), ("v", pa.int64())])
ROWS = pl.Schema({"t": pl.Datetime("us", "UTC"), "k": pl.String(), "v": pl.Int64()})

Row = tuple[int, str, int]
BATCH_0: list[Row] = [(40, "a", 1)]
BATCH_1: list[Row] = [(10, "z", 4), (11, "a", 8), (38, "a", 16)]
LATE: list[Row] = [(11, "a", 8)]
"""Batch 1's late rows, as read."""


def minutes(m: float) -> datetime:
    return T0 + timedelta(minutes=m)


def frame(rows: list[Row]) -> pl.DataFrame:
    return pl.DataFrame(
        [{"t": minutes(m), "k": k, "v": v} for m, k, v in rows], schema=ROWS, orient="row"
    )


def as_rows(df: pl.DataFrame) -> list[Row]:
    return [((t - T0) // timedelta(minutes=1), k, v) for t, k, v in df.select("t", "k", "v").rows()]


def stream() -> sk.DataFrame:
    return sk.read_stream.source(MemoryStream(SCHEMA))


def static() -> sk.DataFrame:
    """Two static rows for ``a`` (a stream row of ``a`` is joined twice), none for ``z``."""
    return sk.from_arrow(pa.table({"k": ["a", "a", "b"], "grp": ["x", "y", "x"]}))


def summed(df: sk.DataFrame) -> sk.DataFrame:
    return df.group_by(sk.window("t", "10 minutes"), "k").agg(sk.sum("v").alias("s"))


NOT_Z = sk.col("k") != "z"
Build = Callable[[sk.DataFrame], sk.DataFrame]

# shape -> (the frame before the windowed sum, update-mode output of batch 0 and batch 1 as
# {(window start in minutes, key): sum}).
AGGREGATIONS: dict[str, tuple[Build, list[dict[tuple[int, str], int]]]] = {
    # batch 0: [40,50) a 1; batch 1: [30,40) a 16 (11 is late, z filtered)
    "filter below the watermark": (
        lambda s: s.filter(NOT_Z).with_watermark("t", DELAY),
        [{(40, "a"): 1}, {(30, "a"): 16}],
    ),
    "filter above the watermark": (
        lambda s: s.with_watermark("t", DELAY).filter(NOT_Z),
        [{(40, "a"): 1}, {(30, "a"): 16}],
    ),
    # a filter that Spark keeps above its watermark (it reads the event time); z at 10 is
    # behind it and rejected by it
    "filter on the event time above the watermark": (
        lambda s: s.with_watermark("t", DELAY).filter(sk.col("t") != minutes(10)),
        [{(40, "a"): 1}, {(30, "a"): 16}],
    ),
    # t + 7: batch 0 at 47 -> W = 42; batch 1: z (17) and a (18) are behind [10,20), a at
    # 45 counts in [40,50): 1 + 16 = 17. The late row is a's as read (t = 11, not 18).
    "computed event time, filter above the watermark": (
        lambda s: s.with_column("t", sk.col("t") + SHIFT).with_watermark("t", DELAY).filter(NOT_Z),
        [{(40, "a"): 1}, {(40, "a"): 17}],
    ),
    # inner join above the watermark: z reaches the watermark (Spark infers only
    # k IS NOT NULL) but no static row; every a row is joined twice: sums doubled
    "watermark then inner stream-static join": (
        lambda s: s.with_watermark("t", DELAY).join(static(), "k"),
        [{(40, "a"): 2}, {(30, "a"): 32}],
    ),
    "inner stream-static join then the watermark": (
        lambda s: s.join(static(), "k").with_watermark("t", DELAY),
        [{(40, "a"): 2}, {(30, "a"): 32}],
    ),
}


def _sums(df: pl.DataFrame) -> dict[tuple[int, str], int]:
    return {((w["start"] - T0) // timedelta(minutes=1), k): s for w, k, s in df.rows()}


def _run(q: IncrementalQuery) -> tuple[list[Any], list[list[Row]]]:
    """Batch 0, a no-data batch, batch 1: (the data batches' outputs, their late rows)."""
    first = q.run(frame(BATCH_0))
    q.run_no_data()
    second = q.run(frame(BATCH_1))
    return [first.output, second.output], [as_rows(first.late_rows), as_rows(second.late_rows)]


@pytest.mark.parametrize("shape", list(AGGREGATIONS))
def test_only_rows_that_reach_the_aggregation_are_late(shape: str) -> None:
    build, sums = AGGREGATIONS[shape]
    q = IncrementalQuery(summed(build(stream())).plan, "update")
    outputs, late = _run(q)
    assert late == [[], LATE]
    assert [_sums(o) for o in outputs] == sums


def test_late_rows_keep_the_columns_as_read() -> None:
    """The late row of a joined stream has the stream's columns, not the static ones."""
    q = IncrementalQuery(summed(stream().join(static(), "k").with_watermark("t", DELAY)).plan,
                         "update")  # fmt: skip
    q.run(frame(BATCH_0))
    q.run_no_data()
    assert q.run(frame(BATCH_1)).late_rows.columns == ["t", "k", "v"]


def test_drop_duplicates_reports_only_the_rows_that_reach_it() -> None:
    """drop_duplicates on (k, t) after a filter: batch 1's ``(11, a)`` is at or behind 35
    (late), z's row is filtered, ``(38, a)`` is new and emitted."""
    df = stream().with_watermark("t", DELAY).filter(NOT_Z).drop_duplicates(["k", "t"])
    q = IncrementalQuery(df.plan, "append")
    outputs, late = _run(q)
    assert late == [[], LATE]
    assert [as_rows(o) for o in outputs] == [BATCH_0, [(38, "a", 16)]]


def _count(key: tuple[Any, ...], pdfs: Any, state: Any) -> Any:
    n = (state.get[0] if state.exists else 0) + sum(len(p) for p in pdfs)
    state.update((n,))
    yield pd.DataFrame({"k": [key[0]], "n": [n]})


def test_event_time_timeouts_report_only_the_rows_that_reach_the_function() -> None:
    """``apply_in_pandas_with_state`` under ``EventTimeTimeout`` after a filter: a's row at
    11 is late (not passed to the function), z's is filtered; a's at 38 makes a's count 2."""
    df = stream().with_watermark("t", DELAY).filter(NOT_Z)
    out = df.group_by("k").apply_in_pandas_with_state(
        _count, "k string, n bigint", "n bigint", "update", GroupStateTimeout.EventTimeTimeout
    )
    q = IncrementalQuery(out.plan, "update")
    outputs, late = _run(q)
    assert late == [[], LATE]
    assert [o.rows() for o in outputs] == [[("a", 1)], [("a", 2)]]


def test_a_query_counts_only_the_rows_that_reach_the_aggregation() -> None:
    """Through the query: progress ``late_rows`` and ``q.late_rows`` hold a's row only."""
    source = MemoryStream(SCHEMA)
    df = summed(sk.read_stream.source(source).filter(NOT_Z).with_watermark("t", DELAY))
    query = df.write_stream.output_mode("update").foreach_batch(lambda _df, _bid: None).start()
    try:
        for rows in (BATCH_0, BATCH_1):
            source.add_rows(frame(rows).to_arrow())
            query.process_all_available()
        counts = [p.late_rows for p in query.recent_progress if p.num_input_rows]
        late = query.late_rows
    finally:
        query.stop()
        query.await_termination()
    assert counts == [0, 1]
    assert late is not None
    assert as_rows(pl.from_arrow(late)) == LATE  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", ["filter below the watermark", "filter above the watermark",
                                   "watermark then inner stream-static join"])  # fmt: skip
def test_a_fleet_counts_only_the_rows_that_reach_the_aggregation(shape: str) -> None:
    """The fleet judges partial states of the plan below the aggregation (source stage):
    z's row never reaches them. One source shard, one aggregation task: its late count is
    batch 1's late row, counted once as read, as the single process counts it (a's row is
    joined twice in the join shape; the source task tags the copy so that the late
    partial states stand for one row read, :mod:`streamkit.fleet.late_rows`)."""
    build, _ = AGGREGATIONS[shape]
    fleet = FleetPlan.of(summed(build(stream())).plan, "update")
    source, stage = SourceStage(fleet), AggregationStage(fleet, query="q")
    top: int | None = None
    for seq, rows in enumerate((BATCH_0, BATCH_1)):
        out = source.run(frame(rows))
        top = out.max_event if top is None else max(top, out.max_event or top)
        (parts,) = source.chunks(out, "s", str(seq) if seq else None, str(seq + 1), top,
                                 False, 1, "q")  # fmt: skip
        stage.apply(parts, now=float(seq))
        if stage.owes_batch:
            stage.run_no_data(now=float(seq))
    assert stage.late_rows == 1


def test_a_fleet_drop_duplicates_counts_only_the_rows_that_reach_it() -> None:
    df = stream().with_watermark("t", DELAY).filter(NOT_Z).drop_duplicates(["k", "t"])
    fleet = FleetPlan.of(df.plan, "append")
    source, stage = SourceStage(fleet), AggregationStage(fleet, query="q")
    top: int | None = None
    late: list[Row] = []
    for seq, rows in enumerate((BATCH_0, BATCH_1)):
        out = source.run(frame(rows))
        top = out.max_event if top is None else max(top, out.max_event or top)
        (parts,) = source.chunks(out, "s", str(seq) if seq else None, str(seq + 1), top,
                                 False, 1, "q")  # fmt: skip
        late += as_rows(stage.apply(parts, now=float(seq)).late_rows)
        if stage.owes_batch:
            stage.run_no_data(now=float(seq))
    assert (late, stage.late_rows) == (LATE, 1)


def test_every_row_reaches_an_operator_over_projections_or_an_unthreaded_plan() -> None:
    """No index is paid over projections only (every row reaches the operator); a plan
    with a stream-stream join below (not threaded) takes every row read; a filter is
    threaded."""
    s = stream()
    other = stream().select(sk.col("t").alias("t2"), sk.col("k").alias("k2"))
    joined = s.join(other, sk.col("k") == sk.col("k2")).filter(sk.col("v") > 1)
    assert (
        operator_rows(s.with_column("w", sk.col("v") + 1).with_watermark("t", DELAY).plan) is None
    )
    assert operator_rows(joined.plan) is None
    reach = operator_rows(s.filter(sk.col("v") > 1).plan)
    assert reach is not None
    assert reach.mask(frame(BATCH_1)).to_list() == [True, True, True]
    assert reach.mask(frame([(1, "a", 0), (2, "b", 2)])).to_list() == [False, True]
