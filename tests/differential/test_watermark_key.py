"""Grouping by the watermarked column (or a plain rename of it) without a window, against
PySpark 4.3 (issue 18). Spark's ``WatermarkSupport.watermarkExpression`` on the first
grouping key carrying the watermark metadata: ``key <= watermark``.

Observed in Spark and expected here (times in seconds after 2024-01-01; delay 5 s; batch n
evicts with W(n-1) and drops rows whose key is at or before W(n-2); the last batch is the
no-data batch owed when W moved):

- B0: W = 95. B1 (in force 95): the groups at 10, 12, 90 and 95 (95 <= 95) leave (append
  emits them), 96 stays. B2: 15 and 95 are late (``numRowsDroppedByWatermark`` 2), 96 is
  kept. B3: 200, W = 195. B4 (no data, in force 195): 96, 96, 100 leave;
- ``numRowsTotal`` per batch: 3, 2, 3, 4, 1 in update and append mode;
- the key may be ts itself, a rename of it with ts dropped or an alias in ``group_by``;
  above ``drop_duplicates(["k", "ts"])`` the aggregation evicts by ts the same way (the
  deduplication drops 15 and 95 as late; each operator holds 3, 2, 3, 4, 1 rows);
- an aggregation by ``ts`` above one by ``(ts, k)`` (append): the group key keeps the
  watermark (an aggregate named ``ts`` would not), the first emits a group once
  ``ts <= W`` in force and the second evicts it in the same batch (it holds 0 rows); the
  same with that key renamed between them (``select(col("ts").alias("t"), ...)``) or
  aliased in the first's ``group_by`` (``col("ts").alias("t")``), the second grouped by
  ``t``;
- a null key is never late and never leaves (append never emits it);
- complete mode never evicts nor drops a late row, and runs no no-data batch;
- two group keys carrying the watermark (``t`` a copy of ``ts``, or a window on ``ts``
  beside ``ts``) fail the first batch in append and update mode
  (``MULTIPLE_EVENT_TIME_COLUMNS``; Spark ran both in complete mode when probed):
  streamkit refuses them at start.

The same shapes are run server-free with the same values in
tests/streamkit/streaming/test_watermark_key.py.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.differential.engines import DEADLINE
from tests.differential.inputs import SPARK_SCHEMA, Files, micros, write_files
from tests.differential.lazy_runs import LazyRuns
from tests.differential.test_joins_static import Batches
from tests.differential.test_watermark_lineage import Case, spark_start, streamkit_run

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.slow]

KEY_FILES: Files = [
    [(10, "a", 1, 1), (100, "z", 200, 2), (90, "q", 300, 6)],  # W = 95
    [(12, "a", 3, 3), (95, "e", 4, 4), (96, "e", 5, 5)],  # 95 <= 95 leaves
    [(15, "a", 5, 5), (95, "f", 6, 6), (96, "f", 7, 7)],  # 15 and 95 late
    [(200, "a", 7, 7)],  # W = 195: a no-data batch 4
]

NULL_FILES: Files = [
    KEY_FILES[0],
    [*KEY_FILES[1], (None, "n", 9, 9)],  # a null key: never late, never leaves
    [*KEY_FILES[2], (None, "n", 1, 1)],
    KEY_FILES[3],
]

Out = tuple[Any, ...]
Expected = dict[int, list[Out]]


def g(t: int, k: str, n: int, s: int) -> Out:
    return (micros(t), k, n, s)


KEYED: dict[str, Expected] = {
    "update": {
        0: [g(10, "a", 1, 1), g(90, "q", 1, 300), g(100, "z", 1, 200)],
        1: [g(12, "a", 1, 3), g(95, "e", 1, 4), g(96, "e", 1, 5)],
        2: [g(96, "f", 1, 7)],
        3: [g(200, "a", 1, 7)],
        4: [],
    },
    "append": {
        0: [],
        1: [g(10, "a", 1, 1), g(12, "a", 1, 3), g(90, "q", 1, 300), g(95, "e", 1, 4)],
        2: [],
        3: [],
        4: [g(96, "e", 1, 5), g(96, "f", 1, 7), g(100, "z", 1, 200)],
    },
}
STATE = {"update": [3, 2, 3, 4, 1], "append": [3, 2, 3, 4, 1], "complete": [3, 6, 9, 10]}
"""Spark's ``numRowsTotal`` after each batch (of each stateful operator)."""
NULL_KEYED: dict[str, Expected] = {
    "update": {
        **KEYED["update"],
        1: [*KEYED["update"][1], (None, "n", 1, 9)],
        2: [*KEYED["update"][2], (None, "n", 2, 10)],
    },
    "append": KEYED["append"],
}
STATE_OF = {
    "null_key": [3, 3, 4, 5, 2],  # the null key's group stays held
    "above_drop_duplicates": [6, 4, 6, 8, 2],  # each operator holds 3, 2, 3, 4, 1
    "agg_then_key": [3, 2, 3, 4, 1],  # the second aggregation holds 0 rows
    "agg_then_renamed_key": [3, 2, 3, 4, 1],
    "alias_agg_then_key": [3, 2, 3, 4, 1],
}
"""Spark's ``numRowsTotal`` summed over its stateful operators, where not STATE."""
_ALL = [
    g(10, "a", 1, 1), g(12, "a", 1, 3), g(15, "a", 1, 5), g(90, "q", 1, 300),
    g(95, "e", 1, 4), g(95, "f", 1, 6), g(96, "e", 1, 5), g(96, "f", 1, 7),
    g(100, "z", 1, 200),
]  # fmt: skip
COMPLETE: Expected = {
    0: [g(10, "a", 1, 1), g(90, "q", 1, 300), g(100, "z", 1, 200)],
    1: [g(10, "a", 1, 1), g(12, "a", 1, 3), g(90, "q", 1, 300), g(95, "e", 1, 4),
        g(96, "e", 1, 5), g(100, "z", 1, 200)],
    2: _ALL,
    3: [*_ALL, g(200, "a", 1, 7)],
}  # fmt: skip
AGG_THEN_KEY: Expected = {
    0: [], 1: [(micros(10), 1, 1), (micros(12), 1, 3), (micros(90), 1, 300), (micros(95), 1, 4)],
    2: [], 3: [], 4: [(micros(96), 2, 12), (micros(100), 1, 200)],
}  # fmt: skip
"""A count per ``ts`` above a count per ``(ts, k)``: the first emits a group once ``ts``
is at or before W in force, the second evicts it at once."""


