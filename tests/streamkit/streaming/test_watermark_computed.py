"""with_watermark on an event-time column computed or renamed before it (issue 18), as
Spark runs it: the watermark is the max of the computed column, lateness and windows are
judged on it, ``late_rows`` holds the late rows as read (their own columns), and all of
it survives a restart.

The shift is 7 minutes, not a multiple of the 10-minute windows, so that judging on the
column as read gives other watermarks and other late rows (worked out in the comments;
expected values come from the plain-Python model :func:`model`, never from streamkit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.errors import PlanError
from streamkit.group_state import GroupStateTimeout
from streamkit.streaming.incremental import IncrementalQuery
from streamkit.streaming.sources.memory import MemoryStream
from streamkit.streaming.watermarks import PartitionWatermarks

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

T0 = datetime(2024, 1, 1, tzinfo=UTC)
SHIFT = timedelta(minutes=7)
DELAY = timedelta(minutes=5)
SIZE = timedelta(minutes=10)
SCHEMA = pa.schema(
    [("event_time", pa.timestamp("us", "UTC")), ("k", pa.string()), ("v", pa.int64())]
)

Row = tuple[int, str, int]
"""(minutes after T0 as read, key, value)."""

# Runs of batches, a restart between runs. Shifted by 7: A sets W = 47 - 5 = 42 (as read:
# 35). B's 30 (37, window [30,40), 40 <= 42) is late (as read: [30,40) is open at 35).
# After the restart C's 31 (38) is late against the saved 42 (as read: on time); C sets
# W = 57 - 5 = 52; D's 39 (46, [40,50)) is late, 43 (50, [50,60)) is not.
RUNS: list[list[list[Row]]] = [
    [[(1, "a", 1), (40, "a", 2)], [(30, "a", 4), (33, "b", 8)]],
    [[(31, "a", 16), (50, "b", 32)], [(43, "b", 64), (39, "a", 128)]],
]


def minutes(m: float) -> datetime:
    return T0 + timedelta(minutes=m)


def table(rows: list[Row]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"event_time": minutes(m), "k": k, "v": v} for m, k, v in rows], schema=SCHEMA
    )


def window_of(t: datetime) -> tuple[datetime, datetime]:
    start = T0 + (t - T0) // SIZE * SIZE
    return start, start + SIZE


@dataclass
class Model:
    """The run worked out in plain Python, on the shifted event times."""

    watermarks: list[datetime] = field(default_factory=list)
    late: list[Row] = field(default_factory=list)
    sums: dict[tuple[datetime, str], int] = field(default_factory=dict)


def model(runs: list[list[list[Row]]], shift: timedelta = SHIFT) -> Model:
    """Each batch judges its rows against the watermark after the batch before it (a
    no-data batch runs in between whenever the watermark moved)."""
    out, top = Model(), None
    for batch in (b for run in runs for b in run):
        previous = out.watermarks[-1] if out.watermarks else None
        for m, k, v in batch:
            start, end = window_of(minutes(m) + shift)
            if previous is not None and end <= previous:
                out.late.append((m, k, v))
            else:
                out.sums[(start, k)] = out.sums.get((start, k), 0) + v
        top = max([minutes(m) + shift for m, _, _ in batch] + ([top] if top else []))
        out.watermarks.append(top - DELAY)
    return out


def shifted(df: sk.DataFrame) -> sk.DataFrame:
    return df.with_column("event_time", sk.col("event_time") + SHIFT)


def renamed_and_shifted(df: sk.DataFrame) -> sk.DataFrame:
    return df.select((sk.col("event_time") + SHIFT).alias("t"), "k", "v").select(
        sk.col("t").alias("event_time"), "k", "v"
    )


def windowed(df: sk.DataFrame) -> sk.DataFrame:
    return df.group_by(sk.window("event_time", "10 minutes"), "k").agg(sk.sum("v").alias("x"))


@dataclass
class Run:
    emitted: list[dict[str, Any]] = field(default_factory=list)
    watermarks: list[datetime] = field(default_factory=list)
    """The watermark after each data batch."""
    late: list[Row] = field(default_factory=list)


def run(
    runs: list[list[list[Row]]], ck: Path, before: Callable[[sk.DataFrame], sk.DataFrame]
) -> Run:
    """Each run of batches in a new query on checkpoint ``ck``, update mode."""
    stream, out = MemoryStream(SCHEMA), Run()

    def collect(df: sk.DataFrame, batch_id: int) -> None:
        out.emitted += df.to_arrow().to_pylist()

    for batches in runs:
        df = windowed(before(sk.read_stream.source(stream)).with_watermark("event_time", DELAY))
        q = df.write_stream.output_mode("update").checkpoint(str(ck)).foreach_batch(collect)
        query = q.start()
        try:
            for batch in batches:
                stream.add_rows(table(batch))
                query.process_all_available()
                data = [p for p in query.recent_progress if p.num_input_rows]
                mark = data[-1].watermark
                assert mark is not None
                out.watermarks.append(mark)
        finally:
            query.stop()
            query.await_termination()
        late = query.late_rows
        if late is not None:
            assert late.column_names == SCHEMA.names, "late rows carry the columns as read"
            out.late += [
                ((r["event_time"] - T0) // timedelta(minutes=1), r["k"], r["v"])
                for r in late.to_pylist()
            ]
    return out


def latest(emitted: list[dict[str, Any]]) -> dict[tuple[datetime, str], int]:
    return {(r["window"]["start"], r["k"]): r["x"] for r in emitted}


@pytest.mark.parametrize("before", [shifted, renamed_and_shifted], ids=["computed", "renamed"])
def test_watermark_and_late_rows_follow_the_computed_column_across_a_restart(
    before: Callable[[sk.DataFrame], sk.DataFrame], tmp_path: Path
) -> None:
    want = model(RUNS)
    assert want.watermarks == [minutes(42), minutes(42), minutes(52), minutes(52)]
    assert want.late == [(30, "a", 4), (31, "a", 16), (39, "a", 128)]
    got = run(RUNS, tmp_path / "ck", before)
    assert got.watermarks == want.watermarks
    assert sorted(got.late) == sorted(want.late)
    assert latest(got.emitted) == want.sums


def test_the_model_tells_the_computed_column_from_the_one_as_read() -> None:
    """Judged on the column as read, the same rows give other watermarks and late rows:
    the test above fails when streamkit uses the column as read."""
    raw = model(RUNS, timedelta(0))
    assert raw.watermarks[0] == minutes(35)
    assert raw.late == [(39, "a", 128)]


def test_the_same_query_code_gives_the_batch_result_when_nothing_is_late() -> None:
    """Batch/stream parity: the rows of the runs that are not late, as one batch through
    the same query code, give the stream's final result."""
    kept = [r for b in (b for run in RUNS for b in run) for r in b if r not in model(RUNS).late]
    frame = sk.from_arrow(table(kept))
    for before in (shifted, renamed_and_shifted):
        batch = windowed(before(frame).with_watermark("event_time", DELAY)).to_arrow()
        assert latest(batch.to_pylist()) == model(RUNS).sums


