"""``drop_duplicates`` (and ``drop_duplicates_within_watermark``) after a stream-stream
join, through PySpark and streamkit on the same files, with the harness of
``test_joins_stream_agg.py``: every batch id, its rows and the rows held by both
operators after each batch must equal Spark's. The right side's event time is selected
away before deduplicating (with both event times Spark fails the batch with
``MULTIPLE_EVENT_TIME_COLUMNS``, and streamkit refuses the query: checked here too).
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tests.differential.engines import DEADLINE, order
from tests.differential.test_joins_stream import LEFT_DDL, RIGHT_DDL, random_side
from tests.differential.test_joins_stream_agg import (
    Case,
    L,
    SparkRun,
    run_streamkit,
    sides,
    spark_runs,
    write_case,
)

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.slow]

Batches = list[tuple[int, list[tuple[Any, ...]]]]


@dataclass(frozen=True)
class JoinDedup:
    """``left.join(right, lk == rk AND rt BETWEEN lt - before AND lt + after, how)``,
    ``select(lt, lk, rv)``, then ``drop_duplicates([lk, lt])`` (``within``:
    ``drop_duplicates_within_watermark([lk])``)."""

    how: str = "inner"
    mode: str = "append"
    within: bool = False
    before: int = 5
    after: int = 10
    left_delay: int = 10
    right_delay: int = 5

    def spark(self, left: Any, right: Any, both_times: bool = False) -> Any:
        from pyspark.sql import functions as F

        cond = F.expr(
            f"lk = rk AND rt >= lt - interval {self.before} seconds "
            f"AND rt <= lt + interval {self.after} seconds"
        )
        how = {"left": "left_outer", "right": "right_outer"}.get(self.how, self.how)
        lw = left.withWatermark("lt", f"{self.left_delay} seconds")
        rw = right.withWatermark("rt", f"{self.right_delay} seconds")
        picked = lw.join(rw, cond, how).select("lt", "lk", "rv", *(["rt"] if both_times else []))
        if self.within:
            return picked.dropDuplicatesWithinWatermark(["lk"])
        return picked.dropDuplicates(["lk", "lt"])

    def streamkit(self, left: Any, right: Any, both_times: bool = False) -> Any:
        from datetime import timedelta

        import streamkit as sk

        lw = left.with_watermark("lt", f"{self.left_delay} seconds")
        rw = right.with_watermark("rt", f"{self.right_delay} seconds")
        cond = (
            (sk.col("lk") == sk.col("rk"))
            & (sk.col("rt") >= sk.col("lt") - timedelta(seconds=self.before))
            & (sk.col("rt") <= sk.col("lt") + timedelta(seconds=self.after))
        )
        picked = lw.join(rw, cond, self.how).select(
            "lt", "lk", "rv", *(["rt"] if both_times else [])
        )
        if self.within:
            return picked.drop_duplicates_within_watermark(["lk"])
        return picked.drop_duplicates(["lk", "lt"])


def spark_rows(batch: Any) -> list[tuple[Any, ...]]:
    """(lt, lk) of each row: which of a key's joined rows comes first (its ``rv``) is the
    join's output order, which neither engine promises."""
    from pyspark.sql import functions as F

    return sorted((tuple(r) for r in batch.select(F.unix_micros("lt"), "lk").collect()), key=order)


def streamkit_rows(table: pa.Table) -> list[tuple[Any, ...]]:
    lt = pc.cast(table.column("lt").combine_chunks(), pa.int64()).to_pylist()
    return sorted(zip(lt, table.column("lk").to_pylist(), strict=True), key=order)


# a left row that pairs with two right rows gives two joined rows with the same (lk, lt):
# the first is emitted, the second (same batch or a later one) is a duplicate
CASES: dict[str, Case[JoinDedup]] = {
    "hand_two_clicks": Case(
        JoinDedup(),
        [[L(100, "a", 1)], [L(120, "b", 2)], [L(200, "c", 3)]],
        [[L(101, "a", 10), L(102, "a", 11)], [L(105, "a", 12), L(121, "b", 13)], [L(200, "c", 14)]],
    )
}
for _seed in (21, 22, 23):
    _rng = random.Random(_seed)
    _left, _right = random_side(_rng, 8, 25), random_side(_rng, 6 + _seed % 3, 25)
    CASES[f"random{_seed}_inner"] = Case(JoinDedup(), _left, _right)
    CASES[f"random{_seed}_left_outer"] = Case(JoinDedup(how="left"), _left, _right)
    CASES[f"random{_seed}_within"] = Case(JoinDedup(within=True), _left, _right)
    CASES[f"random{_seed}_update"] = Case(JoinDedup(mode="update"), _left, _right)


@pytest.fixture(scope="module")
def runs(
    spark: Any, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> dict[str, Any]:
    return spark_runs(spark, request, tmp_path_factory, CASES, SparkRun.result, rows=spark_rows)


@pytest.mark.parametrize("name", list(CASES))
def test_drop_duplicates_after_stream_join_matches_spark(name: str, runs: dict[str, Any]) -> None:
    case = CASES[name]
    directory, (theirs, their_states) = runs[name]
    ours, our_states = run_streamkit(case.op, directory, streamkit_rows)
    assert [b for b, _ in ours] == [b for b, _ in theirs], "batch ids differ"
    for (bid, rows), (_, their_rows) in zip(ours, theirs, strict=True):
        assert rows == their_rows, f"batch {bid}: streamkit {rows} vs Spark {their_rows}"
    assert our_states == their_states, "rows held by the join and the deduplication differ"


def test_both_event_times_fail_in_spark_and_are_refused(spark: Any, tmp_path: Path) -> None:
    from pyspark.errors import StreamingQueryException

    import streamkit as sk

    op = JoinDedup()
    directory = write_case(tmp_path, Case(op, [[L(100, "a", 1)]], [[L(101, "a", 2)]]))
    seen: Batches = []
    left = spark.readStream.schema(LEFT_DDL).json(str(directory / "left"))
    right = spark.readStream.schema(RIGHT_DDL).json(str(directory / "right"))
    with tempfile.TemporaryDirectory() as ck:
        handle = (
            op.spark(left, right, both_times=True).writeStream.trigger(availableNow=True)
            .option("checkpointLocation", ck)
            .foreachBatch(lambda b, i: seen.append((i, spark_rows(b)))).start()
        )  # fmt: skip
        with pytest.raises(StreamingQueryException, match="MULTIPLE_EVENT_TIME_COLUMNS"):
            handle.awaitTermination(DEADLINE)
    with pytest.raises(sk.PlanError, match="MULTIPLE_EVENT_TIME_COLUMNS"):
        op.streamkit(*sides(directory), both_times=True).write_stream.foreach_batch(
            lambda f, i: None
        ).start()
