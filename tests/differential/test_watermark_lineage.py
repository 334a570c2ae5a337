"""The watermark column renamed or computed BETWEEN ``with_watermark`` and the stateful
operator, against PySpark 4.3 (issue 18). Spark carries the watermark in the column's
metadata: a plain alias of the column keeps it, a window on such a column gets it, a
column computed from it (``ts + interval``) or a window on an expression has none.

Observed in Spark and expected here (times in seconds after 2024-01-01; delay 5 s;
10-second windows; batch n evicts with W(n-1) and drops rows whose window ended at or
before W(n-2); the last batch is the no-data batch owed when W moved):

- renamed (``select(ts AS t)``, ``with_column("t", ts)`` with ts kept): evicts and drops
  late rows as on ts itself (``RENAMED``: 15 s is late in batch 2);
- computed (``t = ts + 7 s``, a window on ``ts + 7 s``, a copy made BELOW the watermark):
  append is refused (``STREAMING_OUTPUT_MODE.UNSUPPORTED_OPERATION``: no watermark);
  update runs, never evicts, drops nothing, and still runs the no-data batch 4
  (``COMPUTED``);
- session windows on a renamed column: as on ts;
- ``drop_duplicates`` judges late rows on the input column carrying the watermark (after
  column pruning) and expires keys only by a key carrying it; with ts and a copy of it
  both reaching it Spark fails the batch (``MULTIPLE_EVENT_TIME_COLUMNS``);
- a chain (dedup then window) follows a rename before the dedup or a copy after it; with
  ts and a copy both reaching the dedup, Spark prunes the one the window does not read;
- ``drop_duplicates(["k"])`` under a stream-static join: ts is pruned (d@11 in batch 2 is
  not late) unless the join's keys or condition, a filter or the output read it; chains
  with the join between the dedup and the window, or above the window, run as without it;
- complete mode with a window on a computed column (or a copy made below the watermark):
  every window every batch, 15 s counted, no no-data batch.

The same shapes are run server-free with the same hand-derived values (and state sizes
equal to Spark's ``numRowsTotal``) in tests/streamkit/streaming/test_watermark_above.py.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from streamkit.errors import PlanError
from tests.differential.engines import DEADLINE
from tests.differential.inputs import SCHEMA, SPARK_SCHEMA, Files, micros, write_files
from tests.differential.lazy_runs import LazyRuns
from tests.differential.spark_functions import RowsPerKey, rows_per_key
from tests.differential.test_joins_static import Batches, spark_out, streamkit_out

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.slow]

AGG_FILES: Files = [
    [(10, "a", 1, 1), (100, "z", 200, 2), (90, "q", 300, 6)],  # W = 95
    [(12, "a", 3, 3), (30, "a", 4, 4)],
    [(15, "a", 5, 5)],  # late when the window carries the watermark
    [(200, "a", 7, 7)],  # W = 195: a no-data batch 4
]
DEDUP_FILES: Files = [
    [(10, "a", 1, 1), (10, "a", 2, 2), (30, "b", 3, 3)],  # W = 25
    [(10, "a", 4, 4), (30, "b", 6, 6), (12, "c", 8, 8)],
    [(10, "a", 5, 5), (11, "d", 9, 9)],  # late when t carries the watermark
    [(200, "e", 7, 7)],
]
SESSION_FILES: Files = [
    [(10, "a", 1, 1), (13, "a", 2, 2), (40, "b", 3, 3)],  # W = 35
    [(12, "a", 4, 4), (41, "b", 5, 5)],  # W = 36: [10,18) closes
    [(16, "a", 6, 6), (100, "c", 1, 1)],  # a@16's own [16,21) ended: late; W = 95
]

Out = tuple[Any, ...]
Expected = dict[int, list[Out]]


def w(start: int, k: str, n: int, s: int) -> Out:
    return (micros(start), k, n, s)


RENAMED: dict[str, Expected] = {
    "update": {
        0: [w(10, "a", 1, 1), w(90, "q", 1, 300), w(100, "z", 1, 200)],
        1: [w(10, "a", 2, 4), w(30, "a", 1, 4)],
        2: [],
        3: [w(200, "a", 1, 7)],
        4: [],
    },
    "append": {
        0: [],
        1: [w(10, "a", 2, 4), w(30, "a", 1, 4)],
        2: [],
        3: [],
        4: [w(90, "q", 1, 300), w(100, "z", 1, 200)],
    },
}
COMPUTED: Expected = {  # t = ts + 7: 17, 97, 107 | 19, 37 | 22 | 207
    0: [w(10, "a", 1, 1), w(90, "q", 1, 300), w(100, "z", 1, 200)],
    1: [w(10, "a", 2, 4), w(30, "a", 1, 4)],
    2: [w(20, "a", 1, 5)],
    3: [w(200, "a", 1, 7)],
    4: [],
}
COPY_BELOW: Expected = {**COMPUTED, 2: [w(10, "a", 3, 9)]}  # t = ts, nothing late
_QZ = [w(90, "q", 1, 300), w(100, "z", 1, 200)]
COMPUTED_COMPLETE: Expected = {  # every window every batch; no no-data batch in complete mode
    0: [w(10, "a", 1, 1), *_QZ],
    1: [w(10, "a", 2, 4), w(30, "a", 1, 4), *_QZ],
    2: [w(10, "a", 2, 4), w(20, "a", 1, 5), w(30, "a", 1, 4), *_QZ],
    3: [w(10, "a", 2, 4), w(20, "a", 1, 5), w(30, "a", 1, 4), *_QZ, w(200, "a", 1, 7)],
}
COPY_BELOW_COMPLETE: Expected = {  # 15 counts in [10,20): nothing is late
    **COMPUTED_COMPLETE,
    2: [w(10, "a", 3, 9), w(30, "a", 1, 4), *_QZ],
    3: [w(10, "a", 3, 9), w(30, "a", 1, 4), *_QZ, w(200, "a", 1, 7)],
}


def d(t: int, k: str, v: int, *rest: int) -> Out:
    return (micros(t), k, v, *rest)


DEDUPED: Expected = {  # keys (k, t): (a,10), (b,30) | (c,12) | both late | (e,200) | -
    0: [d(10, "a", 1), d(30, "b", 3)],
    1: [d(12, "c", 8)],
    2: [],
    3: [d(200, "e", 7)],
    4: [],
}
NAMES = {"a": "alpha", "b": "beta", "c": "gamma", "d": "delta", "e": "eps", "q": "qoph",
         "z": "zeta"}  # fmt: skip
"""The static side of the stream-static joins: one row per stream key (and ``since``, the
epoch, before every event time)."""


def joined(late: bool, *columns: str) -> Expected:
    """DEDUP_FILES through ``drop_duplicates(["k"])`` and a join with the static side, as
    ``columns`` of (k, v, name, since): d@11 comes out in batch 2 unless ``late``."""
    values = {"a": ("a", 1), "b": ("b", 3), "c": ("c", 8), "d": ("d", 9), "e": ("e", 7)}

    def rows(*keys: str) -> list[Out]:
        full = [{"k": k, "v": values[k][1], "name": NAMES[k], "since": 0} for k in keys]
        return sorted(tuple(r[c] for c in columns) for r in full)

    return {0: rows("a", "b"), 1: rows("c"), 2: [] if late else rows("d"), 3: rows("e"), 4: []}


def _f() -> Any:
    from pyspark.sql import functions as F

    return F


def _sk() -> Any:
    import streamkit as sk

    return sk


def s_win(frame: Any, column: Any) -> Any:
    F = _f()
    return frame.groupBy(F.window(column, "10 seconds").alias("window"), "k").agg(
        F.count(F.lit(1)).alias("n"), F.sum("v").alias("s")
    )


def k_win(frame: Any, column: Any) -> Any:
    sk = _sk()
    return frame.group_by(sk.window(column, "10 seconds"), "k").agg(
        sk.count().alias("n"), sk.sum("v").alias("s")
    )


def s_wm(stream: Any) -> Any:
    return stream.withWatermark("ts", "5 seconds")


def k_wm(stream: Any) -> Any:
    return stream.with_watermark("ts", "5 seconds")


def s_t7() -> Any:
    return _f().col("ts") + _f().expr("INTERVAL 7 SECONDS")


def k_t7() -> Any:
    from datetime import timedelta

    return _sk().col("ts") + timedelta(seconds=7)


def s_static(stream: Any) -> Any:
    rows = list(NAMES.items())
    frame = stream.sparkSession.createDataFrame(rows, "k string, name string")
    return frame.selectExpr("k", "name", "timestamp_seconds(0) AS since")


def k_static() -> Any:
    import pyarrow as pa

    return _sk().from_arrow(
        pa.table({
            "k": list(NAMES), "name": list(NAMES.values()),
            "since": pa.array([0] * len(NAMES), pa.timestamp("us", "UTC")),
        })
    )  # fmt: skip


def s_alias(stream: Any) -> Any:
    return s_wm(stream).select(_f().col("ts").alias("t"), "k", "v")


def k_alias(stream: Any) -> Any:
    return k_wm(stream).select(_sk().col("ts").alias("t"), "k", "v")


@dataclass(frozen=True)
class Case:
    """One query for both engines, its mode, input and the batches Spark gives."""

    spark: Callable[[Any], Any]
    streamkit: Callable[[Any], Any]
    mode: str
    files: Files
    expected: Expected


CASES: dict[str, Case] = {
    **{
        f"window_on_select_alias-{mode}": Case(
            lambda s: s_win(s_alias(s), "t"), lambda s: k_win(k_alias(s), "t"),
            mode, AGG_FILES, RENAMED[mode],
        )
        for mode in ("update", "append")
    },
    **{
        f"window_on_copy_original_kept-{mode}": Case(
            lambda s: s_win(s_wm(s).withColumn("t", _f().col("ts")), "t"),
            lambda s: k_win(k_wm(s).with_column("t", _sk().col("ts")), "t"),
            mode, AGG_FILES, RENAMED[mode],
        )
        for mode in ("update", "append")
    },
    "window_on_computed-update": Case(
        lambda s: s_win(s_wm(s).withColumn("t", s_t7()), "t"),
        lambda s: k_win(k_wm(s).with_column("t", k_t7()), "t"),
        "update", AGG_FILES, COMPUTED,
    ),
    "window_on_an_expression-update": Case(
        lambda s: s_win(s_wm(s), s_t7()), lambda s: k_win(k_wm(s), k_t7()),
        "update", AGG_FILES, COMPUTED,
    ),
    "window_on_a_copy_made_below_the_watermark-update": Case(
        lambda s: s_win(s_wm(s.withColumn("t", _f().col("ts"))), "t"),
        lambda s: k_win(k_wm(s.with_column("t", _sk().col("ts"))), "t"),
        "update", AGG_FILES, COPY_BELOW,
    ),
    "session_on_select_alias-append": Case(
        lambda s: s_alias(s).groupBy(
            _f().session_window("t", "5 seconds").alias("window"), "k"
        ).agg(_f().count(_f().lit(1)).alias("n"), _f().sum("v").alias("s")),
        lambda s: k_alias(s).group_by(_sk().session_window("t", "5 seconds"), "k").agg(
            _sk().count().alias("n"), _sk().sum("v").alias("s")
        ),
        "append", SESSION_FILES,
        {0: [], 1: [w(10, "a", 3, 7)], 2: [], 3: [w(40, "b", 2, 8)]},
    ),
    "dedup_k_t_on_select_alias-append": Case(
        lambda s: s_alias(s).dropDuplicates(["k", "t"]),
        lambda s: k_alias(s).drop_duplicates(["k", "t"]),
        "append", DEDUP_FILES, DEDUPED,
    ),
    "dedup_within_watermark_on_select_alias-append": Case(
        lambda s: s_alias(s).dropDuplicatesWithinWatermark(["k"]),
        lambda s: k_alias(s).drop_duplicates_within_watermark(["k"]),
        "append", DEDUP_FILES, DEDUPED,
    ),
    "dedup_k_computed_t_ts_kept-append": Case(  # late on ts, no key expires
        lambda s: s_wm(s).withColumn("t", s_t7()).dropDuplicates(["k", "t"]),
        lambda s: k_wm(s).with_column("t", k_t7()).drop_duplicates(["k", "t"]),
        "append", DEDUP_FILES,
        {
            0: [d(10, "a", 1, 1, micros(17)), d(30, "b", 3, 3, micros(37))],
            1: [d(12, "c", 8, 8, micros(19))],
            2: [],
            3: [d(200, "e", 7, 7, micros(207))],
            4: [],
        },
    ),
    "dedup_k_t_computed_ts_dropped-append": Case(  # nothing carries the watermark
        lambda s: s_wm(s).select(s_t7().alias("t"), "k", "v").dropDuplicates(["k", "t"]),
        lambda s: k_wm(s).select(k_t7().alias("t"), "k", "v").drop_duplicates(["k", "t"]),
        "append", DEDUP_FILES,
        {0: [d(17, "a", 1), d(37, "b", 3)], 1: [d(19, "c", 8)], 2: [d(18, "d", 9)],
         3: [d(207, "e", 7)], 4: []},
    ),
    "dedup_k_renamed_t_pruned-append": Case(  # t read by no key nor above: pruned
        lambda s: s_alias(s).dropDuplicates(["k"]).select("k", "v"),
        lambda s: k_alias(s).drop_duplicates(["k"]).select("k", "v"),
        "append", DEDUP_FILES,
        {0: [("a", 1), ("b", 3)], 1: [("c", 8)], 2: [("d", 9)], 3: [("e", 7)], 4: []},
    ),
    **{
        f"chain_rename_then_dedup_then_window-{mode}": Case(
            lambda s: s_win(s_alias(s).dropDuplicates(["k", "t"]), "t"),
            lambda s: k_win(k_alias(s).drop_duplicates(["k", "t"]), "t"),
            mode, AGG_FILES, RENAMED[mode],
        )
        for mode in ("update", "append")
    },
    **{
        f"chain_dedup_then_copy_then_window-{mode}": Case(
            lambda s: s_win(
                s_wm(s).dropDuplicates(["k", "ts"]).withColumn("t", _f().col("ts")), "t"
            ),
            lambda s: k_win(
                k_wm(s).drop_duplicates(["k", "ts"]).with_column("t", _sk().col("ts")), "t"
            ),
            mode, AGG_FILES, RENAMED[mode],
        )
        for mode in ("update", "append")
    },
    # ts and its copy t both reach the dedup; the window reads t only, so Spark prunes ts
    "chain_copy_then_dedup_then_window-append": Case(
        lambda s: s_win(s_wm(s).withColumn("t", _f().col("ts")).dropDuplicates(["k", "t"]), "t"),
        lambda s: k_win(
            k_wm(s).with_column("t", _sk().col("ts")).drop_duplicates(["k", "t"]), "t"
        ),
        "append", AGG_FILES, RENAMED["append"],
    ),
}  # fmt: skip


# The dedup's input after Spark's ColumnPruning through a stream-static join above it: ts
# (or its rename t) is pruned, and with it the late-row rule, unless the join's keys or
# condition, a filter or the output read it
def s_dk(stream: Any) -> Any:
    return s_wm(stream).dropDuplicates(["k"])


def k_dk(stream: Any) -> Any:
    return k_wm(stream).drop_duplicates(["k"])


JOINED: dict[str, Case] = {
    "dedup_k_then_join_select-append": Case(
        lambda s: s_dk(s).join(s_static(s), "k").select("k", "v", "name"),
        lambda s: k_dk(s).join(k_static(), "k").select("k", "v", "name"),
        "append", DEDUP_FILES, joined(False, "k", "v", "name"),
    ),
    "dedup_k_then_join_static_columns-append": Case(
        lambda s: s_dk(s).join(s_static(s), "k").select("name", "v"),
        lambda s: k_dk(s).join(k_static(), "k").select("name", "v"),
        "append", DEDUP_FILES, joined(False, "name", "v"),
    ),
    "dedup_k_then_static_left_join_select-append": Case(
        lambda s: s_static(s).join(s_dk(s), "k").select("name", "v"),
        lambda s: k_static().join(k_dk(s), "k").select("name", "v"),
        "append", DEDUP_FILES, joined(False, "name", "v"),
    ),
    "dedup_k_then_semi_join_select-append": Case(
        lambda s: s_dk(s).join(s_static(s), "k", "left_semi").select("k", "v"),
        lambda s: k_dk(s).join(k_static(), "k", "left_semi").select("k", "v"),
        "append", DEDUP_FILES, joined(False, "k", "v"),
    ),
    "dedup_k_then_renamed_join_select-append": Case(
        lambda s: s_alias(s).dropDuplicates(["k"]).join(s_static(s), "k").select("k", "v"),
        lambda s: k_alias(s).drop_duplicates(["k"]).join(k_static(), "k").select("k", "v"),
        "append", DEDUP_FILES, joined(False, "k", "v"),
    ),
    "dedup_k_then_join_all_columns-append": Case(  # ts is output
        lambda s: s_dk(s).join(s_static(s), "k"),
        lambda s: k_dk(s).join(k_static(), "k"),
        "append", DEDUP_FILES,
        {0: [("a", micros(10), 1, 1, "alpha", 0), ("b", micros(30), 3, 3, "beta", 0)],
         1: [("c", micros(12), 8, 8, "gamma", 0)], 2: [],
         3: [("e", micros(200), 7, 7, "eps", 0)], 4: []},
    ),
    "dedup_k_then_join_on_ts-append": Case(
        lambda s: s_dk(s).join(
            s_static(s).withColumnRenamed("k", "sk"),
            (_f().col("k") == _f().col("sk")) & (_f().col("ts") >= _f().col("since")),
        ).select("k", "v", "name"),
        lambda s: k_dk(s).join(
            k_static().select(_sk().col("k").alias("sk"), "name", "since"),
            (_sk().col("k") == _sk().col("sk")) & (_sk().col("ts") >= _sk().col("since")),
        ).select("k", "v", "name"),
        "append", DEDUP_FILES, joined(True, "k", "v", "name"),
    ),
    "dedup_k_then_join_filter_on_ts-append": Case(
        lambda s: s_dk(s).join(s_static(s), "k").filter(_f().col("ts") > _f().col("since"))
        .select("k", "name"),
        lambda s: k_dk(s).join(k_static(), "k").filter(_sk().col("ts") > _sk().col("since"))
        .select("k", "name"),
        "append", DEDUP_FILES, joined(True, "k", "name"),
    ),
    "dedup_k_then_renamed_join_select_t-append": Case(
        lambda s: s_alias(s).dropDuplicates(["k"]).join(s_static(s), "k").select("k", "t"),
        lambda s: k_alias(s).drop_duplicates(["k"]).join(k_static(), "k").select("k", "t"),
        "append", DEDUP_FILES,
        {0: [("a", micros(10)), ("b", micros(30))], 1: [("c", micros(12))], 2: [],
         3: [("e", micros(200))], 4: []},
    ),
    # chains through a join: nothing is duplicated and every key joins once, so the
    # window's batches are RENAMED's; ts and its copy t reach the dedup, the window reads
    # t only after the join, so Spark prunes ts
    **{
        f"chain_dedup_then_join_then_window-{mode}": Case(
            lambda s: s_win(s_wm(s).dropDuplicates(["k", "ts"]).join(s_static(s), "k"), "ts"),
            lambda s: k_win(k_wm(s).drop_duplicates(["k", "ts"]).join(k_static(), "k"), "ts"),
            mode, AGG_FILES, RENAMED[mode],
        )
        for mode in ("update", "append")
    },
    "chain_copy_then_dedup_then_join_then_window-append": Case(
        lambda s: s_win(
            s_wm(s).withColumn("t", _f().col("ts")).dropDuplicates(["k", "t"])
            .join(s_static(s), "k"), "t",
        ),
        lambda s: k_win(
            k_wm(s).with_column("t", _sk().col("ts")).drop_duplicates(["k", "t"])
            .join(k_static(), "k"), "t",
        ),
        "append", AGG_FILES, RENAMED["append"],
    ),
    "chain_dedup_then_window_then_join-append": Case(
        lambda s: s_win(s_wm(s).dropDuplicates(["k", "ts"]), "ts").join(s_static(s), "k")
        .select("window", "k", "n", "s"),
        lambda s: k_win(k_wm(s).drop_duplicates(["k", "ts"]), "ts").join(k_static(), "k")
        .select("window", "k", "n", "s"),
        "append", AGG_FILES, RENAMED["append"],
    ),
}  # fmt: skip
CASES.update(JOINED)
# complete mode with a window on a column computed after with_watermark (or copied before
# it): no eviction, no late row (15 counts), no no-data batch
CASES.update({
    "window_on_computed-complete": Case(
        lambda s: s_win(s_wm(s).withColumn("t", s_t7()), "t"),
        lambda s: k_win(k_wm(s).with_column("t", k_t7()), "t"),
        "complete", AGG_FILES, COMPUTED_COMPLETE,
    ),
    "window_on_an_expression-complete": Case(
        lambda s: s_win(s_wm(s), s_t7()), lambda s: k_win(k_wm(s), k_t7()),
        "complete", AGG_FILES, COMPUTED_COMPLETE,
    ),
    "window_on_a_copy_made_below_the_watermark-complete": Case(
        lambda s: s_win(s_wm(s.withColumn("t", _f().col("ts"))), "t"),
        lambda s: k_win(k_wm(s.with_column("t", _sk().col("ts"))), "t"),
        "complete", AGG_FILES, COPY_BELOW_COMPLETE,
    ),
})  # fmt: skip

REFUSED_APPEND: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    "window_on_computed": (
        lambda s: s_win(s_wm(s).withColumn("t", s_t7()), "t"),
        lambda s: k_win(k_wm(s).with_column("t", k_t7()), "t"),
    ),
    "window_on_an_expression": (
        lambda s: s_win(s_wm(s), s_t7()),
        lambda s: k_win(k_wm(s), k_t7()),
    ),
    "window_on_a_copy_made_below_the_watermark": (
        lambda s: s_win(s_wm(s.withColumn("t", _f().col("ts"))), "t"),
        lambda s: k_win(k_wm(s.with_column("t", _sk().col("ts"))), "t"),
    ),
    "session_on_computed": (
        lambda s: s_wm(s).withColumn("t", s_t7()).groupBy(
            _f().session_window("t", "5 seconds"), "k"
        ).count(),
        lambda s: k_wm(s).with_column("t", k_t7()).group_by(
            _sk().session_window("t", "5 seconds"), "k"
        ).agg(_sk().count()),
    ),
}  # fmt: skip

CONCURRENT = 6


def spark_start(spark: Any, case: Case, directory: Path) -> tuple[Any, Batches, Any]:
    """Start the case's Spark query; returns (handle, batches collected, checkpoint)."""
    seen: Batches = []
    ck = tempfile.TemporaryDirectory(prefix="spark-ck-")
    stream = spark.readStream.schema(SPARK_SCHEMA).option("maxFilesPerTrigger", 1)
    frame = case.spark(stream.json(str(directory)))

    def collect(batch: Any, batch_id: int) -> None:
        seen.append((batch_id, spark_out(batch)[1]))

    handle = (
        frame.writeStream.outputMode(case.mode).trigger(availableNow=True)
        .option("checkpointLocation", ck.name).foreachBatch(collect).start()
    )  # fmt: skip
    return handle, seen, ck