def test_a_renamed_column_missing_from_the_rows_as_read_runs_no_data_batches() -> None:
    """A renamed event time is not a column of the rows as read: a batch without rows
    (the no-data batch) still evicts with the watermark."""
    empty = pa.table({"ts": pa.array([], pa.timestamp("us", "UTC"))})
    df = sk.from_arrow(empty).select(sk.col("ts").alias("t")).with_watermark("t", DELAY)
    plan = df.group_by(sk.window("t", "10 minutes")).agg(sk.count().alias("n")).plan
    q = IncrementalQuery(plan, "append")
    rows = pl.DataFrame({"ts": [minutes(1), minutes(30)]}, schema={"ts": pl.Datetime("us", "UTC")})
    assert q.run(rows).output.height == 0  # nothing in force yet
    assert q.owes_batch
    out = q.run_no_data().output  # W = 25: [0, 10) closes
    assert [r["n"] for r in out.iter_rows(named=True)] == [1]


def test_a_filter_below_the_computed_column_keeps_its_rows_out_of_the_watermark() -> None:
    """``filter(k != "z")`` before ``t + 7 min``: z's row at 100 reaches no watermark, a's
    at 1 (8) gives W = 3 min (the column as read: -4 min). Batch 2: a at 0 (7, window
    [0, 10) open at 3) counts, z at 0 is filtered, not late."""
    empty = pa.table({"t": pa.array([], pa.timestamp("us", "UTC")), "k": pa.array([], pa.string())})
    df = sk.from_arrow(empty).filter(sk.col("k") != "z")
    df = df.with_column("t", sk.col("t") + SHIFT).with_watermark("t", DELAY)
    plan = df.group_by(sk.window("t", "10 minutes"), "k").agg(sk.count().alias("n")).plan
    q = IncrementalQuery(plan, "update")
    schema = pl.Schema({"t": pl.Datetime("us", "UTC"), "k": pl.String()})
    q.run(pl.DataFrame({"t": [minutes(1), minutes(100)], "k": ["a", "z"]}, schema=schema))
    assert q.watermark == int(minutes(3).timestamp()) * 1_000_000
    q.run_no_data()
    result = q.run(pl.DataFrame({"t": [minutes(0), minutes(0)], "k": ["a", "z"]}, schema=schema))
    assert result.late_rows.height == 0
    assert [(r["k"], r["n"]) for r in result.output.iter_rows(named=True)] == [("a", 2)]


