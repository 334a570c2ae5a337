"""The incremental engine, continued: what the second `make mutation` run of incremental.py
left alive (partitions of filtered rows, restores of old checkpoints, a deduplication's
watermark, the watermark each batch reports, no-data batches of stateless queries).

Expected values are worked out here from the rules in the engine's docstrings and the
README (W = max event ms - delay ms; under the ``"min"`` policy the basis is the smallest
of the active partitions' maxima; W never moves back; late rows are judged against the
watermark in force in the previous batch).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.errors import PlanError
from streamkit.streaming.incremental import IncrementalQuery
from streamkit.streaming.watermarks import PartitionWatermarks

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T0_US = int(T0.timestamp() * 1_000_000)
MIN_US = 60_000_000
DELAY_MIN = 10


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def us(minutes: float) -> int:
    return T0_US + int(minutes * MIN_US)


def source() -> sk.DataFrame:
    schema = {"t": pa.timestamp("us", "UTC"), "k": pa.string(), "x": pa.int64()}
    return sk.from_arrow(pa.table({n: pa.array([], t) for n, t in schema.items()}))


def frame(*rows: tuple[float, str, int]) -> pl.DataFrame:
    return pl.DataFrame(
        {"t": [at(m) for m, _, _ in rows], "k": [k for _, k, _ in rows],
         "x": [x for _, _, x in rows]},
        schema={"t": pl.Datetime("us", "UTC"), "k": pl.String, "x": pl.Int64},
    )  # fmt: skip


def counting(df: sk.DataFrame, mode: str = "update") -> IncrementalQuery:
    plan = df.group_by(sk.window("t", "10 minutes"), "k").agg(sk.count().alias("n")).plan
    return IncrementalQuery(plan, mode, watermarks=PartitionWatermarks("min"))  # type: ignore[arg-type]


def test_rows_filtered_before_the_watermark_keep_their_partitions() -> None:
    """A filter below ``with_watermark`` drops rows from the watermark's input; the rows
    left must keep their own partitions, so the slower partition still holds W back."""
    df = source().filter(sk.col("x") > 0).with_watermark("t", f"{DELAY_MIN} minutes")
    q = counting(df)
    batch = frame((100, "a", 1), (500, "a", 0), (30, "b", 1), (40, "b", 1))
    parts = pa.array(["p1", "p1", "p2", "p2"])
    result = q.run(batch, parts)
    # counted rows: p1 max 100 (the 500 row is filtered out), p2 max 40 -> basis 40
    assert q.watermark == us(40 - DELAY_MIN)
    assert result.watermark == q.watermark
    assert q.partition_maxima == {"p1": us(100), "p2": us(40)}


def test_the_watermark_never_moves_back_when_a_new_partition_is_slower() -> None:
    df = source().with_watermark("t", f"{DELAY_MIN} minutes")
    q = counting(df)
    q.run(frame((100, "a", 1)), pa.array(["p1"]))
    assert q.watermark == us(100 - DELAY_MIN)
    q.run(frame((30, "b", 1)), pa.array(["p2"]))  # basis drops to 30 under "min"
    assert q.watermark == us(100 - DELAY_MIN)


def test_max_event_is_the_largest_counted_event_time_so_far() -> None:
    df = source().with_watermark("t", f"{DELAY_MIN} minutes")
    q = counting(df)
    seen: list[int | None] = [q.max_event]
    q.run(frame((50, "a", 1), (70, "a", 1)))
    seen.append(q.max_event)
    q.run(frame((60, "a", 1)))  # older rows leave it where it is
    seen.append(q.max_event)
    q.run(frame((80, "a", 1)))
    seen.append(q.max_event)
    assert seen == [None, us(70), us(70), us(80)]


def test_an_old_checkpoint_without_partition_maxima_restores_max_event_as_one_partition() -> None:
    df = source().with_watermark("t", f"{DELAY_MIN} minutes")
    q = counting(df)
    q.restore(None, us(90 - DELAY_MIN), us(90))
    assert q.partition_maxima == {"": us(90)}
    assert q.max_event == us(90)
    fresh = counting(df)
    fresh.restore(None, None, None)
    assert fresh.partition_maxima == {}


def test_each_batch_reports_the_watermark_after_it() -> None:
    stateless = IncrementalQuery(
        source().with_watermark("t", f"{DELAY_MIN} minutes").select("t", "k").plan, "append"
    )
    result = stateless.run(frame((30, "a", 1)))
    assert result.watermark == us(30 - DELAY_MIN) == stateless.watermark
    q = counting(source().with_watermark("t", f"{DELAY_MIN} minutes"))
    result = q.run(frame((45, "a", 1)))
    assert result.watermark == us(45 - DELAY_MIN) == q.watermark


def test_a_stateless_query_with_a_watermark_owes_no_no_data_batch() -> None:
    """Spark runs a no-data batch only for a stateful operator the new watermark affects."""
    plan = source().with_watermark("t", f"{DELAY_MIN} minutes").select("t", "k").plan
    q = IncrementalQuery(plan, "append")
    q.run(frame((30, "a", 1)))
    q.run(frame((60, "a", 1)))  # W moved from 20 to 50 minutes
    assert q.owes_batch is False


def test_drop_duplicates_with_a_watermark_drops_late_rows_and_evicts_its_state() -> None:
    """Rows behind the watermark in force are late (not deduplicated against state that
    may be gone); state for event times at or behind it is evicted."""
    df = source().with_watermark("t", f"{DELAY_MIN} minutes").drop_duplicates(["k", "t"])
    q = IncrementalQuery(df.plan, "append")
    first = q.run(frame((5, "a", 1), (30, "b", 1)))  # W after: 20 min; none in force yet
    assert sorted(first.output["k"].to_list()) == ["a", "b"]
    assert first.watermark == us(30 - DELAY_MIN)
    assert q.state_rows == 2
    q.run(frame((31, "c", 1)))  # in force now: 20 min -> the (5, a) entry leaves the state
    assert q.state_rows == 2  # (30, b) and (31, c)
    late = q.run(frame((5, "a", 1), (30, "b", 1), (40, "d", 1)))
    assert late.late_rows["k"].to_list() == ["a"]  # behind the 20-minute mark: late
    assert late.output["k"].to_list() == ["d"]  # (30, b) is a duplicate held in state


def test_a_window_on_a_copy_made_below_the_watermark_carries_none() -> None:
    """``u`` is copied from ``t`` before ``with_watermark("t")``: it never carried the
    watermark (Spark-checked, ``copy_below`` in tests/differential/test_watermark_lineage.py):
    append mode is refused, update mode never drops a late row nor evicts."""
    df = source().with_columns(sk.col("t").alias("u")).with_watermark("t", "10 minutes")
    plan = df.group_by(sk.window("u", "10 minutes"), "k").agg(sk.count().alias("n")).plan
    with pytest.raises(PlanError, match="Invalid streaming output mode: append"):
        IncrementalQuery(plan, "append")
    q = IncrementalQuery(plan, "update")
    q.run(frame((5, "a", 1), (60, "a", 1)))  # W = 50
    q.run(frame((61, "a", 1)))  # in force 50: [0, 10) would leave
    late = q.run(frame((6, "a", 1)))  # [0, 10) ended at or before 50: late under a watermark
    assert late.late_rows.height == 0
    assert late.output.select("n").to_series().to_list() == [2]
    assert q.state_rows == 2


def test_drop_duplicates_on_a_renamed_event_time_judges_lateness_on_it() -> None:
    """``t`` renamed ``e`` below ``with_watermark("e")``: lateness is judged on ``e`` (the
    event time as it reaches the watermark), the late rows come out as read (``t``, ``k``,
    ``x``), and the rows kept are deduplicated on ``(k, e)``: the run of the test above."""
    df = (
        source()
        .select(sk.col("t").alias("e"), "k", "x")
        .with_watermark("e", f"{DELAY_MIN} minutes")
        .drop_duplicates(["k", "e"])
    )
    q = IncrementalQuery(df.plan, "append")
    first = q.run(frame((5, "a", 1), (30, "b", 1)))
    assert sorted(first.output["k"].to_list()) == ["a", "b"]
    assert first.watermark == us(30 - DELAY_MIN)
    q.run(frame((31, "c", 1)))  # in force now: 20 minutes
    late = q.run(frame((5, "a", 7), (30, "b", 1), (40, "d", 1)))
    assert late.late_rows.columns == ["t", "k", "x"]
    assert late.late_rows.rows() == [(at(5), "a", 7)]
    assert late.output.select("e", "k").rows() == [(at(40), "d")]