def spark_update_batches(out: Any) -> dict[int, list[Any]]:
    """Spark's update-mode batches of the streaming frame ``out`` (``available_now``), by
    batch id."""
    theirs: Batches = []
    ck = tempfile.TemporaryDirectory(prefix="spark-ck-")
    handle = (
        out.writeStream.outputMode("update").trigger(availableNow=True)
        .option("checkpointLocation", ck.name)
        .foreachBatch(lambda b, i: theirs.append((i, spark_out(b)[1]))).start()
    )  # fmt: skip
    try:
        assert handle.awaitTermination(DEADLINE), "Spark did not finish"
    finally:
        ck.cleanup()
    return dict(theirs)


def streamkit_run(case: Case, directory: Path) -> Batches:
    import streamkit as sk

    seen: Batches = []

    def collect(frame: sk.DataFrame, batch_id: int) -> None:
        seen.append((batch_id, streamkit_out(frame.to_arrow())[1]))

    stream = sk.read_stream.files(str(directory), "json", SCHEMA, max_files_per_trigger=1)
    handle = (
        case.streamkit(stream).write_stream.output_mode(case.mode)
        .trigger(available_now=True).foreach_batch(collect).start()
    )  # fmt: skip
    assert handle.await_termination(timeout=DEADLINE), "streamkit did not finish"
    assert handle.exception is None, repr(handle.exception)
    return sorted(seen, key=lambda b: b[0])