def test_per_partition_maxima_are_over_the_computed_column() -> None:
    """Kinesis/Kafka path: each partition's max is its largest computed event time.
    Partition p at 10 (17 computed) and q at 40 (47): under "min" W = 17 - 5 = 12 min,
    under "global" 47 - 5 = 42 (as read: 5 and 35)."""
    empty = pa.table({"t": pa.array([], pa.timestamp("us", "UTC"))})
    df = sk.from_arrow(empty).with_column("t", sk.col("t") + SHIFT).with_watermark("t", DELAY)
    plan = df.group_by(sk.window("t", "10 minutes")).agg(sk.count().alias("n")).plan
    rows = pl.DataFrame({"t": [minutes(10), minutes(40)]}, schema={"t": pl.Datetime("us", "UTC")})
    parts = pa.array(["p", "q"], pa.string())
    t0_us = int(T0.timestamp()) * 1_000_000
    for policy, top in (("min", 17), ("global", 47)):
        q = IncrementalQuery(plan, "update", watermarks=PartitionWatermarks(policy))  # type: ignore[arg-type]
        q.run(rows, parts)
        assert q.partition_maxima == {"p": t0_us + 17 * 60_000_000, "q": t0_us + 47 * 60_000_000}
        assert q.watermark == t0_us + (top - 5) * 60_000_000


def test_drop_duplicates_judges_lateness_on_the_column_put_in_place_of_another() -> None:
    """``t`` (as read: ingest time) replaced by ``e`` before the watermark. Batch 1 (e at 1
    and 40) sets W = 35 (on ``t`` as read it would be 50 - 5 = 45); batch 2's row with e
    at 38 is kept (t as read at 0 would be late) and the one with e at 30 is late (t as
    read at 60 would be kept). A constant shift cannot show it: ``t <= W`` is unchanged
    by one."""
    schema = pl.Schema({"t": pl.Datetime("us", "UTC"), "e": pl.Datetime("us", "UTC"),
                        "k": pl.String()})  # fmt: skip
    df = sk.from_arrow(pl.DataFrame(schema=schema).to_arrow())
    df = df.with_column("t", sk.col("e")).with_watermark("t", DELAY)
    q = IncrementalQuery(df.drop_duplicates(["k", "t"]).plan, "append")

    def rows(*r: tuple[int, int, str]) -> pl.DataFrame:
        data = [{"t": minutes(t), "e": minutes(e), "k": k} for t, e, k in r]
        return pl.DataFrame(data, schema=schema)

    q.run(rows((50, 1, "a"), (0, 40, "a")))
    assert q.watermark == int(minutes(35).timestamp()) * 1_000_000
    q.run_no_data()
    result = q.run(rows((0, 38, "b"), (60, 30, "c")))
    assert result.late_rows.to_dicts() == [{"t": minutes(60), "e": minutes(30), "k": "c"}]
    assert result.output.to_dicts() == [{"t": minutes(38), "e": minutes(38), "k": "b"}]


def _count(key: tuple[Any, ...], pdfs: Iterator[pd.DataFrame], state: Any) -> Any:
    n = (state.get[0] if state.exists else 0) + sum(len(p) for p in pdfs)
    state.update((n,))
    yield pd.DataFrame({"k": [key[0]], "n": [n]})


def test_event_time_timeouts_judge_lateness_on_the_column_put_in_place_of_another() -> None:
    """``apply_in_pandas_with_state`` with ``EventTimeTimeout``, the same batches as the
    drop_duplicates test: W = 35 after batch 1, b's row (e at 38) reaches the function, c's
    (e at 30) is late and kept as read."""
    schema = pl.Schema({"t": pl.Datetime("us", "UTC"), "e": pl.Datetime("us", "UTC"),
                        "k": pl.String()})  # fmt: skip
    df = sk.from_arrow(pl.DataFrame(schema=schema).to_arrow())
    df = df.with_column("t", sk.col("e")).with_watermark("t", DELAY)
    out = df.group_by("k").apply_in_pandas_with_state(
        _count, "k string, n bigint", "n bigint", "update", GroupStateTimeout.EventTimeTimeout
    )
    q = IncrementalQuery(out.plan, "update")

    def rows(*r: tuple[int, int, str]) -> pl.DataFrame:
        data = [{"t": minutes(t), "e": minutes(e), "k": k} for t, e, k in r]
        return pl.DataFrame(data, schema=schema)

    q.run(rows((50, 1, "a"), (0, 40, "a")))
    q.run_no_data()
    result = q.run(rows((0, 38, "b"), (60, 30, "c")))
    assert result.late_rows.to_dicts() == [{"t": minutes(60), "e": minutes(30), "k": "c"}]
    assert result.output.to_dicts() == [{"k": "b", "n": 1}]


def test_a_watermark_on_a_column_that_is_not_a_timestamp_is_still_refused() -> None:
    """Spark refuses it too (``EventTimeWatermark`` needs a timestamp)."""
    df = sk.read_stream.source(MemoryStream(SCHEMA)).with_column("n", sk.col("v") + 1)
    with pytest.raises(PlanError, match="needs a timestamp column"):
        df.with_watermark("n", DELAY)