def _f() -> Any:
    from pyspark.sql import functions as F

    return F


def _sk() -> Any:
    import streamkit as sk

    return sk


def s_agg(frame: Any, *keys: Any) -> Any:
    F = _f()
    grouped = frame.withWatermark("ts", "5 seconds").groupBy(*keys)
    return grouped.agg(F.count(F.lit(1)).alias("n"), F.sum("v").alias("s"))


def k_agg(frame: Any, *keys: Any) -> Any:
    sk = _sk()
    grouped = frame.with_watermark("ts", "5 seconds").group_by(*keys)
    return grouped.agg(sk.count().alias("n"), sk.sum("v").alias("s"))


def s_renamed(stream: Any) -> Any:
    return stream.withWatermark("ts", "5 seconds").select(_f().col("ts").alias("t"), "k", "v")


def k_renamed(stream: Any) -> Any:
    return stream.with_watermark("ts", "5 seconds").select(_sk().col("ts").alias("t"), "k", "v")


def s_count(frame: Any, *keys: Any) -> Any:
    F = _f()
    return frame.groupBy(*keys).agg(F.count(F.lit(1)).alias("n"), F.sum("v").alias("s"))


def k_count(frame: Any, *keys: Any) -> Any:
    sk = _sk()
    return frame.group_by(*keys).agg(sk.count().alias("n"), sk.sum("v").alias("s"))