@pytest.fixture(scope="module")
def runs(
    spark: Any, tmp_path_factory: pytest.TempPathFactory
) -> Mapping[str, tuple[Path, Batches]]:
    """Each case's directory and Spark's batches, a chunk of cases at a time."""
    dirs = {n: write_files(tmp_path_factory.mktemp(n), c.files, "json") for n, c in CASES.items()}

    def chunk(names: list[str]) -> dict[str, tuple[Path, Batches]]:
        started = {n: spark_start(spark, CASES[n], dirs[n]) for n in names}
        out = {}
        for n, (handle, seen, ck) in started.items():
            try:
                assert handle.awaitTermination(DEADLINE), f"Spark did not finish {n}"
                assert handle.exception() is None, str(handle.exception())
            finally:
                ck.cleanup()
            out[n] = (dirs[n], sorted(seen, key=lambda b: b[0]))
        return out

    return LazyRuns(list(dirs), chunk, CONCURRENT)


@pytest.mark.parametrize("name", list(CASES))
def test_the_watermark_follows_the_column_as_in_spark(
    name: str, runs: Mapping[str, tuple[Path, Batches]]
) -> None:
    """Spark gives the hand-derived batches, then streamkit gives Spark's, batch by batch."""
    directory, theirs = runs[name]
    assert dict(theirs) == CASES[name].expected, "Spark disagrees with the derivation"
    ours = streamkit_run(CASES[name], directory)
    assert [b for b, _ in ours] == [b for b, _ in theirs], "batch ids differ"
    for (bid, rows), (_, their_rows) in zip(ours, theirs, strict=True):
        assert rows == their_rows, f"batch {bid}: streamkit {rows} vs Spark {their_rows}"


