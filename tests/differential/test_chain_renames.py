"""A plain rename between two stateful operators of a chain carries the watermark from
the one below to the one above, through PySpark 4.3 and streamkit on the same files (the
harness of :mod:`tests.differential.test_transform_chains`: one file per micro-batch,
``available_now``, every batch id and its rows equal Spark's):

- ``stamp_renamed_apply_timeout``: :class:`Stamp` (``eventTimeColumnName="at"``), then
  ``at`` renamed ``ts`` and ``applyInPandasWithState`` with ``EventTimeTimeout``: late
  rows, timeouts and ``getCurrentWatermarkMs`` as without the rename (without it no input
  column carries the watermark, and the function is refused);
- then :class:`Tally` (``EventTime``) above a count per ``(ts, k)`` in append mode, its
  key carrying the watermark: renamed ``at`` after it (``key_renamed``), aliased in
  ``groupBy`` (``alias_key``: Spark's ``col("ts").alias("at")`` keeps the metadata) or
  renamed before it (``renamed_key``). Its timers fire at the watermark passed on.
  Nothing reaches an operator above an append aggregation late (it emits a group once
  its key is at or before W in force), so these check that the watermark reaches the
  function, in ms;
- ``window_end_tally``: a windowed count's ``window.end`` (computed: no column carries
  the watermark): Spark's function still gets the propagated watermark for its timers;
  so it does above :class:`Echo` (time mode ``None``, no ``eventTimeColumnName``:
  ``echo_tally``);
- ``window_max_ts_tally``: a windowed aggregate named ``ts`` (``max(ts)``), renamed
  ``at``: an aggregate carries no watermark, so a row whose ``at`` is at or before the
  watermark of the previous batch is not late above it (Spark keeps it).

(An aggregation above a renamed ``eventTimeColumnName`` is in
:mod:`tests.differential.test_transform_chains`; one above an aggregation's renamed or
aliased key in :mod:`tests.differential.test_watermark_key`.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from tests.differential.inputs import Files
from tests.differential.spark_functions import Tally
from tests.differential.test_transform_chains import (
    FAR,
    HAND,
    TALLY_OUT,
    Case,
    Chain,
    Outcome,
    _then_apply,
    check_against_spark,
    spark_outcomes,
)
from tests.differential.test_watermark_key import (
    KEY_FILES,
    k_agg,
    k_count,
    k_renamed,
    s_agg,
    s_count,
    s_renamed,
)

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.slow]


def _col(name: str, spark: bool) -> Any:
    if spark:
        from pyspark.sql import functions as F

        return F.col(name)
    import streamkit as sk

    return sk.col(name)


@dataclass(frozen=True)
class Renamed(Chain):
    """``kind`` names the shape (module docstring)."""

    def build(self, frame: Any, spark: bool) -> Any:
        if self.kind == "stamp_renamed":
            out = Chain("stamp", self.mode, then="none").build(frame, spark)
            renamed = out.select(_col("at", spark).alias("ts"), "k", "v")
            return _then_apply(renamed, self.then, self.op_mode, spark)
        if self.kind == "echo":  # a processor in time mode None, no event-time column
            out = Chain("echo_count", self.mode, then="none", marked=True).build(frame, spark)
            grouped = out.groupBy("k") if spark else out.group_by("k")
            return grouped.transformWithStateInPandas(Tally(), TALLY_OUT, "Append", "EventTime")
        agg = s_agg if spark else k_agg
        at = _col("ts", spark).alias("at")
        if self.kind == "key_renamed":
            counts = agg(frame, "ts", "k").select(at, "k", _col("s", spark).alias("v"))
        elif self.kind == "renamed_key":  # renamed before with_watermark's aggregation
            renamed = (s_renamed if spark else k_renamed)(frame)
            counts = (s_count if spark else k_count)(renamed, "t", "k")
            counts = counts.select(_col("t", spark).alias("at"), "k", _col("s", spark).alias("v"))
        elif self.kind == "window_end":  # a window's end: computed, carries none
            from pyspark.sql import functions as F

            import streamkit as sk

            window = F.window("ts", "10 seconds") if spark else sk.window("ts", "10 seconds")
            end = F.col("window.end") if spark else sk.col("window").get_field("end")
            counts = agg(frame, window, "k").select(
                end.alias("at"), "k", _col("s", spark).alias("v")
            )
        elif self.kind == "window_max_ts":  # an aggregate named ts: carries none
            counts = _window_max_ts(frame, spark)
        else:
            counts = agg(frame, at, "k").select("at", "k", _col("s", spark).alias("v"))
        grouped = counts.groupBy("k") if spark else counts.group_by("k")
        return grouped.transformWithStateInPandas(Tally(), TALLY_OUT, "Append", "EventTime")


def _window_max_ts(frame: Any, spark: bool) -> Any:
    """Per 10 s window and ``k``: the sum of ``v`` and the latest ``ts`` as ``ts``, then
    that ``ts`` renamed ``at``."""
    if spark:
        from pyspark.sql import functions as F

        marked = frame.withWatermark("ts", "5 seconds")
        counts = marked.groupBy(F.window("ts", "10 seconds"), "k").agg(
            F.sum("v").alias("s"), F.max("ts").alias("ts")
        )
    else:
        import streamkit as sk

        marked = frame.with_watermark("ts", "5 seconds")
        counts = marked.group_by(sk.window("ts", "10 seconds"), "k").agg(
            sk.sum("v").alias("s"), sk.max("ts").alias("ts")
        )
    return counts.select(_col("ts", spark).alias("at"), "k", _col("s", spark).alias("v"))


FAR_KEYS: Files = [[(1_000, "z", 1, 0)]]
"""A far-future file: the watermark moves past every timer set before it."""
CASES: dict[str, Case] = {
    "stamp_renamed_apply_timeout": Case(
        Renamed("stamp_renamed", "append", then="apply_timeout"), HAND + FAR
    ),
    "key_renamed_tally": Case(Renamed("key_renamed", "append", then="tally"), KEY_FILES + FAR_KEYS),
    "alias_key_tally": Case(Renamed("alias_key", "append", then="tally"), KEY_FILES + FAR_KEYS),
    "renamed_key_tally": Case(Renamed("renamed_key", "append", then="tally"), KEY_FILES + FAR_KEYS),
    # W 7, then 15: [0,10) (latest ts 3) is emitted in batch 2 with W 7 in force in
    # batch 1, [10,20) (latest 12) in batch 3 with 15: neither row is late above it
    "window_max_ts_tally": Case(
        Renamed("window_max_ts", "append", then="tally"),
        [[(3, "a", 1, 0), (12, "b", 2, 0)], [(20, "c", 3, 0)], [(1_000, "z", 4, 0)]],
    ),
    "echo_tally": Case(Renamed("echo", "append", then="tally"), HAND + FAR),
    "window_end_tally": Case(Renamed("window_end", "append", then="tally"), KEY_FILES + FAR_KEYS),
}


@pytest.fixture(scope="module")
def runs(rocksdb: Any, tmp_path_factory: pytest.TempPathFactory) -> Mapping[str, Outcome]:
    """Spark's outcome of each case."""
    return spark_outcomes(rocksdb, CASES, tmp_path_factory)


@pytest.mark.parametrize("name", list(CASES))
def test_rename_between_operators_as_in_spark(name: str, runs: Mapping[str, Outcome]) -> None:
    check_against_spark(CASES[name], runs[name])
