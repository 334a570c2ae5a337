"""A watermark's event time in a plan with a stream-static join: one computed or renamed
from the stream's columns runs (before or after the join, Spark accepts all three shapes),
one that reads a column of the static side is refused, single-process and on a fleet.

Expected watermarks, late rows and counts are derived by hand in the comments."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import polars as pl
import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.errors import PlanError
from streamkit.fleet import FleetPlan
from streamkit.plan import Plan
from streamkit.streaming.incremental import IncrementalQuery
from streamkit.streaming.sources.memory import MemoryStream

T0 = datetime(2024, 1, 1, tzinfo=UTC)
SHIFT = timedelta(minutes=7)
DELAY = timedelta(minutes=5)
SCHEMA = pa.schema([("ts", pa.timestamp("us", "UTC")), ("k", pa.string())])
ROWS = pl.Schema({"ts": pl.Datetime("us", "UTC"), "k": pl.String()})
Build = Callable[[sk.DataFrame, sk.DataFrame], sk.DataFrame]


def static() -> sk.DataFrame:
    """Two static rows for key ``a`` (a stream row of ``a`` is joined twice), one for ``b``."""
    hour = 60 * 60_000_000
    return sk.from_arrow(
        pa.table({
            "k": ["a", "a", "b"],
            "off": pa.array([0, hour, 0], pa.duration("us")),
            "st": pa.array([0, 0, 0], pa.timestamp("us", "UTC")),
        })
    )  # fmt: skip


def stream() -> sk.DataFrame:
    return sk.read_stream.source(MemoryStream(SCHEMA))


def minutes(m: float) -> datetime:
    return T0 + timedelta(minutes=m)


def counted(df: sk.DataFrame, column: str) -> Plan:
    return df.group_by(sk.window(column, "10 minutes"), "k").agg(sk.count().alias("n")).plan


SHAPES: dict[str, Build] = {
    "computed after the join": lambda s, st: (
        s.join(st, "k").with_column("t", sk.col("ts") + SHIFT).with_watermark("t", DELAY)
    ),
    "computed before the join, watermark after": lambda s, st: (
        s.with_column("t", sk.col("ts") + SHIFT).join(st, "k").with_watermark("t", DELAY)
    ),
    "renamed, watermark, then the join": lambda s, st: (
        s.select(sk.col("ts").alias("t"), "k").with_watermark("t", DELAY).join(st, "k")
    ),
}

# Data batches (minutes from T0, key), each followed by a no-data batch, so a batch's rows
# are judged against the watermark after the data batch before it (F, rule 2). Each stream
# row of key a is joined twice (two static rows), so each count of a is doubled; z has no
# static row.
BATCHES = [
    [(0, "a"), (2, "b"), (30, "z")],
    [(-4, "a"), (12, "a"), (22, "b")],
    [(14, "a"), (5, "b")],
]
# Computed t = ts + 7 below the watermark, the join below it too: z never reaches it.
#   batch 0: t 7, 9 -> W = 9 - 5 = 4; windows [0,10) a 2, b 1.
#   batch 1 (F = 4): t 3 -> [0,10) (end 10 > 4) a 4; t 19 -> [10,20) a 2; t 29 -> [20,30)
#            b 1; none late; W = 29 - 5 = 24.
#   batch 2 (F = 24): t 21 -> [20,30) a 2; t 12 -> [10,20), end 20 <= 24: (5, b) late;
#            W stays 24.
SHIFTED = (
    [4, 24, 24],
    [[], [], [(5, "b")]],
    [{(0, "a"): 2, (0, "b"): 1}, {(0, "a"): 4, (10, "a"): 2, (20, "b"): 1}, {(20, "a"): 2}],
)
EXPECTED = {
    "computed after the join": SHIFTED,
    "computed before the join, watermark after": SHIFTED,
    # t = ts, the join above the watermark: z reaches it (an inner join only makes Spark
    # infer that k is not null).
    #   batch 0: t 0, 2, 30 -> W = 25; windows [0,10) a 2, b 1 (z finds no static row).
    #   batch 1 (F = 25): -4 -> [-10,0) late; 12 -> [10,20), end 20 <= 25, late; 22 ->
    #            [20,30) b 1; W stays 25.
    #   batch 2 (F = 25): 14 -> [10,20) late; 5 -> [0,10) late.
    "renamed, watermark, then the join": (
        [25, 25, 25],
        [[], [(-4, "a"), (12, "a")], [(14, "a"), (5, "b")]],
        [{(0, "a"): 2, (0, "b"): 1}, {(20, "b"): 1}, {}],
    ),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_stream_event_time_with_a_static_join_runs(shape: str) -> None:
    q = IncrementalQuery(counted(SHAPES[shape](stream(), static()), "t"), "update")
    marks, late, out = [], [], []
    for batch in BATCHES:
        rows = pl.DataFrame(
            {"ts": [minutes(m) for m, _ in batch], "k": [k for _, k in batch]}, schema=ROWS
        )
        r = q.run(rows)
        assert q.watermark is not None
        marks.append((q.watermark - int(T0.timestamp() * 1e6)) / 60e6)
        late.append([((t - T0) / timedelta(minutes=1), k) for t, k in r.late_rows.rows()])
        out.append({
            ((w["start"] - T0) / timedelta(minutes=1), k): n for w, k, n in r.output.rows()
        })  # fmt: skip
        q.run_no_data()
    assert (marks, late, out) == EXPECTED[shape]


def _refused() -> dict[str, sk.DataFrame]:
    joined = stream().join(static(), "k")
    return {
        "stream column plus a static one": joined.with_column("ts", sk.col("ts") + sk.col("off")),
        "a static column under a new name": joined.with_column("t", sk.col("st")),
        "a static column as it is": joined,
        "a renamed static column, then computed": joined.select(
            "ts", "k", sk.col("off").alias("o")
        ).with_column("t", sk.col("ts") + sk.col("o")),
    }


CASES = {
    "stream column plus a static one": ("ts", "off"),
    "a static column under a new name": ("t", "st"),
    "a static column as it is": ("st", "st"),
    "a renamed static column, then computed": ("t", "off"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_event_time_read_from_the_static_side_is_refused(case: str) -> None:
    """A stream row joined to several static rows would have several event times (Spark
    judges each joined row; streamkit judges each row read), so its watermark would depend
    on the static table's order: refused, single-process and on a fleet."""
    column, static_column = CASES[case]
    plan = counted(_refused()[case].with_watermark(column, DELAY), column)
    message = (
        f"with_watermark\\('{column}'\\) reads '{static_column}', a column of the static side "
        ".*compute the event time from the stream's columns only, or declare the watermark "
        "before the join"
    )
    with pytest.raises(PlanError, match=message):
        IncrementalQuery(plan, "update")
    with pytest.raises(PlanError, match=message):
        FleetPlan.of(plan, "update")