@pytest.mark.parametrize("name", list(REFUSED_APPEND))
def test_append_without_a_watermarked_window_is_refused_by_both(
    name: str, spark: Any, tmp_path: Path
) -> None:
    from pyspark.errors import AnalysisException

    import streamkit as sk

    directory = write_files(tmp_path / "in", AGG_FILES, "json")
    ours, theirs = REFUSED_APPEND[name][1], REFUSED_APPEND[name][0]
    stream = spark.readStream.schema(SPARK_SCHEMA).json(str(directory))
    with pytest.raises(AnalysisException, match=r"STREAMING_OUTPUT_MODE\.UNSUPPORTED_OPERATION"):
        theirs(stream).writeStream.outputMode("append").format("memory").queryName(
            f"refused_{name}"
        ).start()
    source = sk.read_stream.files(str(directory), "json", SCHEMA)
    with pytest.raises(PlanError, match="Invalid streaming output mode: append"):
        ours(source).write_stream.output_mode("append").foreach_batch(lambda f, i: None).start()


def test_drop_duplicates_on_the_column_and_a_copy_fails_in_spark_and_is_refused(
    spark: Any, tmp_path: Path
) -> None:
    from pyspark.errors import StreamingQueryException

    import streamkit as sk

    directory = write_files(tmp_path / "in", DEDUP_FILES, "json")
    ck = tempfile.TemporaryDirectory(prefix="spark-ck-")
    stream = spark.readStream.schema(SPARK_SCHEMA).option("maxFilesPerTrigger", 1)
    frame = s_wm(stream.json(str(directory))).withColumn("t", _f().col("ts"))
    handle = (
        frame.dropDuplicates(["k", "t"]).writeStream.outputMode("append")
        .trigger(availableNow=True).option("checkpointLocation", ck.name)
        .foreachBatch(lambda b, i: b.count()).start()
    )  # fmt: skip
    try:
        with pytest.raises(StreamingQueryException, match="MULTIPLE_EVENT_TIME_COLUMNS"):
            handle.awaitTermination(DEADLINE)
    finally:
        ck.cleanup()
    source = sk.read_stream.files(str(directory), "json", SCHEMA)
    ours = k_wm(source).with_column("t", _sk().col("ts")).drop_duplicates(["k", "t"])
    with pytest.raises(PlanError, match="More than one event time columns"):
        ours.write_stream.output_mode("append").foreach_batch(lambda f, i: None).start()


