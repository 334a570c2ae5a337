"""Per-partition watermark basis: the minimum of each active partition's largest event
time, idleness by an injected clock, the global (Spark) policy, restore, and the mapping
of decoded rows back to their partitions. Expected values are worked out by hand."""

from __future__ import annotations

import polars as pl
import pytest

from streamkit.errors import ConfigError
from streamkit.streaming.watermarks import PartitionWatermarks, rows_by_partition


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ticks(*values: int | None) -> pl.Series:
    return pl.Series(values, dtype=pl.Int64)


def parts(*names: str) -> pl.Series:
    return pl.Series(names, dtype=pl.String)


def test_the_slowest_active_partition_holds_the_basis() -> None:
    clock = Clock()
    marks = PartitionWatermarks("min", idle_timeout=30, clock=clock)
    marks.observe(ticks(5, 90, 7, 40), parts("a", "b", "a", "b"))
    assert marks.maxima == {"a": 7, "b": 90}
    assert marks.basis() == 7  # a is behind: b's 90 does not push the watermark
    marks.observe(ticks(60), parts("a"))
    assert marks.basis() == 60


def test_the_global_policy_is_sparks_maximum() -> None:
    marks = PartitionWatermarks("global", clock=Clock())
    marks.observe(ticks(5, 90, 7), parts("a", "b", "a"))
    assert marks.basis() == 90


def test_an_idle_partition_stops_holding_the_basis_and_rejoins_when_it_delivers() -> None:
    clock = Clock()
    marks = PartitionWatermarks("min", idle_timeout=30, clock=clock)
    marks.observe(ticks(10, 50), parts("a", "b"))
    clock.now += 20
    marks.observe(ticks(70), parts("b"))
    assert marks.basis() == 10  # a last delivered 20 s ago: still active
    clock.now += 15  # a: 35 s without a row; b: 15 s
    assert marks.idle() == ["a"]
    assert marks.basis() == 70
    marks.observe(ticks(20), parts("a"))
    assert marks.idle() == []
    assert marks.basis() == 20  # the basis may fall; the engine keeps W monotonic


def test_a_declared_partition_without_rows_holds_the_basis_until_it_delivers() -> None:
    clock = Clock()
    marks = PartitionWatermarks("min", idle_timeout=30, clock=clock)
    marks.declare(["a", "b", "c"])
    marks.observe(ticks(50, 90), parts("a", "b"))
    assert marks.basis() is None  # c may still bring rows older than 50: W stays
    marks.observe(ticks(5), parts("c"))
    assert marks.basis() == 5


def test_a_declared_partition_silent_for_the_idle_timeout_stops_holding() -> None:
    clock = Clock()
    marks = PartitionWatermarks("min", idle_timeout=30, clock=clock)
    marks.declare(["a", "c"])
    clock.now += 25
    marks.declare(["a", "c"])  # declared again each batch: the clock runs from the first
    marks.observe(ticks(50), parts("a"))
    assert (marks.basis(), marks.idle()) == (None, [])
    clock.now += 5  # c: first declared 30 s ago, no row
    assert (marks.basis(), marks.idle()) == (50, ["c"])


def test_an_undeclared_partition_stops_holding_an_ended_one_holds_until_idle() -> None:
    clock = Clock()
    marks = PartitionWatermarks("min", idle_timeout=30, clock=clock)
    marks.declare(["a", "b", "c"])
    marks.observe(ticks(50, 90), parts("a", "b"))
    marks.declare(["a", "b"])  # c's lease went elsewhere before it delivered
    assert marks.basis() == 50
    # a's SHARD_END was handed over; its children are not declared yet (not leased, or
    # waiting for their parents) and may bring rows from just after 50: a still holds
    marks.declare(["b"], ended=["a"])
    assert (marks.basis(), marks.idle()) == (50, [])
    clock.now += 30
    marks.observe(ticks(95), parts("b"))
    assert (marks.basis(), marks.idle()) == (95, ["a"])  # a: no row for 30 s
    marks.declare(["b", "d"], ended=["d"])  # an ended shard without rows never holds
    assert marks.basis() == 95


def test_the_global_policy_ignores_declarations() -> None:
    marks = PartitionWatermarks("global", clock=Clock())
    marks.declare(["a", "b"])
    marks.observe(ticks(40), parts("a"))
    assert marks.basis() == 40


def test_all_idle_falls_back_to_the_largest() -> None:
    clock = Clock()
    marks = PartitionWatermarks("min", idle_timeout=5, clock=clock)
    marks.observe(ticks(10, 50), parts("a", "b"))
    clock.now += 6
    assert marks.basis() == 50


def test_nulls_are_ignored_and_no_rows_change_nothing() -> None:
    marks = PartitionWatermarks("min", clock=Clock())
    assert marks.basis() is None
    marks.observe(ticks(None, None), parts("a", "b"))
    assert marks.basis() is None
    marks.observe(ticks(None, 8), parts("a", "b"))
    assert marks.maxima == {"b": 8}
    marks.observe(ticks(), parts())
    assert marks.maxima == {"b": 8}


def test_without_partitions_the_batch_is_one_partition() -> None:
    marks = PartitionWatermarks("min", clock=Clock())
    marks.observe(ticks(3, 9, 4))
    marks.observe(ticks(6))
    assert marks.basis() == 9


def test_restore_counts_every_partition_active_from_the_restart() -> None:
    clock = Clock()
    marks = PartitionWatermarks("min", idle_timeout=10, clock=clock)
    marks.restore({"a": 100, "b": 40})
    clock.now += 9
    marks.observe(ticks(500), parts("a"))
    assert marks.basis() == 40  # b was behind before the restart and still is
    clock.now += 2  # b: 11 s since the restart without a row
    assert marks.basis() == 500


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="watermark_policy"):
        PartitionWatermarks("max")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="idle_timeout"):
        PartitionWatermarks("min", idle_timeout=0)


def test_rows_map_back_to_their_partitions_minus_dead_letters() -> None:
    got = rows_by_partition([("s1", 3), ("s2", 2), ("s3", 1)], ["s1", "s3"], 4)
    assert got is not None
    assert got.to_pylist() == ["s1", "s1", "s2", "s2"]
    marks = PartitionWatermarks("min", clock=Clock())
    marks.observe(ticks(9, 1, 5, 7), got)
    assert marks.maxima == {"s1": 9, "s2": 7}


def test_rows_that_do_not_add_up_have_no_partition_map() -> None:
    assert rows_by_partition([("s1", 3)], [], 5) is None
