"""A windowed aggregation after a stream-stream join, through PySpark and streamkit on the
same files: two file streams (``left/``, ``right/``; one file per micro-batch on each side,
``available_now``), each with its own watermark, joined on a key and a time range, then
counted per window of one side's event time. Every batch id and its rows must equal
Spark's, and so must the rows held by both operators after each batch (the join buffers
plus the open windows: Spark's ``numRowsTotal`` summed over its two operators), which is
how the watermark the join passes on (Spark 3.4+'s ``produceOutputWatermark``: the least
of its two state watermarks and the watermark) is compared: it decides when a window
closes. Hand-made cases first check Spark against the derivation in their comment;
seeded random cases (late rows, null keys, empty files) take Spark as the oracle.

Times are seconds after 2024-01-01T00:00Z; ``W(n)`` is the global watermark in force in
batch n (the minimum of the two sides' watermarks after batch n - 1).
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import pyarrow as pa
import pytest

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    OurRows = Callable[[pa.Table], list[tuple[Any, ...]]]

from tests.differential.engines import DEADLINE, order
from tests.differential.test_chains import spark_rows, streamkit_rows, w
from tests.differential.test_joins_stream import (
    LEFT_DDL,
    RIGHT_DDL,
    SideFiles,
    random_side,
    write_side,
)

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.slow]

Batches = list[tuple[int, list[tuple[Any, ...]]]]
CONCURRENT = 6
"""Spark queries run at once (py4j's callback channel on a busy machine)."""
R = TypeVar("R")


@dataclass(frozen=True)
class JoinAgg:
    """``left.join(right, lk == rk AND rt BETWEEN lt - before AND lt + after, how)``
    (watermark delays in seconds), then ``count(*)``, ``sum(rv)`` per ``size``-second
    window of ``time`` (``lt`` or ``rt``) and that side's key (``size`` 0: per key only,
    update mode; ``size`` -1: per ``time`` itself and key, no window: groups leave by
    ``time`` with the watermark the join passes on)."""

    how: str = "inner"
    mode: str = "append"
    time: str = "lt"
    size: int = 10
    before: int = 0
    after: int = 10
    left_delay: int = 5
    right_delay: int = 5
    rename: bool = False
    """Select ``time`` as ``t`` (with the key and ``rv``) after the join and group by
    ``t``: a plain rename carries the watermark on (an alias keeps Spark's metadata)."""

    @property
    def key(self) -> str:
        return "lk" if self.time == "lt" else "rk"

    def spark(self, left: Any, right: Any) -> Any:
        from pyspark.sql import functions as F

        cond = F.expr(
            f"lk = rk AND rt >= lt - interval {self.before} seconds "
            f"AND rt <= lt + interval {self.after} seconds"
        )
        how = {"left": "left_outer", "right": "right_outer"}.get(self.how, self.how)
        lw = left.withWatermark("lt", f"{self.left_delay} seconds")
        rw = right.withWatermark("rt", f"{self.right_delay} seconds")
        joined, time = lw.join(rw, cond, how), self.time
        if self.rename:
            joined, time = joined.select(F.col(time).alias("t"), self.key, "rv"), "t"
        if not self.size:
            return joined.groupBy(self.key).agg(
                F.count(F.lit(1)).alias("n"), F.sum("rv").alias("s")
            )
        if self.size < 0:
            return joined.groupBy(time, self.key).agg(
                F.count(F.lit(1)).alias("n"), F.sum("rv").alias("s")
            )
        by = F.window(time, f"{self.size} seconds").alias("window")
        return joined.groupBy(by, self.key).agg(
            F.count(F.lit(1)).alias("n"), F.sum("rv").alias("s")
        )

    def streamkit(self, left: Any, right: Any) -> Any:
        from datetime import timedelta

        import streamkit as sk

        lw = left.with_watermark("lt", f"{self.left_delay} seconds")
        rw = right.with_watermark("rt", f"{self.right_delay} seconds")
        cond = (
            (sk.col("lk") == sk.col("rk"))
            & (sk.col("rt") >= sk.col("lt") - timedelta(seconds=self.before))
            & (sk.col("rt") <= sk.col("lt") + timedelta(seconds=self.after))
        )
        joined, time = lw.join(rw, cond, self.how), self.time
        if self.rename:
            joined, time = joined.select(sk.col(time).alias("t"), self.key, "rv"), "t"
        if not self.size:
            return joined.group_by(self.key).agg(sk.count().alias("n"), sk.sum("rv").alias("s"))
        if self.size < 0:
            return joined.group_by(time, self.key).agg(
                sk.count().alias("n"), sk.sum("rv").alias("s")
            )
        by = sk.window(time, f"{self.size} seconds")
        return joined.group_by(by, self.key).agg(sk.count().alias("n"), sk.sum("rv").alias("s"))


class SparkRun:
    """Spark's query over ``left/`` and ``right/`` of one directory: every batch (as
    ``rows`` gives it), and the rows held by its stateful operators after each batch."""

    def __init__(
        self,
        spark: Any,
        op: StreamOp,
        directory: Path,
        rows: Callable[[Any], list[tuple[Any, ...]]] | None = None,
    ) -> None:
        convert = rows or their_rows
        self.seen: Batches = []
        self._ck = tempfile.TemporaryDirectory(prefix="spark-ck-")

        def stream(side: str, ddl: str) -> Any:
            reader = spark.readStream.schema(ddl).option("maxFilesPerTrigger", 1)
            return reader.json(str(directory / side))

        query = op.spark(stream("left", LEFT_DDL), stream("right", RIGHT_DDL))
        self._handle = (
            query.writeStream.outputMode(op.mode).trigger(availableNow=True)
            .option("checkpointLocation", self._ck.name)
            .foreachBatch(lambda b, i: self.seen.append((i, convert(b))))
            .start()
        )  # fmt: skip

    def outcome(self) -> tuple[Batches, list[Any], str | None]:
        """Once it ends: its batches and its progress reports, both in batch order, and
        the error that stopped it (None: none). Removes its checkpoint."""
        try:
            assert self._handle.awaitTermination(DEADLINE), "Spark did not finish"
            error = self._handle.exception()
            progress = [] if error is not None else self._handle.recentProgress
        finally:
            self._ck.cleanup()
        batches = sorted(self.seen, key=lambda b: b[0])
        if error is not None:
            return batches, [], str(error)
        return batches, sorted(progress, key=lambda p: p["batchId"]), None

    def result(self) -> tuple[Batches, list[int]]:
        """Its batches and the rows held after each (it must not fail)."""
        batches, progress, error = self.outcome()
        assert error is None, error
        return batches, [sum(int(s["numRowsTotal"]) for s in p["stateOperators"]) for p in progress]


def their_rows(batch: Any) -> list[tuple[Any, ...]]:
    """Spark's rows, sorted; a window as its bounds, a timestamp as epoch microseconds."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import TimestampType

    if "window" in batch.columns:
        return spark_rows(batch)
    cols = [
        F.unix_micros(f.name).alias(f.name) if isinstance(f.dataType, TimestampType) else f.name
        for f in batch.schema.fields
    ]
    return sorted((tuple(r) for r in batch.select(cols).collect()), key=order)


def our_rows(table: pa.Table) -> list[tuple[Any, ...]]:
    """streamkit's rows, as :func:`their_rows` gives Spark's."""
    if "window" in table.column_names:
        return streamkit_rows(table)
    columns = [
        c.cast(pa.timestamp("us", "UTC")).cast(pa.int64()) if pa.types.is_timestamp(c.type) else c
        for c in table.columns
    ]
    return sorted(zip(*(c.to_pylist() for c in columns), strict=True), key=order)


def sides(directory: Path) -> tuple[Any, Any]:
    """Both file streams, one file per micro-batch."""
    import streamkit as sk

    ts = pa.timestamp("us", "UTC")

    def side(name: str, schema: pa.Schema) -> Any:
        return sk.read_stream.files(
            str(directory / name), format="json", schema=schema, max_files_per_trigger=1
        )

    left = side("left", pa.schema([("lt", ts), ("lk", pa.string()), ("lv", pa.int64())]))
    right = side("right", pa.schema([("rt", ts), ("rk", pa.string()), ("rv", pa.int64())]))
    return left, right


class StreamOp(Protocol):
    """A query over both streams, built for either engine, run in :attr:`mode`."""

    @property
    def mode(self) -> str: ...

    def spark(self, left: Any, right: Any) -> Any: ...

    def streamkit(self, left: Any, right: Any) -> Any: ...


OpT = TypeVar("OpT", bound=StreamOp)


def streamkit_progress(
    op: StreamOp,
    directory: Path,
    rows: OurRows = our_rows,
    checkpoint: Path | None = None,
) -> tuple[Batches, list[Any]]:
    """The query through streamkit: its batches (each as ``rows`` gives it) and the
    progress of each (``checkpoint``: resume from and write to it)."""
    seen: Batches = []
    writer = (
        op.streamkit(*sides(directory)).write_stream.output_mode(op.mode)
        .trigger(available_now=True)
        .foreach_batch(lambda f, i: seen.append((i, rows(f.to_arrow()))))
    )  # fmt: skip
    if checkpoint is not None:
        writer = writer.option("checkpointLocation", str(checkpoint))
    handle = writer.start()
    assert handle.await_termination(timeout=DEADLINE), "streamkit did not finish"
    assert handle.exception is None, repr(handle.exception)
    progress = [p for p in handle.recent_progress if p.num_input_rows >= 0]
    return sorted(seen, key=lambda b: b[0]), progress


def run_streamkit(
    op: StreamOp, directory: Path, rows: OurRows = our_rows, checkpoint: Path | None = None
) -> tuple[Batches, list[int]]:
    """:func:`streamkit_progress`'s batches, and the rows held after each."""
    batches, progress = streamkit_progress(op, directory, rows, checkpoint)
    return batches, [p.state_rows for p in progress]


def L(t: int, k: str, v: int) -> tuple[int, str, int]:
    return (t, k, v)


@dataclass(frozen=True)
class Case(Generic[OpT]):
    """A query (a join and what follows it) over the files of both sides."""

    op: OpT
    left: SideFiles
    right: SideFiles
    expected: Batches | None = None
    """Hand-derived batches Spark must give (None: random input, Spark is the oracle)."""
    states: list[int] | None = None
    """Hand-derived rows held (join buffers + open windows) after each batch."""


# rt in [lt, lt + 10], delays 5 and 5; a 10 s count per window of lt. With W in force the
# left buffer drops lt <= W - 10 s - 1 ms, the right one rt <= W - 1 ms, and the join
# passes on O = min(W - 10.001, W - 0.001, W) = W - 10.001 s: a window closes when its end
# is <= O.
# Batch 0 (W 0): pairs (a100, a105), (a103, a105): [100,110) holds 2. Held 3 + 1.
#   W(1) = min(103, 105) - 5 = 98.
# Batch 1 (O 87.999): pair (a130, a133): [130,140) holds 1. Held 5 + 2. W(2) = 125.
# Batch 2 (O 114.999; late for the join: <= 98): L a101 a135, R a104 a140. a101 pairs
#   with a105, a104 with a100 a103 a101, a140 with a130 a135: [100,110) holds 6 and
#   closes (110 <= 114.999), [130,140) holds 3. Not buffered: a101 (<= 114.999), a104
#   (<= 124.999); evicted: a100 a103, a105. Held 4 + 1. W(3) = min(130, 135) = 130.
# Batch 3 (O 119.999): pair (a200, a210): [200,210) opens. Held 6 + 2. W(4) = 195.
# Batch 4, no data (O 184.999): [130,140) closes with 3. Held 2 + 1.
HAND_PROBE = Case(
    JoinAgg(),
    [
        [L(100, "a", 1), L(103, "a", 2)],
        [L(130, "a", 3)],
        [L(101, "a", 4), L(135, "a", 5)],
        [L(200, "a", 6)],
    ],
    [
        [L(105, "a", 10)],
        [L(133, "a", 11)],
        [L(104, "a", 12), L(140, "a", 13)],
        [L(210, "a", 14)],
    ],
    [
        (0, []),
        (1, []),
        (2, [(*w(100, 110), "a", 6, 66)]),
        (3, []),
        (4, [(*w(130, 140), "a", 3, 37)]),
    ],
    [4, 7, 5, 8, 3],
)
# The millisecond Spark takes off: the same condition and delays. Batch 0 (W 0): pair
# (a100, a105): [100,110) holds 1. W(1) = 95. Batch 1 (O 84.999): L b125, R b125 pair:
# [120,130) b. W(2) = min(125, 125) - 5 = 120. Batch 2 (O = 120 - 10.001 = 109.999):
# L c200, R c200 pair; [100,110) does NOT close (110 > 109.999). W(3) = 195.
# Batch 3, no data (O 184.999): [100,110) and [120,130) close.
HAND_EDGE = Case(
    JoinAgg(),
    [[L(100, "a", 1)], [L(125, "b", 2)], [L(200, "c", 3)]],
    [[L(105, "a", 10)], [L(125, "b", 11)], [L(200, "c", 12)]],
    [(0, []), (1, []), (2, []), (3, [(*w(100, 110), "a", 1, 10), (*w(120, 130), "b", 1, 11)])],
)

CASES: dict[str, Case[JoinAgg]] = {"hand_probe": HAND_PROBE, "hand_edge": HAND_EDGE}
# the window on t, a rename of lt after the join: the same batches and state sizes
CASES["hand_probe_renamed"] = replace(HAND_PROBE, op=replace(HAND_PROBE.op, rename=True))
for _seed in (11, 12, 13):
    _rng = random.Random(_seed)
    _left, _right = random_side(_rng, 8, 25), random_side(_rng, 6 + _seed % 3, 25)
    _op = JoinAgg(before=5, after=10, left_delay=10, right_delay=5)
    CASES[f"random{_seed}_inner_lt"] = Case(_op, _left, _right)
    CASES[f"random{_seed}_inner_rt"] = Case(replace(_op, time="rt", size=5), _left, _right)
    CASES[f"random{_seed}_inner_update"] = Case(replace(_op, mode="update"), _left, _right)
    CASES[f"random{_seed}_left_outer"] = Case(replace(_op, how="left"), _left, _right)
    CASES[f"random{_seed}_right_outer"] = Case(replace(_op, how="right", time="rt"), _left, _right)
# update mode by key only: no window to evict, yet a no-data batch follows each batch that
# moved the watermark (Spark's aggregation owes one whenever its input watermark moved)
_base = CASES["random11_inner_lt"]
CASES["random11_update_by_key"] = Case(
    JoinAgg(mode="update", size=0, before=5, left_delay=10), _base.left, _base.right
)
# grouped by the event time itself (no window): groups leave by it with the watermark the
# join passes on (issue 18; these seeds do evict: seed 11 evicts nothing before its end)
for _name, _time in (("random12_inner_lt", "lt"), ("random13_inner_rt", "rt")):
    _c = CASES[_name]
    for _mode in ("append", "update"):
        CASES[f"{_name[:8]}_by_{_time}_{_mode}"] = Case(
            replace(_c.op, size=-1, mode=_mode), _c.left, _c.right
        )
        CASES[f"{_name[:8]}_by_renamed_{_time}_{_mode}"] = Case(
            replace(_c.op, size=-1, mode=_mode, rename=True), _c.left, _c.right
        )


def write_case(root: Path, case: Case[Any]) -> Path:
    write_side(root / "left", case.left, "lt", "lk", "lv")
    write_side(root / "right", case.right, "rt", "rk", "rv")
    return root


def spark_runs(
    spark: Any,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    cases: Mapping[str, Case[Any]],
    finish: Callable[[SparkRun], R],
    *,
    rows: Callable[[Any], list[tuple[Any, ...]]] | None = None,
) -> dict[str, tuple[Path, R]]:
    """For the ``cases`` this session selected in the requesting module: each one's
    directory (its files written) and what ``finish`` makes of Spark's run over it
    (batches as ``rows`` gives them); ``CONCURRENT`` queries at a time."""
    selected = {
        item.callspec.params["name"]
        for item in request.session.items
        if getattr(item, "module", None) is request.module and hasattr(item, "callspec")
    }
    dirs = {n: write_case(tmp_path_factory.mktemp(n), c) for n, c in cases.items() if n in selected}
    names, results = list(dirs), {}  # type: list[str], dict[str, tuple[Path, R]]
    for at in range(0, len(names), CONCURRENT):
        chunk = names[at : at + CONCURRENT]
        started = {n: SparkRun(spark, cases[n].op, dirs[n], rows) for n in chunk}
        results |= {n: (dirs[n], finish(run)) for n, run in started.items()}
    return results


@pytest.fixture(scope="module")
def runs(
    spark: Any, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> dict[str, Any]:
    """The selected cases' directories and Spark's batches and state sizes."""
    return spark_runs(spark, request, tmp_path_factory, CASES, SparkRun.result)


@pytest.mark.parametrize("name", list(CASES))
def test_aggregation_after_stream_join_matches_spark(name: str, runs: dict[str, Any]) -> None:
    case = CASES[name]
    directory, (theirs, their_states) = runs[name]
    if case.expected is not None:
        assert theirs == case.expected, "Spark disagrees with the hand derivation"
    if case.states is not None:
        assert their_states == case.states, "Spark's state sizes disagree with the derivation"
    ours, our_states = run_streamkit(case.op, directory)
    assert [b for b, _ in ours] == [b for b, _ in theirs], "batch ids differ"
    for (bid, rows), (_, their_rows) in zip(ours, theirs, strict=True):
        assert rows == their_rows, f"batch {bid}: streamkit {rows} vs Spark {their_rows}"
    assert our_states == their_states, "rows held by the join and the aggregation differ"
    final = sorted((r for _, rows in ours for r in rows), key=order)
    assert final == sorted((r for _, rows in theirs for r in rows), key=order)


REFUSED = {
    # Spark checks the join's output mode (UnsupportedOperationChecker): an inner join
    # then an aggregation runs in append and update mode, an outer join in append only
    "inner_complete": (
        JoinAgg(mode="complete"),
        "Inner join between two streaming DataFrames/Datasets is not supported in Complete "
        "output mode, only in Append and Update output modes",
    ),
    "left_update": (
        JoinAgg(how="left", mode="update"),
        "LeftOuter join between two streaming DataFrames/Datasets is not supported in Update "
        "output mode, only in Append output mode",
    ),
    "right_complete": (
        JoinAgg(how="right", time="rt", mode="complete"),
        "RightOuter join between two streaming DataFrames/Datasets is not supported in "
        "Complete output mode, only in Append output mode",
    ),
    # append mode needs a watermarked grouping key: a window on neither event time
    "append_by_key_only": (JoinAgg(time="key only"), "without watermark"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_modes_spark_refuses_are_refused_with_its_reason(
    spark: Any, name: str, tmp_path: Path
) -> None:
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F

    import streamkit as sk
    from streamkit.errors import PlanError

    op, reason = REFUSED[name]
    directory = write_case(tmp_path, Case(op, [[L(100, "a", 1)]], [[L(100, "a", 2)]]))
    left, right = sides(directory)
    spark_left = spark.readStream.schema(LEFT_DDL).json(str(directory / "left"))
    spark_right = spark.readStream.schema(RIGHT_DDL).json(str(directory / "right"))
    if op.time == "key only":
        lw, rw = (
            spark_left.withWatermark("lt", "5 seconds"),
            spark_right.withWatermark("rt", "5 seconds"),
        )
        theirs = lw.join(rw, F.expr("lk = rk AND rt >= lt AND rt <= lt + interval 10 seconds"))
        theirs = theirs.groupBy("lk").count()
        lw2, rw2 = left.with_watermark("lt", "5 seconds"), right.with_watermark("rt", "5 seconds")
        cond = (sk.col("lk") == sk.col("rk")) & (sk.col("rt") >= sk.col("lt"))
        ours = lw2.join(rw2, cond).group_by("lk").agg(sk.count())
    else:
        theirs, ours = op.spark(spark_left, spark_right), op.streamkit(left, right)
    writer = theirs.writeStream.outputMode(op.mode).foreachBatch(lambda b, i: None)
    with tempfile.TemporaryDirectory() as ck, pytest.raises(AnalysisException) as info:
        writer.option("checkpointLocation", ck).start().stop()
    assert reason in str(info.value)
    with pytest.raises(PlanError, match=reason):
        ours.write_stream.output_mode(op.mode).foreach_batch(lambda f, i: None).start()