def test_drop_duplicates_within_watermark_on_a_computed_column_is_refused_by_both(
    spark: Any, tmp_path: Path
) -> None:
    from pyspark.errors import AnalysisException

    import streamkit as sk

    directory = write_files(tmp_path / "in", DEDUP_FILES, "json")
    stream = spark.readStream.schema(SPARK_SCHEMA).json(str(directory))
    theirs = s_wm(stream).select(s_t7().alias("t"), "k", "v").dropDuplicatesWithinWatermark(["k"])
    reason = "dropDuplicatesWithinWatermark is not supported"
    with pytest.raises(AnalysisException, match=reason):
        theirs.writeStream.outputMode("append").format("memory").queryName("refused_ww").start()
    source = sk.read_stream.files(str(directory), "json", SCHEMA)
    ours = k_wm(source).select(k_t7().alias("t"), "k", "v").drop_duplicates_within_watermark(["k"])
    with pytest.raises(PlanError, match=reason):
        ours.write_stream.output_mode("append").foreach_batch(lambda f, i: None).start()


PER_KEY: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    "select_alias": (s_alias, k_alias),
    "computed_ts_kept": (
        lambda s: s_wm(s).withColumn("t", s_t7()),
        lambda s: k_wm(s).with_column("t", k_t7()),
    ),
}


