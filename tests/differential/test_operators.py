"""``drop_duplicates``, ``drop_duplicates_within_watermark`` and operations after a
streaming aggregation, through PySpark and streamkit on the same files (one file per
micro-batch, ``available_now``, foreach-batch sinks): every batch id and its rows, and the
final result, equal Spark's. Hand-made cases first check Spark against the rule written in
their comment (so a misreading of Spark fails as such); seeded random cases add duplicates
across batches and rows behind the watermark.

Times are seconds after 2024-01-01T00:00Z; ``W(n)`` is the watermark after batch n.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tests.differential.engines import DEADLINE, order
from tests.differential.inputs import SCHEMA, SPARK_SCHEMA, Files, Row, micros, write_files

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.slow]

Batches = list[tuple[int, list[tuple[Any, ...]]]]
"""``(batch id, sorted output rows)`` per batch, in batch order."""


@dataclass(frozen=True)
class Op:
    """One query, built for both engines. ``kind``: ``dedup`` (``subset``),
    ``within`` (``subset``), or ``agg`` (a windowed count, then filter / with_column /
    select); ``delay`` None means no watermark."""

    kind: str
    mode: str
    subset: tuple[str, ...] = ("k",)
    delay: int | None = 5

    def spark(self, frame: Any) -> Any:
        from pyspark.sql import functions as F

        if self.delay is not None:
            frame = frame.withWatermark("ts", f"{self.delay} seconds")
        if self.kind == "dedup":
            return frame.dropDuplicates(list(self.subset))
        if self.kind == "within":
            return frame.dropDuplicatesWithinWatermark(list(self.subset))
        counts = frame.groupBy(F.window("ts", "10 seconds").alias("window"), "k").agg(
            F.count(F.lit(1)).alias("n"), F.sum("v").alias("s")
        )
        return (
            counts.filter(F.col("n") >= 2)
            .withColumn("n2", F.col("n") * 10 + F.col("s"))
            .select(F.unix_micros(F.col("window.start")).alias("ws"), "k", "n", "n2")
        )

    def streamkit(self, frame: Any) -> Any:
        import streamkit as sk

        if self.delay is not None:
            frame = frame.with_watermark("ts", f"{self.delay} seconds")
        if self.kind == "dedup":
            return frame.drop_duplicates(list(self.subset))
        if self.kind == "within":
            return frame.drop_duplicates_within_watermark(list(self.subset))
        counts = frame.group_by(sk.window("ts", "10 seconds"), "k").agg(
            sk.count().alias("n"), sk.sum("v").alias("s")
        )
        return (
            counts.filter(sk.col("n") >= 2)
            .with_column("n2", sk.col("n") * 10 + sk.col("s"))
            .select("window", "k", "n", "n2")
        )


def spark_rows(batch: Any, op: Op) -> list[tuple[Any, ...]]:
    from pyspark.sql import functions as F

    if op.kind != "agg":
        batch = batch.select(F.unix_micros("ts").alias("ts"), "k", "v", "u")
    return sorted((tuple(r) for r in batch.collect()), key=order)


def streamkit_rows(table: pa.Table) -> list[tuple[Any, ...]]:
    first = table.column(0).combine_chunks()
    if pa.types.is_struct(first.type):  # a window: its start, as Spark's rows give it
        first = first.field("start")
    if pa.types.is_timestamp(first.type) or pa.types.is_struct(table.field(0).type):
        table = table.set_column(0, table.field(0).name, pc.cast(first, pa.int64()))
    return sorted(zip(*(c.to_pylist() for c in table.columns), strict=True), key=order)


class SparkRun:
    """A Spark streaming query over one directory, collecting every batch."""

    def __init__(self, spark: Any, op: Op, directory: Path) -> None:
        self.op, self.seen = op, []  # type: ignore[var-annotated]
        self._ck = tempfile.TemporaryDirectory(prefix="spark-ck-")
        stream = (
            spark.readStream.schema(SPARK_SCHEMA).option("maxFilesPerTrigger", 1)
            .json(str(directory))
        )  # fmt: skip
        self._handle = (
            op.spark(stream).writeStream.outputMode(op.mode).trigger(availableNow=True)
            .option("checkpointLocation", self._ck.name)
            .foreachBatch(lambda b, i: self.seen.append((i, spark_rows(b, op)))).start()
        )  # fmt: skip

    def result(self) -> Batches:
        try:
            assert self._handle.awaitTermination(DEADLINE), "Spark did not finish"
            assert self._handle.exception() is None, str(self._handle.exception())
        finally:
            self._ck.cleanup()
        return sorted(self.seen, key=lambda b: b[0])


def run_streamkit(op: Op, directory: Path) -> Batches:
    import streamkit as sk

    seen: Batches = []
    source = sk.read_stream.files(
        str(directory), format="json", schema=SCHEMA, max_files_per_trigger=1
    )
    handle = (
        op.streamkit(source).write_stream.output_mode(op.mode).trigger(available_now=True)
        .foreach_batch(lambda f, i: seen.append((i, streamkit_rows(f.to_arrow())))).start()
    )  # fmt: skip
    assert handle.await_termination(timeout=DEADLINE), "streamkit did not finish"
    assert handle.exception is None, repr(handle.exception)
    return sorted(seen, key=lambda b: b[0])


def rows_out(rows: list[Row]) -> list[tuple[Any, ...]]:
    """Input rows as output rows (event time in microseconds), sorted."""
    return sorted(((micros(t), k, v, u) for t, k, v, u in rows if t is not None), key=order)


def duplicated_files(seed: int, files: int = 8) -> Files:
    """A seeded stream: a clock advancing 0..5 s per file, keys a..d, rows up to 20 s
    behind the clock, and a third of the rows repeated (same ``ts`` and ``k``, another
    ``v``) in the same file or a later one."""
    rng = random.Random(seed)
    clock, out, pool = 10, [], []  # type: ignore[var-annotated]
    for index in range(files):
        clock += rng.randint(0, 5)
        rows: list[Row] = []
        for _ in range(rng.randint(0, 6)):
            if pool and rng.random() < 0.35:
                t, k, _v, u = rng.choice(pool)
                rows.append((t, k, rng.randint(0, 99), u))
            else:
                t = clock - rng.choice([0, 0, rng.randint(0, 20)])
                rows.append((t, rng.choice("abcd"), rng.randint(0, 99), index))
        pool += rows
        out.append(rows)
    return out


@dataclass(frozen=True)
class Case:
    op: Op
    files: Files
    expected: Callable[[], Batches] | None = None
    """Hand-derived batches Spark must give (None: random input, Spark is the oracle)."""


def t(*rows: Row) -> list[tuple[Any, ...]]:
    return rows_out(list(rows))


CASES: dict[str, Case] = {
    # drop_duplicates(k, ts), delay 5. W(0)=5, W(1)=15, W(2)=15, W(3)=25.
    # Batch 1 (late mark: W(-1) none, evicts with W(0)=5): (10,a) again is a duplicate;
    # (3,b) new. Batch 2 (late mark W(0)=5, evicts with W(1)=15): (3,b) late; (10,a) held
    # (10 > 5 at batch 1's eviction), duplicate. Batch 3 (late mark W(1)=15; evicts with
    # W(2)=15): (12,a) late though never seen; (20,a) duplicate of batch 1's.
    # Batch 4: no data, W(3)=25 > W(2).
    "dedup_with_time_in_subset": Case(
        Op("dedup", "append", ("k", "ts"), 5),
        [
            [(10, "a", 1, 0), (10, "a", 2, 0), (10, "b", 3, 0)],
            [(10, "a", 4, 1), (3, "b", 5, 1), (20, "a", 6, 1)],
            [(3, "b", 7, 2), (10, "a", 8, 2), (11, "c", 9, 2)],
            [(12, "a", 10, 3), (20, "a", 11, 3), (30, "d", 12, 3)],
        ],
        lambda: [
            (0, t((10, "a", 1, 0), (10, "b", 3, 0))),
            (1, t((3, "b", 5, 1), (20, "a", 6, 1))),
            (2, t((11, "c", 9, 2))),
            (3, t((30, "d", 12, 3))),
            (4, []),
        ],
    ),
    # drop_duplicates_within_watermark(k), delay 10: key expires at first ts + 10.
    # Batch 0: a@0 (expires 10), b@2 (12); W(0) = -8. Batch 1 (evicts with -8): a@5 dup;
    # c@30 new (40); W(1) = 20. Batch 2, an empty file, evicts with 20: a, b gone.
    # Batch 3 (late mark 20): b@3 late; a@25 emitted again (expires 35); W stays 20.
    "within_watermark_re_emits_after_expiry": Case(
        Op("within", "append", ("k",), 10),
        [
            [(0, "a", 1, 0), (1, "a", 2, 0), (2, "b", 3, 0)],
            [(5, "a", 4, 1), (30, "c", 5, 1)],
            [],
            [(25, "a", 6, 3), (3, "b", 7, 3), (26, "a", 8, 3)],
        ],
        lambda: [
            (0, t((0, "a", 1, 0), (2, "b", 3, 0))),
            (1, t((30, "c", 5, 1))),
            (2, []),
            (3, t((25, "a", 6, 3))),
        ],
    ),
    # Within watermark, null event times: Spark reads a null time as 0, so the key expires
    # at 0 + 10 s, i.e. at the first eviction after it is held. Batch 0 (no eviction):
    # a emitted once; batch 1: a held while its rows are seen (duplicate), then evicted
    # with W(0) = -5; batch 2: a emitted again.
    "within_watermark_null_event_time": Case(
        Op("within", "append", ("k",), 10),
        [
            [(None, "a", 1, 0), (None, "a", 2, 0), (5, "b", 3, 0)],
            [(None, "a", 4, 1)],
            [(None, "a", 5, 2)],
        ],
        lambda: [
            (0, sorted([(None, "a", 1, 0), (micros(5), "b", 3, 0)], key=order)),
            (1, []),
            (2, [(None, "a", 5, 2)]),
        ],
    ),
    # No watermark: every key once, for ever (state grows).
    "dedup_without_watermark": Case(
        Op("dedup", "append", ("k",), None),
        [[(5, "a", 1, 0), (1, "b", 2, 0)], [(0, "a", 3, 1), (9, "c", 4, 1)], [(7, "b", 5, 2)]],
        lambda: [
            (0, t((5, "a", 1, 0), (1, "b", 2, 0))),
            (1, t((9, "c", 4, 1))),
            (2, []),
        ],
    ),
}
for _seed in (1, 2, 3):
    _files = duplicated_files(_seed)
    CASES[f"random{_seed}_dedup_k_ts_update"] = Case(Op("dedup", "update", ("k", "ts")), _files)
    CASES[f"random{_seed}_dedup_k_only_wm"] = Case(Op("dedup", "append", ("k",), 4), _files)
    CASES[f"random{_seed}_within_k"] = Case(Op("within", "append", ("k",), 6), _files)
    CASES[f"random{_seed}_agg_then_filter_select_update"] = Case(Op("agg", "update"), _files)
    CASES[f"random{_seed}_agg_then_filter_select_append"] = Case(Op("agg", "append"), _files)


@pytest.fixture(scope="module")
def runs(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Batches]]:
    """Every case's files and Spark's batches (Spark's queries run concurrently)."""
    dirs = {n: write_files(tmp_path_factory.mktemp(n), c.files, "json") for n, c in CASES.items()}
    started = {n: SparkRun(spark, CASES[n].op, d) for n, d in dirs.items()}
    return {n: (dirs[n], run.result()) for n, run in started.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_streamkit_matches_spark(name: str, runs: dict[str, tuple[Path, Batches]]) -> None:
    case = CASES[name]
    directory, theirs = runs[name]
    if case.expected is not None:
        assert theirs == case.expected(), "Spark disagrees with the hand derivation"
    ours = run_streamkit(case.op, directory)
    assert [b for b, _ in ours] == [b for b, _ in theirs], "batch ids differ"
    for (bid, rows), (_, their_rows) in zip(ours, theirs, strict=True):
        assert rows == their_rows, f"batch {bid}: streamkit {rows} vs Spark {their_rows}"


@pytest.mark.parametrize("subset", [["k"], ["k", "ts"], None])
def test_batch_drop_duplicates_matches_spark(spark: Any, subset: list[str] | None) -> None:
    """The batch API: the first row of each distinct subset, as Spark's batch job."""
    import streamkit as sk
    from tests.differential.inputs import rows_table

    rows = [r for rows in duplicated_files(7) for r in rows]
    ours = sk.from_arrow(rows_table(rows)).drop_duplicates(subset).to_arrow()
    frame = (
        spark.createDataFrame(
            [(None if r[0] is None else micros(r[0]), *r[1:]) for r in rows],
            "ts_us bigint, k string, v bigint, u bigint",
        )
        .selectExpr("timestamp_micros(ts_us) AS ts", "k", "v", "u")
        .coalesce(1)
    )
    theirs = spark_rows(frame.dropDuplicates(subset) if subset else frame.dropDuplicates(),
                        Op("dedup", "append"))  # fmt: skip
    assert streamkit_rows(ours) == theirs