CASES: dict[str, Case] = {
    **{
        f"ts_k-{mode}": Case(
            lambda s: s_agg(s, "ts", "k"), lambda s: k_agg(s, "ts", "k"), mode, KEY_FILES,
            KEYED[mode],
        )
        for mode in ("update", "append")
    },
    **{
        f"rename_ts_dropped-{mode}": Case(
            lambda s: s_count(s_renamed(s), "t", "k"), lambda s: k_count(k_renamed(s), "t", "k"),
            mode, KEY_FILES, KEYED[mode],
        )
        for mode in ("update", "append")
    },
    "alias_in_group_by-append": Case(
        lambda s: s_agg(s, _f().col("ts").alias("t"), "k"),
        lambda s: k_agg(s, _sk().col("ts").alias("t"), "k"),
        "append", KEY_FILES, KEYED["append"],
    ),
    **{
        f"above_drop_duplicates-{mode}": Case(
            lambda s: s_count(
                s.withWatermark("ts", "5 seconds").dropDuplicates(["k", "ts"]), "ts", "k"
            ),
            lambda s: k_count(
                s.with_watermark("ts", "5 seconds").drop_duplicates(["k", "ts"]), "ts", "k"
            ),
            mode, KEY_FILES, KEYED[mode],
        )
        for mode in ("update", "append")
    },
    **{
        f"null_key-{mode}": Case(
            lambda s: s_agg(s, "ts", "k"), lambda s: k_agg(s, "ts", "k"), mode, NULL_FILES,
            NULL_KEYED[mode],
        )
        for mode in ("update", "append")
    },
    # the first emits (ts, k) once ts <= W in force; the second evicts it at once
    "agg_then_key-append": Case(
        lambda s: s_count(s_agg(s, "ts", "k").select("ts", "k", _f().col("s").alias("v")), "ts"),
        lambda s: k_count(k_agg(s, "ts", "k").select("ts", "k", _sk().col("s").alias("v")), "ts"),
        "append", KEY_FILES, AGG_THEN_KEY,
    ),
    # the same with the first's key renamed after it, or aliased in its group_by: the
    # rename keeps the watermark, and the second evicts by it the same way
    "agg_then_renamed_key-append": Case(
        lambda s: s_count(s_agg(s, "ts", "k").select(_f().col("ts").alias("t"), "k",
                                                    _f().col("s").alias("v")), "t"),
        lambda s: k_count(k_agg(s, "ts", "k").select(_sk().col("ts").alias("t"), "k",
                                                    _sk().col("s").alias("v")), "t"),
        "append", KEY_FILES, AGG_THEN_KEY,
    ),
    "alias_agg_then_key-append": Case(
        lambda s: s_count(s_agg(s, _f().col("ts").alias("t"), "k")
                          .select("t", "k", _f().col("s").alias("v")), "t"),
        lambda s: k_count(k_agg(s, _sk().col("ts").alias("t"), "k")
                          .select("t", "k", _sk().col("s").alias("v")), "t"),
        "append", KEY_FILES, AGG_THEN_KEY,
    ),
    "ts_k-complete": Case(
        lambda s: s_agg(s, "ts", "k"), lambda s: k_agg(s, "ts", "k"), "complete", KEY_FILES,
        COMPLETE,
    ),
}  # fmt: skip

CONCURRENT = 4


@dataclass(frozen=True)
class SparkRun:
    """A case's input directory, Spark's batches and its ``numRowsTotal`` per batch."""

    directory: Path
    batches: Batches
    state: list[int]