@pytest.mark.parametrize("name", list(PER_KEY))
def test_event_time_timeouts_judge_late_rows_as_spark(
    name: str, spark: Any, tmp_path: Path
) -> None:
    """applyInPandasWithState with EventTimeTimeout: (a, 15) late in batch 2 in both."""
    from pyspark.sql.streaming.state import GroupStateTimeout

    import streamkit as sk

    directory = write_files(tmp_path / "in", AGG_FILES, "json")
    want = {0: [("a", 1), ("q", 1), ("z", 1)], 1: [("a", 2)], 2: [], 3: [("a", 1)], 4: []}
    stream = spark.readStream.schema(SPARK_SCHEMA).option("maxFilesPerTrigger", 1)
    out = (
        PER_KEY[name][0](stream.json(str(directory)))
        .groupBy("k")
        .applyInPandasWithState(
            rows_per_key,
            "k string, n long",
            "n long",
            "update",
            GroupStateTimeout.EventTimeTimeout,
        )
    )
    assert spark_update_batches(out) == want, "Spark disagrees with the derivation"
    ours: Batches = []
    source = sk.read_stream.files(str(directory), "json", SCHEMA, max_files_per_trigger=1)
    frame = PER_KEY[name][1](source).group_by("k").apply_in_pandas_with_state(
        rows_per_key, "k string, n bigint", "n bigint", "update",
        sk.GroupStateTimeout.EventTimeTimeout,
    )  # fmt: skip
    ran = (
        frame.write_stream.output_mode("update").trigger(available_now=True)
        .foreach_batch(lambda f, i: ours.append((i, streamkit_out(f.to_arrow())[1]))).start()
    )  # fmt: skip
    assert ran.await_termination(timeout=DEADLINE)
    assert dict(ours) == want


