"""Chains of stateful operators (``drop_duplicates*`` then a windowed aggregation; a
windowed aggregation then a second one over ``window_time(window)``) through PySpark and
streamkit on the same files: one file per micro-batch, ``available_now``, foreach-batch
sinks. Every batch id and its rows equal Spark's, so the final result does too; the batch
API gives Spark's batch result; and the shapes Spark refuses are refused by both.

Hand-made cases first check Spark against the rule in their comment; seeded random cases
(duplicates across batches, rows behind the watermark) take Spark as the oracle.
Times are seconds after 2024-01-01T00:00Z; ``W(n)`` is the watermark after batch n.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from tests.differential.engines import DEADLINE, order
from tests.differential.inputs import SCHEMA, SPARK_SCHEMA, Files, rows_table, write_files
from tests.differential.test_operators import duplicated_files

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.slow]

Batches = list[tuple[int, list[tuple[Any, ...]]]]


@dataclass(frozen=True)
class Chain:
    """One chained query, built for both engines. ``kind``: ``dedup`` (dropDuplicates on
    k, ts), ``within`` (dropDuplicatesWithinWatermark on k), each followed by a 10 s
    windowed count per key; or ``windows``: a 10 s windowed count and sum per key, then a
    30 s window over ``window_time(window)`` summing them (``then_filter``: a filter and a
    projection on the result); ``sessions_then_window`` (4 s sessions, then a 20 s window
    over their ``window_time``) and ``window_then_sessions`` (5 s windows, then 6 s
    sessions over their ``window_time``)."""

    kind: str
    mode: str = "append"
    delay: int = 5
    then_filter: bool = False

    def spark(self, frame: Any) -> Any:
        from pyspark.sql import functions as F

        frame = frame.withWatermark("ts", f"{self.delay} seconds")
        if self.kind in ("dedup", "within"):
            kept = (
                frame.dropDuplicates(["k", "ts"]) if self.kind == "dedup"
                else frame.dropDuplicatesWithinWatermark(["k"])
            )  # fmt: skip
            return kept.groupBy(F.window("ts", "10 seconds").alias("window"), "k").agg(
                F.count(F.lit(1)).alias("n")
            )
        if self.kind == "sessions_then_window":
            sessions = frame.groupBy(F.session_window("ts", "4 seconds").alias("window"), "k")
            counts = sessions.agg(F.count(F.lit(1)).alias("n"))
            by = F.window(F.window_time("window"), "20 seconds").alias("window")
            return counts.groupBy(by, "k").agg(F.sum("n").alias("n"))
        if self.kind == "window_then_sessions":
            tumbling = frame.groupBy(F.window("ts", "5 seconds").alias("window"), "k")
            counts = tumbling.agg(F.count(F.lit(1)).alias("n"))
            by = F.session_window(F.window_time("window"), "6 seconds").alias("window")
            return counts.groupBy(by, "k").agg(F.sum("n").alias("n"))
        first = frame.groupBy(F.window("ts", "10 seconds").alias("window"), "k").agg(
            F.count(F.lit(1)).alias("n"), F.sum("v").alias("s")
        )
        second = first.groupBy(
            F.window(F.window_time("window"), "30 seconds").alias("window"), "k"
        ).agg(F.sum("n").alias("n"), F.max("s").alias("top"), F.count(F.lit(1)).alias("w"))
        if self.then_filter:
            second = second.filter(F.col("n") >= 2).select(
                "window", "k", (F.col("n") * 10).alias("n10")
            )
        return second

    def streamkit(self, frame: Any) -> Any:
        import streamkit as sk

        frame = frame.with_watermark("ts", f"{self.delay} seconds")
        if self.kind in ("dedup", "within"):
            kept = (
                frame.drop_duplicates(["k", "ts"]) if self.kind == "dedup"
                else frame.drop_duplicates_within_watermark(["k"])
            )  # fmt: skip
            return kept.group_by(sk.window("ts", "10 seconds"), "k").agg(sk.count().alias("n"))
        if self.kind == "sessions_then_window":
            sessions = frame.group_by(sk.session_window("ts", "4 seconds"), "k")
            counts = sessions.agg(sk.count().alias("n"))
            windows = sk.window(sk.window_time("window"), "20 seconds")
            return counts.group_by(windows, "k").agg(sk.sum("n").alias("n"))
        if self.kind == "window_then_sessions":
            tumbling = frame.group_by(sk.window("ts", "5 seconds"), "k")
            counts = tumbling.agg(sk.count().alias("n"))
            sessions_of = sk.session_window(sk.window_time("window"), "6 seconds")
            return counts.group_by(sessions_of, "k").agg(sk.sum("n").alias("n"))
        first = frame.group_by(sk.window("ts", "10 seconds"), "k").agg(
            sk.count().alias("n"), sk.sum("v").alias("s")
        )
        second = first.group_by(sk.window(sk.window_time("window"), "30 seconds"), "k").agg(
            sk.sum("n").alias("n"), sk.max("s").alias("top"), sk.count().alias("w")
        )
        if self.then_filter:
            second = second.filter(sk.col("n") >= 2).select(
                "window", "k", (sk.col("n") * 10).alias("n10")
            )
        return second


def spark_rows(batch: Any) -> list[tuple[Any, ...]]:
    """A window as (start, end) in epoch microseconds, then the other columns."""
    from pyspark.sql import functions as F

    rest = [F.col(c) for c in batch.columns if c != "window"]
    cols = [F.unix_micros("window.start"), F.unix_micros("window.end"), *rest]
    return sorted((tuple(r) for r in batch.select(*cols).collect()), key=order)


def streamkit_rows(table: pa.Table) -> list[tuple[Any, ...]]:
    window = table.column("window").combine_chunks()
    starts = window.field("start").cast(pa.int64()).to_pylist()
    ends = window.field("end").cast(pa.int64()).to_pylist()
    rest = [table.column(c).to_pylist() for c in table.column_names if c != "window"]
    return sorted(zip(starts, ends, *rest, strict=True), key=order)


class SparkRun:
    def __init__(self, spark: Any, chain: Chain, directory: Path) -> None:
        self.seen: Batches = []
        self._ck = tempfile.TemporaryDirectory(prefix="spark-ck-")
        stream = (
            spark.readStream.schema(SPARK_SCHEMA).option("maxFilesPerTrigger", 1)
            .json(str(directory))
        )  # fmt: skip
        self._handle = (
            chain.spark(stream).writeStream.outputMode(chain.mode).trigger(availableNow=True)
            .option("checkpointLocation", self._ck.name)
            .foreachBatch(lambda b, i: self.seen.append((i, spark_rows(b)))).start()
        )  # fmt: skip

    def result(self) -> Batches:
        try:
            assert self._handle.awaitTermination(DEADLINE), "Spark did not finish"
            assert self._handle.exception() is None, str(self._handle.exception())
        finally:
            self._ck.cleanup()
        return sorted(self.seen, key=lambda b: b[0])


def run_streamkit(chain: Chain, directory: Path) -> Batches:
    import streamkit as sk

    seen: Batches = []
    source = sk.read_stream.files(
        str(directory), format="json", schema=SCHEMA, max_files_per_trigger=1
    )
    handle = (
        chain.streamkit(source).write_stream.output_mode(chain.mode)
        .trigger(available_now=True)
        .foreach_batch(lambda f, i: seen.append((i, streamkit_rows(f.to_arrow())))).start()
    )  # fmt: skip
    assert handle.await_termination(timeout=DEADLINE), "streamkit did not finish"
    assert handle.exception is None, repr(handle.exception)
    return sorted(seen, key=lambda b: b[0])


def w(start: int, end: int) -> tuple[int, int]:
    """A window as epoch microseconds."""
    from tests.differential.inputs import micros

    return micros(start), micros(end)


@dataclass(frozen=True)
class Case:
    chain: Chain
    files: Files
    expected: Batches | None = None


CASES: dict[str, Case] = {
    # dropDuplicates(k, ts) then a 10 s count, delay 5. W(0)=3, W(1)=20, W(2)=30.
    # Batch 0: (1,a) twice -> once, (8,a): [0,10) a holds 2; nothing closes. Batch 1
    # (in force W(0)=3): (1,a) is still held, a duplicate; (25,a) new. Batch 2 (in force
    # W(1)=20): (12,b) and (35,b) counted, then [0,10) a and [10,20) b (end 20 <= 20)
    # close. Batch 3 (no data, W(2)=30): [20,30) a closes; [30,40) b stays open.
    "dedup_then_window": Case(
        Chain("dedup"),
        [
            [(1, "a", 1, 0), (1, "a", 2, 0), (8, "a", 3, 0)],
            [(1, "a", 4, 1), (25, "a", 5, 1)],
            [(12, "b", 6, 2), (35, "b", 7, 2)],
        ],
        [
            (0, []),
            (1, []),
            (2, [(*w(0, 10), "a", 2), (*w(10, 20), "b", 1)]),
            (3, [(*w(20, 30), "a", 1)]),
        ],
    ),
    # Two windowed aggregations: 10 s counts, then 30 s sums over window_time. A 10 s
    # window [0,10) closes at W >= 10 and lands in [0,30) (its window_time is 9.999999 s);
    # the 30 s window closes only when W >= 30 (batch 3, the no-data batch after W(2)=40).
    "window_then_window": Case(
        Chain("windows"),
        [
            [(1, "a", 1, 0), (12, "a", 2, 0)],
            [(15, "a", 3, 1), (22, "a", 4, 1)],
            [(45, "a", 5, 2)],
        ],
        [
            (0, []),
            (1, []),
            (2, []),
            (3, [(*w(0, 30), "a", 4, 5, 3)]),
        ],
    ),
}
for _seed in (1, 2, 3):
    _files = duplicated_files(_seed, files=10)
    CASES[f"random{_seed}_dedup_then_window"] = Case(Chain("dedup", delay=4), _files)
    CASES[f"random{_seed}_within_then_window"] = Case(Chain("within", delay=6), _files)
    CASES[f"random{_seed}_window_then_window"] = Case(Chain("windows", delay=3), _files)
CASES["random4_window_then_window_filter"] = Case(
    Chain("windows", then_filter=True), duplicated_files(4, files=12)
)
for _seed in (7, 8):
    _files = duplicated_files(_seed, files=12)
    CASES[f"random{_seed}_sessions_then_window"] = Case(
        Chain("sessions_then_window", delay=3), _files
    )
    CASES[f"random{_seed}_window_then_sessions"] = Case(
        Chain("window_then_sessions", delay=3), _files
    )
CASES["random5_dedup_then_window_update"] = Case(
    Chain("dedup", mode="update"), duplicated_files(5, files=10)
)
CASES["random6_dedup_then_window_complete"] = Case(
    Chain("dedup", mode="complete"), duplicated_files(6, files=10)
)


@pytest.fixture(scope="module")
def runs(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Batches]]:
    """Every case's files and Spark's batches (Spark's queries run concurrently)."""
    dirs = {n: write_files(tmp_path_factory.mktemp(n), c.files, "json") for n, c in CASES.items()}
    started = {n: SparkRun(spark, CASES[n].chain, d) for n, d in dirs.items()}
    return {n: (dirs[n], run.result()) for n, run in started.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_chain_stream_matches_spark_batch_by_batch(
    name: str, runs: dict[str, tuple[Path, Batches]]
) -> None:
    case = CASES[name]
    directory, theirs = runs[name]
    if case.expected is not None:
        assert theirs == case.expected, "Spark disagrees with the hand derivation"
    ours = run_streamkit(case.chain, directory)
    assert [b for b, _ in ours] == [b for b, _ in theirs], "batch ids differ"
    for (bid, rows), (_, their_rows) in zip(ours, theirs, strict=True):
        assert rows == their_rows, f"batch {bid}: streamkit {rows} vs Spark {their_rows}"
    if case.chain.mode == "append":
        final = sorted((r for _, rows in ours for r in rows), key=order)
        assert final == sorted((r for _, rows in theirs for r in rows), key=order)


@pytest.mark.parametrize("kind", ["dedup", "windows"])
def test_chain_batch_matches_spark_batch(spark: Any, kind: str, tmp_path: Path) -> None:
    """The same chained plan as a batch job (watermarks ignored) equals Spark's batch job
    (Spark refuses dropDuplicatesWithinWatermark in a batch job, so it is not compared)."""
    import streamkit as sk

    files = duplicated_files(11, files=10)
    directory = write_files(tmp_path / "in", files, "json")
    chain = Chain(kind)
    ours = streamkit_rows(
        chain.streamkit(sk.from_arrow(rows_table([r for f in files for r in f]))).to_arrow()
    )
    frame = spark.read.schema(SPARK_SCHEMA).json(str(directory)).coalesce(1)
    assert ours == spark_rows(chain.spark(frame))


def _refused_by_spark(spark: Any, build: Any, mode: str, directory: Path) -> str:
    from pyspark.errors import AnalysisException

    stream = spark.readStream.schema(SPARK_SCHEMA).json(str(directory))
    writer = build(stream).writeStream.outputMode(mode).foreachBatch(lambda b, i: None)
    with tempfile.TemporaryDirectory() as ck, pytest.raises(AnalysisException) as info:
        writer.option("checkpointLocation", ck).start().stop()
    return str(info.value)


REFUSED = {
    # an aggregation in update mode below another: Spark's "correctness" check
    "window_then_window_update": ("update", "correctness"),
    "window_then_window_complete": ("complete", "correctness"),
    # a second aggregation by a key only, or by a window over window.start (no event
    # time): append needs a watermark
    "window_then_key": ("append", "without watermark"),
    "window_then_window_on_start": ("append", "without watermark"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_shapes_spark_refuses_are_refused_with_its_reason(
    spark: Any, name: str, tmp_path: Path
) -> None:
    from pyspark.sql import functions as F

    import streamkit as sk
    from streamkit.errors import PlanError

    mode, reason = REFUSED[name]
    directory = write_files(tmp_path / "in", [[(1, "a", 1, 0)]], "json")

    def spark_build(s: Any) -> Any:
        first = (
            s.withWatermark("ts", "5 seconds").groupBy(F.window("ts", "10 seconds"), "k").count()
        )
        if name == "window_then_key":
            return first.groupBy("k").agg(F.sum("count"))
        column = F.col("window.start") if name.endswith("on_start") else F.window_time("window")
        return first.groupBy(F.window(column, "30 seconds"), "k").agg(F.sum("count"))

    def streamkit_build(s: Any) -> Any:
        first = (
            s.with_watermark("ts", "5 seconds")
            .group_by(sk.window("ts", "10 seconds"), "k")
            .agg(sk.count())
        )
        if name == "window_then_key":
            return first.group_by("k").agg(sk.sum("count"))
        column = (
            sk.col("window").get_field("start")
            if name.endswith("on_start")
            else sk.window_time("window")
        )
        return first.group_by(sk.window(column, "30 seconds"), "k").agg(sk.sum("count"))

    assert reason in _refused_by_spark(spark, spark_build, mode, directory)
    source = sk.read_stream.files(str(directory), format="json", schema=SCHEMA)
    with pytest.raises(PlanError, match=reason):
        streamkit_build(source).write_stream.output_mode(mode).foreach_batch(
            lambda f, i: None
        ).start()
