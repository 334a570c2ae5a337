"""A group key carrying the watermark deeper in a chain, against PySpark 4.3 (issue 18):
an aggregation grouped by such a key passes the watermark on in it (Spark's grouping
attribute keeps the event-time metadata) wherever it sits, so an aggregation above it,
grouped by that key or by a window on it, evicts by it. Same files, one per micro-batch,
every batch id and its rows equal Spark's, and so does ``numRowsTotal`` summed over the
stateful operators.

Single stream (``KEY_FILES`` of :mod:`tests.differential.test_watermark_key`; delay 5 s,
W in force 95 in batch 1, 195 in the no-data batch 4; 15a and 95f late in batch 2). The
first aggregation ``(ts, k) -> v = sum(v)`` emits 10a, 12a, 90q, 95e in batch 1 and 96e,
96f, 100z in batch 4; the one above evicts each at once:

- per ``ts`` (``AGG_THEN_KEY``): above ``drop_duplicates(["k", "ts"])`` or
  ``drop_duplicates_within_watermark``; with the key renamed after the middle aggregation,
  aliased in its ``group_by`` or renamed before ``drop_duplicates``; and above a third
  aggregation (``(ts, k, w)`` below ``(ts, k)``). Held per operator: the deduplication as
  the middle aggregation (3, 2, 3, 4, 1; within the watermark its keys live until ts +
  delay <= W: 3, 3, 4, 5, 1), the top one 0;
- per 10 s window on ``ts`` (``WINDOWED``): batch 1 closes [10, 20) with 10a, 12a (n 2,
  s 4); [90, 100) holds 90q, 95e until batch 4 adds 96e, 96f (n 4, s 316) and closes it
  with [100, 110) (n 1, s 200). The window holds 0, 1, 1, 1, 0; also right above the
  first aggregation (which streamkit refused before).

Stream-stream join (``HAND_PROBE`` of :mod:`tests.differential.test_joins_stream_agg`:
the join passes on O = W - 10.001 s), then ``(lt, lk) -> v = sum(rv)``: 100, 101 and 103
(22 each) leave in batch 2 (O 114.999), 130 (24) and 135 (13) in batch 4 (O 184.999);
above it a count per ``lt`` (or a rename of it on both sides of the middle aggregation),
or per 10 s window of ``lt`` ([100, 110): 3 rows, 66; [130, 140): 2, 37). Held: the join
buffers and the middle aggregation 5, 8, 6, 9, 3; the top one 0 at each batch's end. Also
``lt`` renamed ``t`` after the join, ``drop_duplicates(["lk", "t"])``, then a window on
``t``: the rename reaches the aggregation through the deduplication (streamkit refused
this before, following the join's own column names past it).

``transform_with_state_in_pandas`` (``Stamp``, ``eventTimeColumnName="at"``; ``HAND`` of
:mod:`tests.differential.test_transform_chains`), then ``(at, k)`` counted (or ``t``, a
rename of ``at``), then per that key: the middle aggregation emits (0 a, 1 a, 3 b) in
batch 2, 12 a in batch 3, (25 b, 35 b) in batch 4, and the top one emits each there.

Spark refuses (append): the top aggregation grouped by a column computed from the key
(``ts + 1 s``) or by ``k`` only (``without watermark``); grouped by ``ts`` and a copy
``t`` it fails the first batch (``MULTIPLE_EVENT_TIME_COLUMNS``). streamkit refuses all
three at start. (Update and complete mode above an aggregation are Spark's "correctness"
refusal, :mod:`tests.differential.test_chains`.)
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.differential.engines import DEADLINE
from tests.differential.inputs import SPARK_SCHEMA, micros, write_files
from tests.differential.test_joins_stream_agg import HAND_PROBE, SparkRun, run_streamkit
from tests.differential.test_joins_stream_agg import Case as JoinCase
from tests.differential.test_joins_stream_agg import spark_runs as join_spark_runs
from tests.differential.test_transform_chains import HAND, Chain, check_against_spark
from tests.differential.test_transform_chains import Case as ChainCase
from tests.differential.test_transform_chains import spark_outcomes as chain_outcomes
from tests.differential.test_watermark_key import (
    AGG_THEN_KEY,
    KEY_FILES,
    assert_as_in_spark,
    key_runs,
)
from tests.differential.test_watermark_key import SparkRun as KeyRun
from tests.differential.test_watermark_lineage import Case

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.slow]


def _f() -> Any:
    from pyspark.sql import functions as F

    return F


def _sk() -> Any:
    import streamkit as sk

    return sk


@dataclass(frozen=True)
class Shape:
    """One query for either engine (``spark``: PySpark's API, else streamkit's)."""

    build: Callable[[Any, bool], Any]

    def __call__(self, spark: bool) -> Callable[[Any], Any]:
        return lambda frame: self.build(frame, spark)


def _api(spark: bool) -> tuple[Any, str, Callable[[Any], Any]]:
    """(functions, the group-by method's name, a 10 s window on a column)."""
    fn = _f() if spark else _sk()
    return fn, "groupBy" if spark else "group_by", lambda c: fn.window(c, "10 seconds")


def marked(frame: Any, spark: bool) -> Any:
    """``frame`` with the watermark on ``ts`` (delay 5 s)."""
    return getattr(frame, "withWatermark" if spark else "with_watermark")("ts", "5 seconds")


def dedup(
    frame: Any, spark: bool, keys: tuple[str, str] = ("k", "ts"), within: bool = False
) -> Any:
    """``frame`` (watermarked) deduplicated on ``keys`` (``within``: within the watermark)."""
    names = (
        ("dropDuplicatesWithinWatermark", "dropDuplicates")
        if spark
        else ("drop_duplicates_within_watermark", "drop_duplicates")
    )
    return getattr(frame, names[0] if within else names[1])(list(keys))


def summed(frame: Any, spark: bool, *keys: Any) -> Any:
    """The middle aggregation: ``v = sum(v)`` per ``keys``."""
    fn, group_by, _ = _api(spark)
    return getattr(frame, group_by)(*keys).agg(fn.sum("v").alias("v"))


def counted(frame: Any, spark: bool, *keys: Any) -> Any:
    """The top aggregation: ``n = count(*)``, ``s = sum(v)`` per ``keys``."""
    fn, group_by, _ = _api(spark)
    one = fn.count(fn.lit(1)) if spark else fn.count()
    return getattr(frame, group_by)(*keys).agg(one.alias("n"), fn.sum("v").alias("s"))


def _renamed_after(frame: Any, spark: bool) -> Any:
    fn, _, _ = _api(spark)
    middle = summed(dedup(marked(frame, spark), spark), spark, "ts", "k")
    return counted(middle.select(fn.col("ts").alias("t"), "v"), spark, "t")


def _alias_in_group_by(frame: Any, spark: bool) -> Any:
    fn, _, _ = _api(spark)
    middle = summed(dedup(marked(frame, spark), spark), spark, fn.col("ts").alias("t"), "k")
    return counted(middle, spark, "t")


def _renamed_before(frame: Any, spark: bool) -> Any:
    fn, _, _ = _api(spark)
    renamed = marked(frame, spark).select(fn.col("ts").alias("t"), "k", "v")
    return counted(summed(dedup(renamed, spark, ("k", "t")), spark, "t", "k"), spark, "t")


def _three(frame: Any, spark: bool) -> Any:
    fn, _, _ = _api(spark)
    bottom = summed(marked(frame, spark), spark, "ts", "k", fn.col("v").alias("w"))
    return counted(summed(bottom, spark, "ts", "k"), spark, "ts")


def _then(window: bool, within: bool = False, deduped: bool = True) -> Shape:
    def build(frame: Any, spark: bool) -> Any:
        below = marked(frame, spark)
        if deduped:
            below = dedup(below, spark, within=within)
        middle = summed(below, spark, "ts", "k")
        return counted(middle, spark, _api(spark)[2]("ts") if window else "ts")

    return Shape(build)


def w(start: int, end: int) -> tuple[int, int]:
    return micros(start), micros(end)


WINDOWED: dict[int, list[Any]] = {
    0: [], 1: [(micros(10), 2, 4)], 2: [], 3: [],
    4: [(micros(90), 4, 316), (micros(100), 1, 200)],
}  # fmt: skip
"""A count per 10 s window of ``ts`` (a window as its start) above the aggregation per
``(ts, k)``."""

SHAPES: dict[str, tuple[Shape, dict[int, list[Any]], list[int]]] = {
    # drop_duplicates: 3, 2, 3, 4, 1; the middle aggregation the same; the top one 0
    "dedup_agg_then_key": (_then(False), AGG_THEN_KEY, [6, 4, 6, 8, 2]),
    # within the watermark a key lives until ts + 5 s <= W: 3, 3, 4, 5, 1
    "dedup_within_agg_then_key": (_then(False, within=True), AGG_THEN_KEY, [6, 5, 7, 9, 2]),
    "dedup_agg_then_window": (_then(True), WINDOWED, [6, 5, 7, 9, 2]),
    "agg_then_window": (_then(True, deduped=False), WINDOWED, [3, 3, 4, 5, 1]),
    "dedup_agg_renamed_then_key": (Shape(_renamed_after), AGG_THEN_KEY, [6, 4, 6, 8, 2]),
    "dedup_alias_agg_then_key": (Shape(_alias_in_group_by), AGG_THEN_KEY, [6, 4, 6, 8, 2]),
    "renamed_dedup_agg_then_key": (Shape(_renamed_before), AGG_THEN_KEY, [6, 4, 6, 8, 2]),
    # the bottom holds 3, 2, 3, 4, 1; the two above it evict what they get at once
    "agg_agg_then_key": (Shape(_three), AGG_THEN_KEY, [3, 2, 3, 4, 1]),
}
CASES: dict[str, Case] = {
    name: Case(shape(True), shape(False), "append", KEY_FILES, expected)
    for name, (shape, expected, _) in SHAPES.items()
}
CONCURRENT = 4


@pytest.fixture(scope="module")
def runs(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> Mapping[str, KeyRun]:
    """Spark's batches and ``numRowsTotal`` (summed over its operators) per case."""
    return key_runs(spark, tmp_path_factory, CASES)


@pytest.mark.parametrize("name", list(CASES))
def test_a_key_carrying_the_watermark_deeper_in_a_chain_as_in_spark(
    name: str, runs: Mapping[str, KeyRun]
) -> None:
    """Spark gives the hand-derived batches and state sizes, then streamkit gives Spark's
    batches, batch by batch."""
    assert_as_in_spark(runs[name], CASES[name], SHAPES[name][2])


# -- above a stream-stream join --------------------------------------------------------
@dataclass(frozen=True)
class JoinKeys:
    """``lk = rk AND rt BETWEEN lt AND lt + 10 s`` (delays 5 s), ``v = sum(rv)`` per
    ``(lt, lk)``, then counted per ``top``: ``"key"`` (``lt``), ``"window"`` (10 s of
    ``lt``) or ``"renamed"`` (``lt`` renamed ``t`` before the middle aggregation and
    ``t`` renamed ``u`` after it, counted per ``u``); ``"dedup_window"``: no middle
    aggregation, ``lt`` renamed ``t``, ``drop_duplicates(["lk", "t"])``, then rows
    counted per 10 s window of ``t``."""

    top: str
    mode: str = "append"

    def _build(self, left: Any, right: Any, spark: bool) -> Any:
        fn, group_by, window = _api(spark)
        if spark:
            cond = fn.expr("lk = rk AND rt >= lt AND rt <= lt + interval 10 seconds")
            lw, rw = left.withWatermark("lt", "5 seconds"), right.withWatermark("rt", "5 seconds")
        else:
            col = fn.col
            cond = (
                (col("lk") == col("rk"))
                & (col("rt") >= col("lt"))
                & (col("rt") <= col("lt") + timedelta(seconds=10))
            )
            lw = left.with_watermark("lt", "5 seconds")
            rw = right.with_watermark("rt", "5 seconds")
        joined, time = lw.join(rw, cond), "lt"
        if self.top == "dedup_window":  # lt renamed t, deduplicated on (lk, t), windowed
            renamed = joined.select(fn.col("lt").alias("t"), "lk", "rv")
            deduped = getattr(renamed, "dropDuplicates" if spark else "drop_duplicates")
            one = fn.count(fn.lit(1)) if spark else fn.count()
            return getattr(deduped(["lk", "t"]), group_by)(window("t")).agg(one.alias("n"))
        if self.top == "renamed":
            joined, time = joined.select(fn.col("lt").alias("t"), "lk", "rv"), "t"
        middle = getattr(joined, group_by)(time, "lk").agg(fn.sum("rv").alias("v"))
        if self.top == "renamed":
            middle, time = middle.select(fn.col("t").alias("u"), "v"), "u"
        return counted(middle, spark, window(time) if self.top == "window" else time)

    def spark(self, left: Any, right: Any) -> Any:
        return self._build(left, right, True)

    def streamkit(self, left: Any, right: Any) -> Any:
        return self._build(left, right, False)


_BY_LT = [
    (0, []), (1, []),
    (2, [(micros(100), 1, 22), (micros(101), 1, 22), (micros(103), 1, 22)]),
    (3, []), (4, [(micros(130), 1, 24), (micros(135), 1, 13)]),
]  # fmt: skip
_BY_WINDOW = [
    (0, []), (1, []), (2, [(*w(100, 110), 3, 66)]), (3, []), (4, [(*w(130, 140), 2, 37)]),
]  # fmt: skip
_DEDUPED = [(0, []), (1, []), (2, [(*w(100, 110), 3)]), (3, []), (4, [(*w(130, 140), 2)])]
JOIN_CASES: dict[str, JoinCase[JoinKeys]] = {
    "join_agg_then_key": JoinCase(
        JoinKeys("key"), HAND_PROBE.left, HAND_PROBE.right, _BY_LT, [5, 8, 6, 9, 3]
    ),
    "join_agg_renamed_then_key": JoinCase(
        JoinKeys("renamed"), HAND_PROBE.left, HAND_PROBE.right, _BY_LT, [5, 8, 6, 9, 3]
    ),
    "join_agg_then_window": JoinCase(
        JoinKeys("window"), HAND_PROBE.left, HAND_PROBE.right, _BY_WINDOW, [5, 8, 6, 9, 3]
    ),
    # pairs by lt: 100, 103 (B0), 130 (B1), 101 twice, 100, 103, 130 again and 135 (B2):
    # the repeats are dropped; [100, 110) (100, 101, 103) closes in B2, [130, 140) in B4.
    # Held: join buffers 3, 5, 4, 6, 2; dedup keys 2, 3, 2 (100, 101, 103 expire at O
    # 114.999), 3 (+200), 1; windows 1, 2, 1, 2, 1
    "join_renamed_dedup_then_window": JoinCase(
        JoinKeys("dedup_window"), HAND_PROBE.left, HAND_PROBE.right, _DEDUPED, [6, 10, 7, 11, 4]
    ),
}


@pytest.fixture(scope="module")
def join_runs(
    spark: Any, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> dict[str, Any]:
    """The selected join cases' directories and Spark's batches and state sizes."""
    return join_spark_runs(spark, request, tmp_path_factory, JOIN_CASES, SparkRun.result)


@pytest.mark.parametrize("name", list(JOIN_CASES))
def test_above_a_join_a_key_carrying_the_watermark_passes_it_on_as_in_spark(
    name: str, join_runs: dict[str, Any]
) -> None:
    case = JOIN_CASES[name]
    directory, (theirs, their_states) = join_runs[name]
    assert theirs == case.expected, "Spark disagrees with the hand derivation"
    assert their_states == case.states, "Spark's state sizes disagree with the derivation"
    ours, our_states = run_streamkit(case.op, directory)
    assert ours == theirs
    assert our_states == their_states, "rows held by the join and the aggregations differ"


# -- above transform_with_state_in_pandas ----------------------------------------------
@dataclass(frozen=True)
class StampKeys(Chain):
    """``Stamp`` then ``then`` (``key``: per ``(at, k)``; ``rename_key``: per ``(t, k)``,
    ``t`` a rename of ``at``) as in :mod:`tests.differential.test_transform_chains`, then
    per that key: ``count(*)`` and the sum of the counts below."""

    def build(self, frame: Any, spark: bool) -> Any:
        fn, group_by, _ = _api(spark)
        middle = Chain("stamp", self.mode, then=self.then).build(frame, spark)
        key = "at" if self.then == "key" else "t"
        one = fn.count(fn.lit(1)) if spark else fn.count()
        return getattr(middle, group_by)(key).agg(one.alias("n"), fn.sum("n").alias("s"))


def _t(second: int) -> int:
    return micros(second)


_STAMPED = [
    (0, []), (1, []), (2, [(_t(0), 1, 1), (_t(1), 1, 1), (_t(3), 1, 1)]), (3, [(_t(12), 1, 1)]),
    (4, [(_t(25), 1, 1), (_t(35), 1, 1)]),
]  # fmt: skip
"""Each group the middle aggregation emits (one row each: n 1) is counted and evicted."""
STAMP_CASES: dict[str, ChainCase] = {
    f"stamp_{then}_then_key": ChainCase(
        StampKeys("stamp", "append", then=then), HAND, _STAMPED, [2, 3, 2, 2, 1]
    )
    for then in ("key", "rename_key")
}


@pytest.fixture(scope="module")
def stamp_runs(rocksdb: Any, tmp_path_factory: pytest.TempPathFactory) -> Mapping[str, Any]:
    return chain_outcomes(rocksdb, STAMP_CASES, tmp_path_factory)


@pytest.mark.parametrize("name", list(STAMP_CASES))
def test_above_a_processor_a_key_carrying_its_event_time_passes_it_on_as_in_spark(
    name: str, stamp_runs: Mapping[str, Any]
) -> None:
    check_against_spark(STAMP_CASES[name], stamp_runs[name])


# -- what Spark refuses ----------------------------------------------------------------
def _top_by(shape: str) -> Shape:
    def build(frame: Any, spark: bool) -> Any:
        fn, _, _ = _api(spark)
        middle = summed(dedup(marked(frame, spark), spark), spark, "ts", "k")
        if shape == "computed":
            later = fn.expr("interval 1 second") if spark else timedelta(seconds=1)
            return counted(middle.select((fn.col("ts") + later).alias("t"), "v"), spark, "t")
        if shape == "k":
            return counted(middle, spark, "k")
        return counted(middle.select("ts", fn.col("ts").alias("t"), "v"), spark, "ts", "t")

    return Shape(build)


REFUSED: dict[str, tuple[Shape, str, str]] = {
    "computed_key": (_top_by("computed"), "without watermark", "without watermark"),
    "by_k_only": (_top_by("k"), "without watermark", "without watermark"),
    "two_keys": (_top_by("two"), "MULTIPLE_EVENT_TIME_COLUMNS", "MULTIPLE_EVENT_TIME_COLUMNS"),
}


def _start_and_wait(writer: Any) -> None:
    """Start Spark's query and wait for it to end (a failed batch raises)."""
    writer.start().awaitTermination(DEADLINE)


@pytest.mark.parametrize("name", list(REFUSED))
def test_what_spark_refuses_above_a_deeper_key_is_refused(
    name: str, spark: Any, tmp_path: Path
) -> None:
    """Spark refuses at start (``AnalysisException``) or fails the first batch
    (``StreamingQueryException``) with its reason; streamkit refuses at start with it."""
    from pyspark.errors import AnalysisException, StreamingQueryException

    import streamkit as sk
    from streamkit.errors import PlanError
    from tests.differential.inputs import SCHEMA

    shape, theirs, ours = REFUSED[name]
    directory = write_files(tmp_path / "in", KEY_FILES, "json")
    with tempfile.TemporaryDirectory(prefix="spark-ck-") as ck:
        stream = spark.readStream.schema(SPARK_SCHEMA).json(str(directory))
        writer = (
            shape(True)(stream).writeStream.outputMode("append").trigger(availableNow=True)
            .option("checkpointLocation", ck).foreachBatch(lambda b, i: b.collect())
        )  # fmt: skip
        with pytest.raises((AnalysisException, StreamingQueryException), match=theirs):
            _start_and_wait(writer)
    source = sk.read_stream.files(str(directory), "json", SCHEMA)
    with pytest.raises(PlanError, match=ours):
        shape(False)(source).write_stream.output_mode("append").foreach_batch(
            lambda f, i: None
        ).start()