def test_event_time_timeouts_without_a_watermarked_column_are_refused_by_both(
    spark: Any, tmp_path: Path
) -> None:
    from pyspark.errors import AnalysisException
    from pyspark.sql.streaming.state import GroupStateTimeout

    import streamkit as sk

    directory = write_files(tmp_path / "in", AGG_FILES, "json")
    stream = spark.readStream.schema(SPARK_SCHEMA).json(str(directory))
    theirs = s_wm(stream).select(s_t7().alias("t"), "k", "v").groupBy("k")
    out = theirs.applyInPandasWithState(
        rows_per_key, "k string, n long", "n long", "update", GroupStateTimeout.EventTimeTimeout
    )
    with pytest.raises(AnalysisException, match="Watermark must be specified"):
        out.writeStream.outputMode("update").format("memory").queryName("refused_fg").start()
    source = sk.read_stream.files(str(directory), "json", SCHEMA)
    ours = k_wm(source).select(k_t7().alias("t"), "k", "v").group_by("k")
    frame = ours.apply_in_pandas_with_state(
        rows_per_key, "k string, n bigint", "n bigint", "update",
        sk.GroupStateTimeout.EventTimeTimeout,
    )  # fmt: skip
    with pytest.raises(PlanError, match="Watermark must be specified"):
        frame.write_stream.output_mode("update").foreach_batch(lambda f, i: None).start()


