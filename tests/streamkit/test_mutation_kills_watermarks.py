"""Per-partition watermarks: what `make mutation` found untested in watermarks.py.

Expected values follow the rules in the module docstring of
``streamkit.streaming.watermarks`` (idle after ``idle_timeout`` s without a row; active
means a row less than ``idle_timeout`` s ago), computed here by hand on an injected clock.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pytest

from streamkit.errors import ConfigError
from streamkit.streaming.watermarks import PartitionWatermarks, rows_by_partition

IDLE = 5.0


class Clock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def two_partitions(clock: Clock) -> PartitionWatermarks:
    marks = PartitionWatermarks("min", idle_timeout=IDLE, clock=clock)
    marks.observe(pl.Series([100, 40]), pl.Series(["a", "a"]))
    marks.observe(pl.Series([200]), pl.Series(["b"]))
    return marks


def test_a_partition_silent_for_exactly_idle_timeout_is_idle_and_stops_holding_back() -> None:
    clock = Clock()
    marks = two_partitions(clock)
    clock.now = IDLE - 0.5
    assert (marks.idle(), marks.basis()) == ([], 100)  # both active: the smallest maximum
    clock.now = IDLE
    assert marks.idle() == ["a", "b"]
    assert marks.basis() == 200  # none active: the largest maximum


def test_restore_keeps_each_partitions_maximum_under_its_name() -> None:
    clock = Clock()
    marks = PartitionWatermarks("min", idle_timeout=IDLE, clock=clock)
    marks.restore({"shard-1": 10, "shard-2": 20})
    assert marks.maxima == {"shard-1": 10, "shard-2": 20}
    assert marks.basis() == 10
    marks.observe(pl.Series([15]), pl.Series(["shard-1"]))
    assert marks.maxima == {"shard-1": 15, "shard-2": 20}


def test_rows_by_partition_removes_every_dead_letter_of_a_partition() -> None:
    got = rows_by_partition([("a", 3), ("b", 2)], ["a", "a"], 3)
    assert got is not None
    assert got.to_pylist() == ["a", "b", "b"]
    assert got.type == pa.dictionary(pa.int32(), pa.string())


def test_rows_by_partition_of_an_empty_batch_is_typed() -> None:
    got = rows_by_partition([], [], 0)
    assert got is not None
    assert len(got) == 0
    assert got.type == pa.dictionary(pa.int32(), pa.string())


def test_rows_without_an_event_time_move_nothing() -> None:
    marks = PartitionWatermarks("min", idle_timeout=IDLE, clock=Clock())
    marks.observe(pl.Series([None, None], dtype=pl.Int64))
    marks.observe(pl.Series([None], dtype=pl.Int64), pl.Series(["a"]))
    assert (marks.maxima, marks.basis()) == ({}, None)


def test_a_row_without_a_partition_counts_for_the_single_partition() -> None:
    marks = PartitionWatermarks("global", idle_timeout=IDLE, clock=Clock())
    marks.observe(pl.Series([5, 7, 3]), pl.Series(["a", None, "a"]))
    assert marks.maxima == {"a": 5, "": 7}
    assert marks.basis() == 7


def test_defaults_are_the_min_policy_and_a_minute_of_idleness() -> None:
    marks = PartitionWatermarks()
    assert (marks.policy, marks.idle_timeout) == ("min", 60.0)


def test_any_positive_idle_timeout_is_accepted_and_zero_is_refused() -> None:
    assert PartitionWatermarks(idle_timeout=0.5).idle_timeout == 0.5
    for bad in (0.0, -1.0):
        with pytest.raises(ConfigError, match="idle_timeout"):
            PartitionWatermarks(idle_timeout=bad)


def test_a_restore_ends_the_wait_of_restored_partitions_only() -> None:
    clock = Clock()
    marks = PartitionWatermarks("min", idle_timeout=IDLE, clock=clock)
    marks.declare(["a"])
    marks.restore({"a": 100})  # a restored partition counts as active now: no wait
    assert marks.basis() == 100
    marks = PartitionWatermarks("min", idle_timeout=IDLE, clock=clock)
    marks.declare(["a", "b"])  # the source reads a and b; b has no row yet
    marks.restore({"a": 100})  # the checkpoint knows only a
    assert marks.basis() is None  # b still holds W back until it delivers (or idles)
    clock.now = IDLE  # idle_timeout after b's declaration: b stops holding
    assert marks.basis() == 100
