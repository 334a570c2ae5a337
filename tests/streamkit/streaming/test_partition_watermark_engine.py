"""The engine on per-partition watermarks (issue 18, point 5): a fast partition's new rows
do not make a slow partition's rows late under the default ``"min"`` policy, do under
Spark's ``"global"`` one, and the per-partition maxima survive a restart. Expected values
are worked out by hand in the comments (10-minute windows, 5-minute delay)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.errors import ConfigError
from streamkit.streaming.incremental import IncrementalQuery
from streamkit.streaming.watermarks import PartitionWatermarks, WatermarkPolicy

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MIN_US = 60_000_000
T0_US = int(T0.timestamp()) * 1_000_000


def us(minutes: float) -> int:
    """Ticks (µs since the epoch) of ``minutes`` after T0."""
    return T0_US + int(minutes * MIN_US)


def query(policy: WatermarkPolicy) -> IncrementalQuery:
    empty = pa.table({"t": pa.array([], pa.timestamp("us", "UTC"))})
    df = sk.from_arrow(empty).with_watermark("t", "5 minutes")
    plan = df.group_by(sk.window("t", "10 minutes")).agg(sk.count().alias("n")).plan
    return IncrementalQuery(plan, "update", watermarks=PartitionWatermarks(policy))


def batch(*rows: tuple[str, float]) -> tuple[pl.DataFrame, pa.Array]:
    """Rows as (partition, minutes after T0)."""
    frame = pl.DataFrame({"t": [T0 + timedelta(minutes=m) for _, m in rows]},
                         schema={"t": pl.Datetime("us", "UTC")})  # fmt: skip
    return frame, pa.array([p for p, _ in rows], pa.string())


def run_three_batches(q: IncrementalQuery) -> int:
    """Batch 1: fast at 100, 101 and slow at 1; batch 2: fast at 102; batch 3: slow at 3.
    Returns the late rows of batch 3."""
    q.run(*batch(("fast", 100), ("fast", 101), ("slow", 1)))
    q.run(*batch(("fast", 102)))
    return q.run(*batch(("slow", 3))).late_rows.height


def test_the_slow_partition_holds_the_watermark_so_its_rows_count() -> None:
    q = query("min")
    # W after batch 1 = min(101, 1) - 5 = -4 min; after batch 2 still -4 (slow is at 1).
    # Batch 3 judges lateness against the watermark in force in batch 2 (-4 min): the row
    # at 3 (window [0, 10)) is on time and joins the row at 1; W = min(102, 3) - 5 = -2.
    assert run_three_batches(q) == 0
    assert q.watermark == us(-2)
    result = q.current_result()
    got = {(r["window"]["start"] - T0) // timedelta(minutes=1): r["n"]
           for r in result.iter_rows(named=True)}  # fmt: skip
    assert got == {0: 2, 100: 3}


def test_sparks_global_policy_drops_the_slow_rows() -> None:
    q = query("global")
    # W after batch 1 = 101 - 5 = 96 min, in force in batch 2; batch 3 judges against it:
    # window [0, 10) ended at 10 <= 96, so the row at 3 is late.
    assert run_three_batches(q) == 1
    assert q.watermark == us(97)


def test_a_sliding_row_half_late_joins_only_its_open_windows_in_append_mode() -> None:
    empty = pa.table({"t": pa.array([], pa.timestamp("us", "UTC"))})
    df = sk.from_arrow(empty).with_watermark("t", "5 minutes")
    window = sk.window("t", "10 minutes", "5 minutes")
    plan = df.group_by(window).agg(sk.count().alias("n")).plan
    q = IncrementalQuery(plan, "append", watermarks=PartitionWatermarks("global"))
    # 10-minute windows every 5 minutes. Batch 1 (rows at 2, 17): W = 17 - 5 = 12, in
    # force from batch 2, which closes [-5, 5) and [0, 10) (1 row each). Batch 3's row at
    # 7 is in [0, 10) (closed) and [5, 15) (open at 12): it joins [5, 15) only; [0, 10)
    # is not emitted a second time. Batch 4 (row at 40) makes W 35, in force in batch 5,
    # which closes [5, 15) (the row at 7), [10, 20) and [15, 25) (rows at 17, 18).
    outputs = [q.run(*rows).output for rows in (
        batch(("p", 2), ("p", 17)),
        batch(("p", 18)),
        batch(("p", 7)),
        batch(("p", 40)),
        batch(("p", 41)),
    )]  # fmt: skip
    emitted = sorted(
        ((r["window"]["start"] - T0) // timedelta(minutes=1), r["n"])
        for out in outputs
        for r in out.iter_rows(named=True)
    )
    assert emitted == [(-5, 1), (0, 1), (5, 1), (10, 2), (15, 2)]


def test_a_declared_partition_holds_the_watermark_before_its_first_row() -> None:
    q = query("min")
    # slow is declared (held by the source) but its first rows come in batch 3. W stays
    # None while it waits: batch 3's rows at 1 and 3 are on time, the result counts all.
    # Without the declaration W would be 101 - 5 = 96 min in force in batch 2, and both
    # rows of window [0, 10) late.
    q.declare_partitions(["fast", "slow"], [])
    q.run(*batch(("fast", 100), ("fast", 101)))
    q.run(*batch(("fast", 102)))
    assert [q.watermark] == [None]  # (a list: mypy would keep the narrowing)
    assert q.run(*batch(("slow", 1), ("slow", 3))).late_rows.height == 0
    assert q.watermark == us(-2)  # min(102, 3) - 5
    # slow reached its end (SHARD_END): until idle_timeout after its last row it still
    # holds W, for its children's first rows (not declared before they are leased)
    q.declare_partitions(["fast"], ["slow"])
    q.run(*batch(("fast", 110)))
    assert q.watermark == us(-2)


def test_a_partition_declared_open_and_ended_at_once_never_holds() -> None:
    q = query("min")
    # slow is read to its end without a row (an empty closed shard): it never holds W,
    # even though the source still lists it among the partitions it reads.
    q.declare_partitions(["fast", "slow"], ["slow"])
    q.run(*batch(("fast", 100), ("fast", 101)))
    q.run(*batch(("fast", 102)))
    assert q.watermark == us(97)  # 102 - 5, fast alone


def test_the_maxima_survive_a_restart() -> None:
    first = query("min")
    first.run(*batch(("fast", 100), ("slow", 1)))
    saved = (first.watermark, first.max_event, first.in_force, first.partition_maxima)
    assert saved[3] == {"fast": us(100), "slow": us(1)}
    again = query("min")
    again.restore(None, saved[0], saved[1], saved[2], partition_max=saved[3])
    again.run(*batch(("fast", 110)))
    again.run(*batch(("fast", 111)))
    # slow (restored at 1) still holds W at -4 min: the next slow row is on time.
    assert again.run(*batch(("slow", 2))).late_rows.height == 0
    # A checkpoint from before per-partition maxima restores max_event as one partition:
    # W = min(100, 110) - 5 = 95 after the first batch, in force in the second, the late
    # mark of the third: the slow row (window [0, 10)) is late.
    old = query("min")
    old.restore(None, saved[0], saved[1], saved[2])
    old.run(*batch(("fast", 110)))
    old.run(*batch(("fast", 111)))
    assert old.run(*batch(("slow", 2))).late_rows.height == 1


def test_the_writer_option_is_checked_when_set() -> None:
    df = sk.read_stream.memory(pa.schema([("t", pa.timestamp("us", "UTC"))]))
    writer = df.write_stream
    with pytest.raises(ConfigError, match="watermark_policy"):
        writer.watermark_policy("max")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="idle_timeout"):
        writer.watermark_policy("min", idle_timeout=0)
    assert writer.watermark_policy("global", idle_timeout="2 minutes") is writer