@pytest.mark.parametrize(("name", "late"), [("select_alias", True), ("select_computed", False)])
def test_transform_with_state_judges_late_rows_as_spark(
    name: str, late: bool, rocksdb: Any, tmp_path: Path
) -> None:
    """EventTime mode: a rename carries the watermark ((a, 15) late in batch 2); a column
    computed after with_watermark does not, and Spark then drops no row as late."""
    import streamkit as sk

    directory = write_files(tmp_path / "in", AGG_FILES, "json")
    builds = {
        "select_alias": (s_alias, k_alias),
        "select_computed": (
            lambda s: s_wm(s).select(s_t7().alias("t"), "k", "v"),
            lambda s: k_wm(s).select(k_t7().alias("t"), "k", "v"),
        ),
    }
    want = {0: [("a", 1), ("q", 1), ("z", 1)], 1: [("a", 2)], 2: [] if late else [("a", 1)],
            3: [("a", 1)], 4: []}  # fmt: skip
    stream = rocksdb.readStream.schema(SPARK_SCHEMA).option("maxFilesPerTrigger", 1)
    out = (
        builds[name][0](stream.json(str(directory)))
        .groupBy("k")
        .transformWithStateInPandas(RowsPerKey(), "k string, n long", "Update", "EventTime")
    )
    assert spark_update_batches(out) == want, "Spark disagrees with the derivation"
    ours: Batches = []
    source = sk.read_stream.files(str(directory), "json", SCHEMA, max_files_per_trigger=1)
    frame = (
        builds[name][1](source)
        .group_by("k")
        .transform_with_state_in_pandas(RowsPerKey(), "k string, n bigint", "update", "EventTime")
    )
    ran = (
        frame.write_stream.output_mode("update").trigger(available_now=True)
        .foreach_batch(lambda f, i: ours.append((i, streamkit_out(f.to_arrow())[1]))).start()
    )  # fmt: skip
    assert ran.await_termination(timeout=DEADLINE)
    assert dict(ours) == want