def test_the_stream_on_the_right_of_a_static_join_is_told_from_the_static_side() -> None:
    """``static.join(stream, "k", "right")``: the stream's computed event time runs (same
    rows and hand-derived results as the stream-left shape), a static column is refused."""
    q = IncrementalQuery(
        counted(
            static()
            .join(stream(), "k", "right")
            .with_column("t", sk.col("ts") + SHIFT)
            .with_watermark("t", DELAY),
            "t",
        ),
        "update",
    )
    # As "computed after the join", but a right join keeps z (no static row, nulls):
    #   batch 0: t 7, 9, 37 -> W = 32; windows [0,10) a 2, b 1, [30,40) z 1.
    #   batch 1 (F = 32): t 3 [0,10), 19 [10,20), 29 [20,30): every end <= 32, all late.
    #   (a no-data batch between them, so batch 1 is judged against W(0) = 32, rule 2)
    rows = [[(0, "a"), (2, "b"), (30, "z")], [(-4, "a"), (12, "a"), (22, "b")]]
    results = []
    for b in rows:
        frame = pl.DataFrame({"ts": [minutes(m) for m, _ in b], "k": [k for _, k in b]}, ROWS)
        results.append(q.run(frame))
        q.run_no_data()
    assert q.watermark == int((minutes(32)).timestamp() * 1e6)
    first = {
        ((w["start"] - T0) / timedelta(minutes=1), k): n for w, k, n in results[0].output.rows()
    }
    assert first == {(0, "a"): 2, (0, "b"): 1, (30, "z"): 1}
    assert results[1].late_rows.height == 3
    assert results[1].output.height == 0
    refused = static().join(stream(), "k", "right").with_column("t", sk.col("ts") + sk.col("off"))
    with pytest.raises(PlanError, match="reads 'off', a column of the static side"):
        IncrementalQuery(counted(refused.with_watermark("t", DELAY), "t"), "update")


def test_a_fleet_plans_a_stream_event_time_computed_after_a_static_join() -> None:
    FleetPlan.of(counted(SHAPES["computed after the join"](stream(), static()), "t"), "update")