@pytest.fixture(scope="module")
def runs(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> Mapping[str, SparkRun]:
    return key_runs(spark, tmp_path_factory, CASES)


def key_runs(
    spark: Any, tmp_path_factory: pytest.TempPathFactory, cases: Mapping[str, Case]
) -> Mapping[str, SparkRun]:
    """Spark's batches and ``numRowsTotal`` (summed over its operators) per case of
    ``cases``, run a few at a time when first asked for."""
    dirs = {n: write_files(tmp_path_factory.mktemp(n), c.files, "json") for n, c in cases.items()}

    def chunk(names: list[str]) -> dict[str, SparkRun]:
        started = {n: spark_start(spark, cases[n], dirs[n]) for n in names}
        out = {}
        for n, (handle, seen, ck) in started.items():
            try:
                assert handle.awaitTermination(DEADLINE), f"Spark did not finish {n}"
                assert handle.exception() is None, str(handle.exception())
            finally:
                ck.cleanup()
            progress = sorted(handle.recentProgress, key=lambda p: p["batchId"])
            state = [sum(o["numRowsTotal"] for o in p["stateOperators"]) for p in progress]
            out[n] = SparkRun(dirs[n], sorted(seen, key=lambda b: b[0]), state)
        return out

    return LazyRuns(list(dirs), chunk, CONCURRENT)


def assert_as_in_spark(run: SparkRun, case: Case, state: list[int]) -> None:
    """Spark gives the hand-derived batches and state sizes ``state``, then streamkit
    gives Spark's batches, batch by batch."""
    assert dict(run.batches) == case.expected, "Spark disagrees with the derivation"
    assert run.state == state, "Spark's numRowsTotal disagrees"
    ours = streamkit_run(case, run.directory)
    assert [b for b, _ in ours] == [b for b, _ in run.batches], "batch ids differ"
    for (bid, rows), (_, their_rows) in zip(ours, run.batches, strict=True):
        assert rows == their_rows, f"batch {bid}: streamkit {rows} vs Spark {their_rows}"


@pytest.mark.parametrize("name", list(CASES))
def test_groups_by_the_watermarked_key_leave_as_in_spark(
    name: str, runs: Mapping[str, SparkRun]
) -> None:
    """Spark gives the hand-derived batches and state sizes, then streamkit gives Spark's
    batches, batch by batch."""
    case: Case = CASES[name]
    state = STATE_OF.get(name.split("-", maxsplit=1)[0], STATE[case.mode])
    assert_as_in_spark(runs[name], case, state)


SEVERAL: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    "two_keys": (
        lambda s: s_count(
            s.withWatermark("ts", "5 seconds").withColumn("t", _f().col("ts")), "k", "t", "ts"
        ),
        lambda s: k_count(
            s.with_watermark("ts", "5 seconds").with_column("t", _sk().col("ts")), "k", "t", "ts"
        ),
    ),
    "window_and_key": (
        lambda s: s_agg(s, _f().window("ts", "10 seconds"), "ts", "k"),
        lambda s: k_agg(s, _sk().window("ts", "10 seconds"), "ts", "k"),
    ),
}


@pytest.mark.parametrize("mode", ["update", "append"])
@pytest.mark.parametrize("name", list(SEVERAL))
def test_several_keys_carrying_the_watermark_fail_in_spark_and_are_refused(
    name: str, mode: str, spark: Any, tmp_path: Path
) -> None:
    from pyspark.errors import StreamingQueryException

    import streamkit as sk
    from streamkit.errors import PlanError
    from tests.differential.inputs import SCHEMA

    directory = write_files(tmp_path / "in", KEY_FILES, "json")
    theirs, ours = SEVERAL[name]
    with tempfile.TemporaryDirectory(prefix="spark-ck-") as ck:
        stream = spark.readStream.schema(SPARK_SCHEMA).json(str(directory))
        handle = (
            theirs(stream).writeStream.outputMode(mode).trigger(availableNow=True)
            .option("checkpointLocation", ck).foreachBatch(lambda b, i: b.collect()).start()
        )  # fmt: skip
        with pytest.raises(StreamingQueryException, match="MULTIPLE_EVENT_TIME_COLUMNS"):
            handle.awaitTermination(DEADLINE)
    source = sk.read_stream.files(str(directory), "json", SCHEMA)
    with pytest.raises(PlanError, match="MULTIPLE_EVENT_TIME_COLUMNS"):
        ours(source).write_stream.output_mode(mode).foreach_batch(lambda f, i: None).start()
