"""A stateful function after a stream-stream join, through PySpark 4.3 and streamkit on
the same files (two file streams, one file per micro-batch on each side,
``available_now``): ``left.join(right, lk = rk AND rt BETWEEN lt AND lt + 10 s)``, the
joined rows with one event time (``lk, lt, lv, rv``), then per ``lk``:

- ``apply``: ``applyInPandasWithState`` (append mode; ``NoTimeout`` or
  ``EventTimeTimeout``) keeping the rows seen and the sum of ``rv`` (a right-side column:
  only joined rows carry it) and emitting ``(k, kind, n, s, wm)`` per call, ``wm`` the
  function's ``getCurrentWatermarkMs()``; with ``EventTimeTimeout`` a timeout at the
  key's latest ``lt`` + 5 s emits ``kind = "timeout"`` and forgets the key;
- ``tws``: ``transformWithStateInPandas`` (``EventTime``) doing the same with a timer;

either on ``lt`` itself or on ``lt`` renamed ``t`` above the join (``renamed``: the alias
carries the watermark, README rule 1b).

Every batch id and its rows must equal Spark's (Spark is the oracle: the rows carry the
watermark the join passes on, Spark's ``produceOutputWatermark``, which decides the
timeouts and which batches run without data); for ``apply`` so must the rows held by
the join and the function after each batch. What Spark refuses (:data:`REFUSED`)
streamkit refuses with Spark's reason.

Times are seconds after 2024-01-01T00:00Z.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.differential.lazy_runs import LazyRuns
from tests.differential.spark_functions import JOIN_STATE as STATE
from tests.differential.spark_functions import JoinTally, tally, tally_timed
from tests.differential.test_joins_stream import LEFT_DDL, RIGHT_DDL, random_side
from tests.differential.test_joins_stream_agg import (
    HAND_EDGE,
    HAND_PROBE,
    Case,
    SparkRun,
    run_streamkit,
    sides,
    their_rows,
    write_case,
)
from tests.differential.worker_retry import retried

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.slow]

Batches = list[tuple[int, list[tuple[Any, ...]]]]
OUT = "k string, kind string, n bigint, s bigint, wm bigint"


@dataclass(frozen=True)
class JoinFunction:
    """The join, then ``kind`` (``apply`` or ``tws``) per ``lk`` in ``op_mode``, the
    query in ``mode`` (``timeout``: ``apply``'s; ``renamed``: ``lt`` renamed ``t`` above
    the join, the column the function reads)."""

    kind: str = "apply"
    how: str = "inner"
    timeout: str = "NoTimeout"
    op_mode: str = "append"
    mode: str = "append"
    renamed: bool = False

    @property
    def _time(self) -> tuple[str, str]:
        """(the joined rows' time column, its name for the function)."""
        return ("lt", "t") if self.renamed else ("lt", "lt")

    def _function(self, grouped: Any) -> Any:
        if self.kind == "tws":
            return grouped.transformWithStateInPandas(
                JoinTally(), OUT, self.op_mode.capitalize(), "EventTime"
            )
        func = tally_timed if self.timeout == "EventTimeTimeout" else tally
        return grouped.applyInPandasWithState(func, OUT, STATE, self.op_mode, self.timeout)

    def spark(self, left: Any, right: Any) -> Any:
        from pyspark.sql import functions as F

        cond = F.expr("lk = rk AND rt >= lt AND rt <= lt + interval 10 seconds")
        how = {"left": "left_outer", "right": "right_outer"}.get(self.how, self.how)
        lw, rw = left.withWatermark("lt", "5 seconds"), right.withWatermark("rt", "5 seconds")
        lt = F.col(self._time[0]).alias(self._time[1])
        joined = lw.join(rw, cond, how).select("lk", lt, "lv", "rv")
        return self._function(joined.groupBy("lk"))

    def streamkit(self, left: Any, right: Any) -> Any:
        from datetime import timedelta

        import streamkit as sk

        lw, rw = left.with_watermark("lt", "5 seconds"), right.with_watermark("rt", "5 seconds")
        cond = (
            (sk.col("lk") == sk.col("rk"))
            & (sk.col("rt") >= sk.col("lt"))
            & (sk.col("rt") <= sk.col("lt") + timedelta(seconds=10))
        )
        lt = sk.col(self._time[0]).alias(self._time[1])
        joined = lw.join(rw, cond, self.how).select("lk", lt, "lv", "rv")
        return self._function(joined.group_by("lk"))


CASES: dict[str, Case[JoinFunction]] = {
    # lt renamed t between the join and the function: the alias carries the watermark
    # (first, in pairs: the chunks of the older cases stay as they were)
    "apply_timeout_hand_renamed": Case(
        JoinFunction(timeout="EventTimeTimeout", renamed=True), HAND_PROBE.left, HAND_PROBE.right
    ),
    "tws_hand_renamed": Case(
        JoinFunction(kind="tws", renamed=True), HAND_PROBE.left, HAND_PROBE.right
    ),
    "apply_timeout_edge_renamed": Case(
        JoinFunction(timeout="EventTimeTimeout", renamed=True), HAND_EDGE.left, HAND_EDGE.right
    ),
    "tws_edge_renamed": Case(
        JoinFunction(kind="tws", renamed=True), HAND_EDGE.left, HAND_EDGE.right
    ),
    # HAND_PROBE's files (test_joins_stream_agg): joined rows per batch 2, 1, 6, 1 for key
    # a, then a no-data batch (the watermark moved); wm is the join's output watermark
    "apply_hand": Case(JoinFunction(), HAND_PROBE.left, HAND_PROBE.right),
    "apply_timeout_hand": Case(
        JoinFunction(timeout="EventTimeTimeout"), HAND_PROBE.left, HAND_PROBE.right
    ),
    "tws_hand": Case(JoinFunction(kind="tws"), HAND_PROBE.left, HAND_PROBE.right),
    # HAND_EDGE's: one pair per batch (a@100, b@125, c@200), the output watermark passes
    # a's timeout (105) in batch 2 and b's (130) in the no-data batch 3
    "apply_timeout_edge": Case(
        JoinFunction(timeout="EventTimeTimeout"), HAND_EDGE.left, HAND_EDGE.right
    ),
    "tws_edge": Case(JoinFunction(kind="tws"), HAND_EDGE.left, HAND_EDGE.right),
}
# Spark runs both after an inner join in update mode too, and after an outer join
CASES["apply_update_hand"] = Case(
    JoinFunction(timeout="EventTimeTimeout", op_mode="update", mode="update"),
    HAND_EDGE.left,
    HAND_EDGE.right,
)
CASES["tws_update_hand"] = Case(
    JoinFunction(kind="tws", op_mode="update", mode="update"), HAND_EDGE.left, HAND_EDGE.right
)
for _seed in (21, 22):
    _rng = random.Random(_seed)
    _left, _right = random_side(_rng, 7, 25), random_side(_rng, 6, 25)
    CASES[f"random{_seed}_apply"] = Case(JoinFunction(), _left, _right)
    CASES[f"random{_seed}_apply_timeout"] = Case(
        JoinFunction(timeout="EventTimeTimeout"), _left, _right
    )
    CASES[f"random{_seed}_tws"] = Case(JoinFunction(kind="tws"), _left, _right)
    CASES[f"random{_seed}_apply_left"] = Case(
        JoinFunction(how="left", timeout="EventTimeTimeout"), _left, _right
    )
    CASES[f"random{_seed}_tws_left"] = Case(JoinFunction(kind="tws", how="left"), _left, _right)
    # the processor in update mode after a left outer join (the query in append mode:
    # Spark refuses update output mode after an outer join, runs this)
    CASES[f"random{_seed}_tws_left_op_update"] = Case(
        JoinFunction(kind="tws", how="left", op_mode="update"), _left, _right
    )

CONCURRENT = 2


@pytest.fixture(scope="module")
def runs(
    rocksdb: Any, tmp_path_factory: pytest.TempPathFactory
) -> Mapping[str, tuple[Path, tuple[Batches, list[int]]]]:
    """Spark's batches and state sizes per case, run when a test first asks for it."""
    dirs = {n: write_case(tmp_path_factory.mktemp(n), c) for n, c in CASES.items()}

    def start(name: str) -> SparkRun:
        return SparkRun(rocksdb, CASES[name].op, dirs[name], their_rows)

    def chunk(names: list[str]) -> dict[str, tuple[Path, tuple[Batches, list[int]]]]:
        started = {n: start(n) for n in names}
        return {
            n: (dirs[n], retried(run.result, partial(lambda n: start(n).result(), n)))
            for n, run in started.items()
        }

    return LazyRuns(list(dirs), chunk, CONCURRENT)


@pytest.mark.parametrize("name", list(CASES))
def test_function_after_stream_join_matches_spark(
    name: str, runs: Mapping[str, tuple[Path, tuple[Batches, list[int]]]]
) -> None:
    case = CASES[name]
    directory, (theirs, their_states) = runs[name]
    assert any(rows for _, rows in theirs), "Spark emitted nothing: the case tests nothing"
    ours, our_states = run_streamkit(case.op, directory)
    assert [b for b, _ in ours] == [b for b, _ in theirs], "batch ids differ"
    for (bid, rows), (_, spark_rows) in zip(ours, theirs, strict=True):
        assert rows == spark_rows, f"batch {bid}: streamkit {rows} vs Spark {spark_rows}"
    if case.op.kind == "apply":
        assert our_states == their_states, "rows held by the join and the function differ"


REFUSED: dict[str, tuple[JoinFunction, str]] = {
    # Spark's UnsupportedOperationChecker (PySpark 4.3): the function's mode must be the
    # query's, no complete mode without an aggregation, an outer join in append mode only
    "apply_append_in_update_mode": (
        JoinFunction(mode="update"),
        "applyInPandasWithState in append mode is not supported with Update output mode",
    ),
    "apply_complete": (
        JoinFunction(mode="complete"),
        "This output mode is not supported for no streaming aggregations",
    ),
    "tws_complete": (
        JoinFunction(kind="tws", mode="complete"),
        "This output mode is not supported for no streaming aggregations",
    ),
    "apply_left_outer_update": (
        JoinFunction(how="left", op_mode="update", mode="update"),
        "LeftOuter join between two streaming DataFrames/Datasets is not supported in Update "
        "output mode",
    ),
    "apply_update_left_outer_append": (
        JoinFunction(how="left", op_mode="update"),
        "applyInPandasWithState in update mode is not supported with Append output mode",
    ),
    # transformWithStateInPandas too, whatever its own output mode (PySpark 4.3)
    "tws_left_outer_update": (
        JoinFunction(kind="tws", how="left", op_mode="update", mode="update"),
        "LeftOuter join between two streaming DataFrames/Datasets is not supported in Update "
        "output mode",
    ),
    "tws_append_left_outer_update": (
        JoinFunction(kind="tws", how="left", mode="update"),
        "LeftOuter join between two streaming DataFrames/Datasets is not supported in Update "
        "output mode",
    ),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_what_spark_refuses_is_refused_with_its_reason(
    rocksdb: Any, name: str, tmp_path: Path
) -> None:
    from pyspark.errors import AnalysisException

    from streamkit.errors import PlanError

    op, reason = REFUSED[name]
    directory = write_case(tmp_path, Case(op, [[(100, "a", 1)]], [[(100, "a", 2)]]))
    left = rocksdb.readStream.schema(LEFT_DDL).json(str(directory / "left"))
    right = rocksdb.readStream.schema(RIGHT_DDL).json(str(directory / "right"))
    writer = op.spark(left, right).writeStream.outputMode(op.mode).foreachBatch(lambda b, i: None)
    with tempfile.TemporaryDirectory() as ck, pytest.raises(AnalysisException) as info:
        writer.option("checkpointLocation", ck).start().stop()
    assert reason in str(info.value)
    ours = op.streamkit(*sides(directory)).write_stream.output_mode(op.mode)
    with pytest.raises(PlanError, match=reason):
        ours.foreach_batch(lambda f, i: None).start()
