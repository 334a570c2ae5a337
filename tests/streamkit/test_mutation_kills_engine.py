"""The incremental engine: what `make mutation` found untested in incremental.py.

Each test runs an :class:`IncrementalQuery` on hand-made micro-batches; expected values
are worked out here from the rules in its docstrings (Spark's watermark rules: late rows
are judged against the watermark in force in the previous batch, groups are closed with
the one in force in this batch, ``W = max event ms - delay ms``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

import polars as pl
import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.streaming.incremental import IncrementalQuery
from streamkit.windows import WindowSpec

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MIN_US = 60_000_000
Unit = Literal["ns", "us", "ms"]


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def empty(unit: str = "us") -> pa.Table:
    return pa.table({"t": pa.array([], pa.timestamp(unit, "UTC")), "k": pa.array([], pa.string())})


def query(
    mode: str, window: WindowSpec | None = None, delay: str = "10 minutes", unit: str = "us"
) -> IncrementalQuery:
    spec = window if window is not None else sk.window("t", "10 minutes")
    df = sk.from_arrow(empty(unit)).with_watermark("t", delay)
    plan = df.group_by(spec, "k").agg(sk.count().alias("n")).plan
    return IncrementalQuery(plan, mode)  # type: ignore[arg-type]


def rows(*minutes: float, unit: Unit = "us") -> pl.DataFrame:
    return pl.DataFrame(
        {"t": [at(m) for m in minutes], "k": ["a"] * len(minutes)},
        schema={"t": pl.Datetime(unit, "UTC"), "k": pl.String},
    )


def counts(out: pl.DataFrame) -> dict[tuple[float, float], int]:
    """{(window start, end) in minutes after T0: count}."""
    return {
        (
            (r["window"]["start"] - T0) / timedelta(minutes=1),
            (r["window"]["end"] - T0) / timedelta(minutes=1),
        ): r["n"]
        for r in out.iter_rows(named=True)
    }


def owes(q: IncrementalQuery) -> bool:
    return q.owes_batch


def test_before_any_batch_the_result_is_empty_with_the_querys_columns() -> None:
    got = query("update").current_result()
    assert got.height == 0
    assert got.columns == ["window", "k", "n"]


@pytest.mark.parametrize(("unit", "per_ms"), [("ns", 1_000_000), ("us", 1_000), ("ms", 1)])
def test_the_watermark_is_whole_ms_of_the_latest_event_minus_the_delay(
    unit: Unit, per_ms: int
) -> None:
    q = query("update", delay="1 second", unit=unit)
    event = T0 + timedelta(minutes=20, microseconds=123_457)
    out = q.run(
        pl.DataFrame(
            {"t": [event], "k": ["a"]}, schema={"t": pl.Datetime(unit, "UTC"), "k": pl.String}
        )
    )
    event_ms = int(event.timestamp() * 1000)  # whole ms: .123457 s -> 123 ms
    assert q.watermark == (event_ms - 1000) * per_ms
    assert out.output.height == 1


def test_append_emits_a_window_whose_end_equals_the_watermark_in_force() -> None:
    q = query("append")
    first = q.run(rows(5, 20))  # W: 20 - 10 = 10 min; nothing in force yet
    assert first.output.height == 0
    assert q.watermark == 10 * MIN_US + int(T0.timestamp() * 1e6)
    assert q.owes_batch  # the watermark moved: a no-data batch is owed
    done = q.run_no_data()  # in force: 10 min, so [0, 10) is closed
    assert counts(done.output) == {(0.0, 10.0): 1}
    assert owes(q) is False  # nothing moved since: no second no-data batch
    assert q.state_rows == 1  # [20, 30) stays


def test_a_row_whose_window_ends_at_the_late_mark_is_late() -> None:
    q = query("update")
    q.run(rows(20))  # W = 10 min
    q.run_no_data()  # 10 min now in force: the late mark of the next batch
    result = q.run(rows(9, 10))  # [0, 10) ends at the mark: late; [10, 20) is open
    assert result.late_rows["t"].to_list() == [at(9)]
    assert counts(result.output) == {(10.0, 20.0): 1}


def test_a_sliding_row_loses_only_its_windows_closed_at_the_late_mark() -> None:
    q = query("update", window=sk.window("t", "10 minutes", "5 minutes"))
    q.run(rows(20))  # W = 10 min
    q.run_no_data()
    result = q.run(rows(7))  # windows [0, 10) (ends at the mark: dropped) and [5, 15)
    assert result.late_rows.height == 0
    assert counts(result.output) == {(5.0, 15.0): 1}


@pytest.mark.parametrize(
    "rename_first", [False, True], ids=["mark-then-rename", "rename-then-mark"]
)
def test_a_no_data_batch_runs_a_plan_that_renames_columns(rename_first: bool) -> None:
    df = sk.from_arrow(empty())
    if rename_first:
        df = df.select("t", sk.col("k").alias("key")).with_watermark("t", "10 minutes")
    else:
        df = df.with_watermark("t", "10 minutes").select("t", sk.col("k").alias("key"))
    plan = df.group_by(sk.window("t", "10 minutes"), "key").agg(sk.count().alias("n")).plan
    q = IncrementalQuery(plan, "append")
    assert q.run(rows(5, 20)).output.height == 0
    done = q.run_no_data()
    assert done.output["key"].to_list() == ["a"]
    assert counts(done.output) == {(0.0, 10.0): 1}


def test_lateness_follows_the_start_offset_of_the_window() -> None:
    q = query("update", window=sk.window("t", "10 minutes", None, "3 minutes"))
    q.run(rows(20))  # W = 10 min
    q.run_no_data()  # late mark 10 min
    result = q.run(rows(9, 2))  # 9 -> [3, 13): open; 2 -> [-7, 3): closed, late
    assert result.late_rows["t"].to_list() == [at(2)]
    assert counts(result.output) == {(3.0, 13.0): 1}


def test_after_a_restore_no_no_data_batch_is_owed_unless_one_was_pending() -> None:
    w = int(at(10).timestamp() * 1e6)
    q = query("append")
    q.restore(None, watermark=w, max_event=w + 10 * MIN_US, in_force=w - MIN_US)
    assert owes(q) is False  # Spark runs none after a restart
    assert q.in_force == w - MIN_US
    q.restore(None, w, w + 10 * MIN_US, w - MIN_US, no_data_pending=True)
    assert owes(q) is True  # logged, not committed: owed again
    q.restore(None, w, w + 10 * MIN_US)
    assert q.in_force == w  # no in-force value saved: the watermark itself


def test_state_frame_holds_the_groups_and_is_empty_without_a_stateful_operator() -> None:
    q = query("update")
    q.run(rows(1, 2, 15))  # key a: windows [0, 10) and [10, 20)
    assert q.state_frame().height == 2
    assert q.state_rows == 2
    plain = IncrementalQuery(sk.from_arrow(empty()).plan, "append")
    plain.run(rows(1))
    assert plain.state_frame().shape == (0, 0)
    result = plain.current_result()
    assert (result.columns, result.dtypes) == (["t", "k"], [pl.Datetime("us", "UTC"), pl.String])
