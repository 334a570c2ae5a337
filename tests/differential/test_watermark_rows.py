"""Which rows move the watermark, against PySpark: the ones that reach Spark's
``EventTimeWatermarkExec`` after its optimizer has moved filters, not every row read.

Each shape puts ``with_watermark("ts", "5 seconds")`` somewhere among filters, projections
and a stream-static join, then counts 10-second windows per ``k`` (append and update
mode). The hand-made files hide far-future rows (``z`` at 100 s, ``q`` at 90 s, large
``v``) that the filter or join rejects; only ``a`` rows survive. Times are seconds after
2024-01-01T00:00Z, batch n evicts with W(n-1) and drops a row whose window ended at or
before W(n-2) (README "Semantics, as rules", rules 1-3).

Rows that reach the watermark (``SURVIVORS``; W(0)=5, W(1)=W(2)=25):

- update: batch 0 ``[10,20) a 1 1``; batch 1 ``[10,20) a 2 4``, ``[30,40) a 1 4``; batch
  2 ``[10,20) a 3 9`` (15 s is counted: its window is still open).
- append: batch 2 ``[10,20) a 3 9``; ``[30,40)`` stays open.

Every row read (``RAW``; W(0)=95): batch 1 evicts (update) or emits (append) both windows
with W(0)=95, and batch 2's row at 15 s is late: update ``{0: [10,20) a 1 1, 1: [10,20) a
2 4 + [30,40) a 1 4, 2: nothing}``, append ``{1: both windows, 2: nothing}``. Each shape
expects one of the two (a filter on the event time stays above the watermark: ``RAW``),
and they disagree in every mode, so a case fails when streamkit applies the other rule
(10 of the first 18 hand-made cases failed before streamkit ran the plan below the
watermark; the seeded random streams fail 16 of 24 when every row counts).

``with_watermark`` on a ``ts`` computed or renamed before it: the watermark, lateness and
windows are on the computed column (streamkit refused these queries before issue 18); one
shape computes it after a stream-static join under a new name, ``t``, and counts windows
on ``t`` (``Shape.column``).

Late rows (issue 18, review F3): in every case, per batch id, Spark's
``numRowsDroppedByWatermark`` summed over its stateful operators equals what streamkit's
late rows of that batch give: for an aggregation Spark counts the late (window, key)
groups its operator drops (its input is the partial aggregates, checked by hand in
``LATE_CASES``), so the late rows' distinct (window of the event time at the watermark,
``k``); for ``dropDuplicates`` first, the rows. The ``LATE_CASES`` put rows behind the
watermark that a filter or join rejects (``z``, ``q``) beside late rows that reach the
operator: streamkit reported the rejected ones too before the fix.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.differential.engines import DEADLINE
from tests.differential.inputs import (
    BASE,
    SCHEMA,
    SPARK_SCHEMA,
    Files,
    micros,
    random_files,
    write_files,
)
from tests.differential.lazy_runs import LazyRuns
from tests.differential.test_joins_static import Batches, spark_out, streamkit_out

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.slow]

STATIC = pa.table({"k": ["a", "z"], "grp": ["x", "y"]})
"""The static side: ``a`` in group x, ``z`` in group y, no ``q``."""

FILES: Files = [
    [(10, "a", 1, 1), (100, "z", 200, 2), (90, "q", 300, 6)],
    [(12, "a", 3, 3), (30, "a", 4, 4)],
    [(15, "a", 5, 5)],
]
NULL_KEY_FILES: Files = [
    [(10, "a", 1, 1), (100, None, 200, 2)],
    [(12, "a", 3, 3), (30, "a", 4, 4)],
    [(15, "a", 5, 5)],
]
"""The far-future row has a null key and no ``q``: only an inner join rejects it."""

Expected = dict[int, list[tuple[int, str, int, int]]]


def w(start: int, k: str, n: int, s: int) -> tuple[int, str, int, int]:
    """An output row: window start (seconds), key, count, sum of v."""
    return (micros(start), k, n, s)


SURVIVORS: dict[str, Expected] = {
    "update": {0: [w(10, "a", 1, 1)], 1: [w(10, "a", 2, 4), w(30, "a", 1, 4)],
               2: [w(10, "a", 3, 9)]},
    "append": {0: [], 1: [], 2: [w(10, "a", 3, 9)]},
}  # fmt: skip
RAW: dict[str, Expected] = {
    "update": {0: [w(10, "a", 1, 1)], 1: [w(10, "a", 2, 4), w(30, "a", 1, 4)], 2: []},
    "append": {0: [], 1: [w(10, "a", 2, 4), w(30, "a", 1, 4)], 2: []},
}

Build = Callable[[Any, Any], Any]
"""(stream, static) -> the frame before the windowed count."""


@dataclass(frozen=True)
class Shape:
    """One placement of ``with_watermark``, for both engines, with its input and which
    rows Spark's watermark sees (``SURVIVORS`` or ``RAW``)."""

    spark: Build
    streamkit: Build
    expected: dict[str, Expected]
    files: Files = tuple(FILES)  # type: ignore[assignment]
    column: str = "ts"
    """The event-time column the windows are on (the watermark's)."""
    shift: int = 0
    """Seconds the event time at the watermark is ahead of ``ts`` as read."""
    dedup: bool = False
    """``dropDuplicates(k, ts)`` before the windowed count (append mode only, as Spark):
    Spark's late count is then rows, not groups."""


def _sk() -> Any:
    import streamkit as sk

    return sk


def _f() -> Any:
    from pyspark.sql import functions as F

    return F


WM = ("ts", "5 seconds")
UNTIL_50 = BASE + timedelta(seconds=50)


def _shifted_then_watermark(seconds: int) -> tuple[Build, Build]:
    """``with_column("ts", ts + seconds)`` then ``with_watermark``: Spark's and streamkit's."""
    return (
        lambda s, _: s.withColumn(
            "ts", _f().col("ts") + _f().expr(f"INTERVAL {seconds} SECONDS")
        ).withWatermark(*WM),
        lambda s, _: s.with_column(
            "ts", _sk().col("ts") + timedelta(seconds=seconds)
        ).with_watermark(*WM),
    )


SHAPES: dict[str, Shape] = {
    # (a) a filter before with_watermark is below Spark's watermark node
    "filter_then_watermark": Shape(
        lambda s, _: s.filter(_f().col("k") == "a").withWatermark(*WM),
        lambda s, _: s.filter(_sk().col("k") == "a").with_watermark(*WM),
        SURVIVORS,
    ),
    # (b) a filter after it that does not read ts: PushPredicateThroughNonJoin moves it below
    "watermark_then_filter": Shape(
        lambda s, _: s.withWatermark(*WM).filter(_f().col("k") == "a"),
        lambda s, _: s.with_watermark(*WM).filter(_sk().col("k") == "a"),
        SURVIVORS,
    ),
    # (b) ... also through a projection (the alias is substituted: v * 2 < 100)
    "watermark_then_filter_on_computed_column": Shape(
        lambda s, _: (
            s.withWatermark(*WM)
            .withColumn("v2", _f().col("v") * 2)
            .filter(_f().col("v2") < 100)
            .select("ts", "k", "v", "u")
        ),
        lambda s, _: (
            s.with_watermark(*WM)
            .with_column("v2", _sk().col("v") * 2)
            .filter(_sk().col("v2") < 100)
            .select("ts", "k", "v", "u")
        ),
        SURVIVORS,
    ),
    # (b) a filter reading ts stays above the watermark: every row moves it
    "watermark_then_filter_on_event_time": Shape(
        lambda s, _: s.withWatermark(*WM).filter(_f().col("ts") < _f().lit(UNTIL_50)),
        lambda s, _: s.with_watermark(*WM).filter(_sk().col("ts") < UNTIL_50),
        RAW,
    ),
    # (c) stream-static join, filter on a static column, then with_watermark
    "join_filter_static_then_watermark": Shape(
        lambda s, t: s.join(t, "k", "inner").filter(_f().col("grp") == "x").withWatermark(*WM),
        lambda s, t: s.join(t, "k", "inner").filter(_sk().col("grp") == "x").with_watermark(*WM),
        SURVIVORS,
    ),
    "left_join_filter_static_then_watermark": Shape(
        lambda s, t: s.join(t, "k", "left").filter(_f().col("grp") == "x").withWatermark(*WM),
        lambda s, t: s.join(t, "k", "left").filter(_sk().col("grp") == "x").with_watermark(*WM),
        SURVIVORS,
    ),
    # with_watermark, then an inner join: Spark infers ``k IS NOT NULL`` on the stream side
    # from the join condition and pushes it below the watermark
    "watermark_then_inner_join_null_key": Shape(
        lambda s, t: s.withWatermark(*WM).join(t, "k", "inner"),
        lambda s, t: s.with_watermark(*WM).join(t, "k", "inner"),
        SURVIVORS,
        NULL_KEY_FILES,
    ),
    # ... also after a left join that a filter on a static column makes inner
    # (EliminateOuterJoin)
    "watermark_then_left_join_filter_static_null_key": Shape(
        lambda s, t: s.withWatermark(*WM).join(t, "k", "left").filter(_f().col("grp") == "x"),
        lambda s, t: s.with_watermark(*WM).join(t, "k", "left").filter(_sk().col("grp") == "x"),
        SURVIVORS,
        NULL_KEY_FILES,
    ),
    # ... and from a filter on the static side's key, ``k = 'a'`` on the stream side
    "watermark_then_join_filtered_static": Shape(
        lambda s, t: s.withWatermark(*WM).join(t.filter(_f().col("k") == "a"), "k", "inner"),
        lambda s, t: s.with_watermark(*WM).join(t.filter(_sk().col("k") == "a"), "k", "inner"),
        SURVIVORS,
    ),
    # ... also when the static side filters its key under another name and renames it to
    # the key above the filter (Spark carries a = 'a' through a AS k)
    "watermark_then_join_renamed_filtered_static": Shape(
        lambda s, t: s.withWatermark(*WM).join(
            t.select(_f().col("k").alias("a"), "grp")
            .filter(_f().col("a") == "a")
            .select(_f().col("a").alias("k"), "grp"),
            "k",
            "inner",
        ),
        lambda s, t: s.with_watermark(*WM).join(
            t.select(_sk().col("k").alias("a"), "grp")
            .filter(_sk().col("a") == "a")
            .select(_sk().col("a").alias("k"), "grp"),
            "k",
            "inner",
        ),
        SURVIVORS,
    ),
    # (d) with_column changing ts before with_watermark: Spark's watermark, windows and
    # lateness are all on ts + 20 s (W(0)=115: the row at 15 s, now 35 s, is late in
    # batch 2)
    "computed_event_time_then_watermark": Shape(
        *_shifted_then_watermark(20),
        {
            "update": {
                0: [w(30, "a", 1, 1), w(110, "q", 1, 300), w(120, "z", 1, 200)],
                1: [w(30, "a", 2, 4), w(50, "a", 1, 4)],
                2: [],
            },
            "append": {0: [], 1: [w(30, "a", 2, 4), w(50, "a", 1, 4)], 2: []},
        },
        shift=20,
    ),
    # ... by 7 s, not a multiple of the window: W(0) = 107 - 5 = 102 (the raw ts would
    # give 95), so append's batch 1 also closes q's [90,100) (at 97 s); batch 2's row at
    # 22 s is late
    "shifted_event_time_then_watermark": Shape(
        *_shifted_then_watermark(7),
        {
            "update": {
                0: [w(10, "a", 1, 1), w(90, "q", 1, 300), w(100, "z", 1, 200)],
                1: [w(10, "a", 2, 4), w(30, "a", 1, 4)],
                2: [],
            },
            "append": {
                0: [],
                1: [w(10, "a", 2, 4), w(30, "a", 1, 4), w(90, "q", 1, 300)],
                2: [],
            },
        },
        shift=7,
    ),
    # ts renamed away and back before with_watermark: every row reaches it (W(0)=95)
    "renamed_event_time_then_watermark": Shape(
        lambda s, _: (
            s.withColumnRenamed("ts", "t0").withColumnRenamed("t0", "ts").withWatermark(*WM)
        ),
        lambda s, _: (
            s.select(_sk().col("ts").alias("t0"), "k", "v", "u")
            .select(_sk().col("t0").alias("ts"), "k", "v", "u")
            .with_watermark(*WM)
        ),
        {  # RAW, but nothing rejects q and z
            "update": {
                **RAW["update"],
                0: [w(10, "a", 1, 1), w(90, "q", 1, 300), w(100, "z", 1, 200)],
            },
            "append": RAW["append"],
        },
    ),
    # (e) a stream-static join, then the event time computed from the stream's ts under a
    # new name: the inner join below the watermark drops q; t = ts + 7 s, so W(0) = 107 - 5
    # = 102 (z); batch 1 evicts (update) or emits (append) [10,20) and [30,40) with it; batch
    # 2's row at 22 s is late (streamkit refused the query before issue 18's fix)
    "static_join_then_renamed_event_time_then_watermark": Shape(
        lambda s, t: (
            s.join(t, "k", "inner")
            .withColumn("t", _f().col("ts") + _f().expr("INTERVAL 7 SECONDS"))
            .withWatermark("t", "5 seconds")
        ),
        lambda s, t: (
            s.join(t, "k", "inner")
            .with_column("t", _sk().col("ts") + timedelta(seconds=7))
            .with_watermark("t", "5 seconds")
        ),
        {
            "update": {
                0: [w(10, "a", 1, 1), w(100, "z", 1, 200)],
                1: [w(10, "a", 2, 4), w(30, "a", 1, 4)],
                2: [],
            },
            "append": {0: [], 1: [w(10, "a", 2, 4), w(30, "a", 1, 4)], 2: []},
        },
        column="t",
        shift=7,
    ),
}

CASES = {f"{name}-{mode}": (name, mode) for name in SHAPES for mode in ("update", "append")}
RANDOM_SHAPES = (
    "filter_then_watermark",
    "watermark_then_filter",
    "join_filter_static_then_watermark",
    "left_join_filter_static_then_watermark",
    "watermark_then_inner_join_null_key",
    "watermark_then_left_join_filter_static_null_key",
    "shifted_event_time_then_watermark",
)
SEEDS = (31, 32)
RANDOM = {
    f"{name}-{mode}-seed{seed}": (name, mode, seed)
    for name in RANDOM_SHAPES
    for mode in ("update", "append")
    for seed in SEEDS
}
"""The shapes on seeded random streams (keys a, b, c and nulls; the static side has no c):
the newest row of a batch is often one the filter or join rejects."""


def random_stream(seed: int) -> Files:
    """Ten files, the clock moving up to 8 s a file: windows close in append mode."""
    return random_files(seed, files=10, step=8)


LATE_FILES: Files = [
    [(40, "a", 1, 1)],
    [(41, "a", 2, 2)],
    [(10, "z", 200, 3), (11, "q", 300, 4), (12, "a", 3, 5), (13, "a", 4, 6), (38, "a", 5, 7)],
]
"""Batch 2 is judged against W in force in batch 1 (35 on ts as read): z at 10 and q at 11
are behind it but rejected below the aggregation (by the filter k = 'a', or the join: q
has no static row, z is in group y); a at 12 and 13 are late in [10,20); a at 38 is not."""

LateRows = dict[int, list[tuple[int, str | None]]]
"""Per batch id, late rows as read: (ts in seconds, k)."""
A_LATE: LateRows = {2: [(12, "a"), (13, "a")]}


@dataclass(frozen=True)
class LateCase:
    """A shape run on ``LATE_FILES``: streamkit's late rows and Spark's late count, per
    batch id, derived by hand; the windowed counts compared between the engines."""

    shape: Shape
    mode: str
    late: LateRows
    dropped: dict[int, int]
    """Spark's ``numRowsDroppedByWatermark`` (summed over its operators) per batch id."""


LATE_CASES: dict[str, LateCase] = {
    # two late rows in one (window, key) group: Spark counts 1, the group it drops
    "filter_then_watermark-late": LateCase(
        SHAPES["filter_then_watermark"], "update", A_LATE, {2: 1}
    ),
    "watermark_then_filter-late": LateCase(
        SHAPES["watermark_then_filter"], "update", A_LATE, {2: 1}
    ),
    "join_filter_static_then_watermark-late": LateCase(
        SHAPES["join_filter_static_then_watermark"], "update", A_LATE, {2: 1}
    ),
    "watermark_then_join_filtered_static-late": LateCase(
        SHAPES["watermark_then_join_filtered_static"], "update", A_LATE, {2: 1}
    ),
    # t = ts + 7 after an inner join: W(0) = 47 - 5 = 42, W(1) = 43; batch 2 (F = 42): z
    # (17, a static row: it reaches) and a (19) late in [10,20), a (20) in [20,30); q (18)
    # has no static row; a (45) is on time. Three groups.
    "static_join_then_renamed_event_time_then_watermark-late": LateCase(
        SHAPES["static_join_then_renamed_event_time_then_watermark"],
        "update",
        {2: [(10, "z"), (12, "a"), (13, "a")]},
        {2: 3},
    ),
    # ts + 7, the watermark, then the filter: F = 42 in batch 2; a at 19 ([10,20)) and 20
    # ([20,30)) are late, z (17) and q (18) are filtered: two groups
    "computed_event_time_then_watermark_then_filter-late": LateCase(
        Shape(
            lambda s, _: _shifted_then_watermark(7)[0](s, _).filter(_f().col("k") == "a"),
            lambda s, _: _shifted_then_watermark(7)[1](s, _).filter(_sk().col("k") == "a"),
            {},
            shift=7,
        ),
        "update",
        A_LATE,
        {2: 2},
    ),
    # dropDuplicates(k, ts) first (then the windowed count, append mode as Spark requires
    # for two stateful operators): Spark counts the rows it drops, a at 12 and 13 (<= 35);
    # the count above it drops none (a row the dedup passes has ts > 35, its window too)
    "watermark_then_filter_then_dedup-late": LateCase(
        Shape(
            lambda s, _: s.withWatermark(*WM).filter(_f().col("k") == "a")
            .dropDuplicates(["k", "ts"]),
            lambda s, _: s.with_watermark(*WM).filter(_sk().col("k") == "a")
            .drop_duplicates(["k", "ts"]),
            {},
            dedup=True,
        ),
        "append",
        A_LATE,
        {2: 2},
    ),
}  # fmt: skip

CONCURRENT = 6


@dataclass(frozen=True)
class Theirs:
    """What Spark gave for one case."""

    directory: Path
    batches: Batches
    dropped: dict[int, int]
    """``numRowsDroppedByWatermark`` summed over the stateful operators, per batch id
    (batches without any left out)."""


@dataclass(frozen=True)
class Ours:
    """What streamkit gave for one case."""

    batches: Batches
    late: LateRows
    """Late rows per batch id (batches without any left out)."""


def spark_query(spark: Any, shape: Shape, mode: str, directory: Path, static: Path) -> Any:
    """Start the case's Spark query; returns (handle, batches collected, checkpoint)."""
    from pyspark.sql import functions as F

    seen: Batches = []
    ck = tempfile.TemporaryDirectory(prefix="spark-ck-")
    stream = spark.readStream.schema(SPARK_SCHEMA).option("maxFilesPerTrigger", 1)
    frame = shape.spark(stream.json(str(directory)), spark.read.parquet(str(static)))
    counts = frame.groupBy(F.window(shape.column, "10 seconds").alias("window"), "k").agg(
        F.count(F.lit(1)).alias("n"), F.sum("v").alias("s")
    )

    def collect(batch: Any, batch_id: int) -> None:
        seen.append((batch_id, spark_out(batch)[1]))

    handle = (
        counts.writeStream.outputMode(mode).trigger(availableNow=True)
        .option("checkpointLocation", ck.name).foreachBatch(collect).start()
    )  # fmt: skip
    return handle, seen, ck


def spark_dropped(handle: Any) -> dict[int, int]:
    """Per batch id, ``numRowsDroppedByWatermark`` summed over the stateful operators."""
    dropped = {
        int(p["batchId"]): sum(int(o["numRowsDroppedByWatermark"]) for o in p["stateOperators"])
        for p in handle.recentProgress
    }
    return {b: n for b, n in dropped.items() if n}


def streamkit_run(shape: Shape, mode: str, directory: Path, static: Path) -> Ours:
    import streamkit as sk

    seen: Batches = []

    def collect(frame: sk.DataFrame, batch_id: int) -> None:
        seen.append((batch_id, streamkit_out(frame.to_arrow())[1]))

    stream = sk.read_stream.files(str(directory), "json", SCHEMA, max_files_per_trigger=1)
    frame = shape.streamkit(stream, sk.read.parquet(str(static)))
    counts = frame.group_by(sk.window(shape.column, "10 seconds"), "k").agg(
        sk.count().alias("n"), sk.sum("v").alias("s")
    )
    handle = (
        counts.write_stream.output_mode(mode).trigger(available_now=True)
        .foreach_batch(collect).start()
    )  # fmt: skip
    assert handle.await_termination(timeout=DEADLINE), "streamkit did not finish"
    assert handle.exception is None, repr(handle.exception)
    table = handle.late_rows
    rows = [] if table is None else table.select(["ts", "k"]).to_pylist()
    late: LateRows = {}
    at = 0
    for p in sorted(handle.recent_progress, key=lambda p: p.batch_id):
        if p.late_rows:  # the late-row table holds each batch's rows in batch order
            late[p.batch_id] = [
                ((r["ts"] - BASE) // timedelta(seconds=1), r["k"])
                for r in rows[at : at + p.late_rows]
            ]
        at += p.late_rows
    assert at == len(rows), "the progress records count the late-row table's rows"
    return Ours(sorted(seen, key=lambda b: b[0]), late)


def dropped_as_spark_counts(shape: Shape, late: LateRows) -> dict[int, int]:
    """Per batch id, what Spark's late count is given streamkit's late rows: the rows in
    front of ``dropDuplicates``, else the distinct (10-second window of the event time at
    the watermark, k) of the late rows (Spark's aggregation counts the late groups)."""
    out = {}
    for bid, rows in late.items():
        groups = {((t + shape.shift) // 10, k) for t, k in rows}
        out[bid] = len(rows) if shape.dedup else len(groups)
    return out


@pytest.fixture(scope="module")
def static_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("static") / "static.parquet"
    pq.write_table(STATIC, path)
    return path


def _case(case: str) -> tuple[Shape, str, Files]:
    """The shape, output mode and files of any case of the module."""
    if case in LATE_CASES:
        late = LATE_CASES[case]
        return late.shape, late.mode, LATE_FILES
    if case in RANDOM:
        name, mode, seed = RANDOM[case]
        return SHAPES[name], mode, random_stream(seed)
    name, mode = CASES[case]
    return SHAPES[name], mode, list(SHAPES[name].files)


@pytest.fixture(scope="module")
def runs(
    spark: Any, static_table: Path, tmp_path_factory: pytest.TempPathFactory
) -> Mapping[str, Theirs]:
    """Each case's directory and Spark's batches, run a chunk at a time when first asked."""
    names = [*CASES, *RANDOM, *LATE_CASES]
    dirs = {case: write_files(tmp_path_factory.mktemp(case), _case(case)[2], "json")
            for case in names}  # fmt: skip

    def chunk(todo: list[str]) -> dict[str, Theirs]:
        started = {n: spark_query(spark, *_case(n)[:2], dirs[n], static_table) for n in todo}
        out = {}
        for n, (handle, seen, ck) in started.items():
            try:
                assert handle.awaitTermination(DEADLINE), f"Spark did not finish {n}"
                assert handle.exception() is None, str(handle.exception())
            finally:
                ck.cleanup()
            out[n] = Theirs(dirs[n], sorted(seen, key=lambda b: b[0]), spark_dropped(handle))
        return out

    return LazyRuns(names, chunk, CONCURRENT)


def assert_like_spark(case: str, theirs: Theirs, static_table: Path) -> Ours:
    """streamkit's batches equal Spark's, and its late rows give Spark's late counts."""
    shape, mode, _ = _case(case)
    ours = streamkit_run(shape, mode, theirs.directory, static_table)
    assert [b for b, _ in ours.batches] == [b for b, _ in theirs.batches], "batch ids differ"
    for (bid, rows), (_, their_rows) in zip(ours.batches, theirs.batches, strict=True):
        assert rows == their_rows, f"batch {bid}: streamkit {rows} vs Spark {their_rows}"
    assert dropped_as_spark_counts(shape, ours.late) == theirs.dropped, (
        f"late rows {ours.late} vs Spark's numRowsDroppedByWatermark {theirs.dropped}"
    )
    return ours


@pytest.mark.parametrize("case", list(CASES))
def test_watermark_sees_the_rows_spark_lets_reach_it(
    case: str, runs: Mapping[str, Theirs], static_table: Path
) -> None:
    """Spark gives the hand-derived batches, then streamkit gives Spark's, batch by batch."""
    name, mode = CASES[case]
    theirs = runs[case]
    assert dict(theirs.batches) == SHAPES[name].expected[mode], (
        "Spark disagrees with the derivation"
    )
    assert_like_spark(case, theirs, static_table)


@pytest.mark.parametrize("case", list(RANDOM))
def test_seeded_random_streams_match_spark(
    case: str, runs: Mapping[str, Theirs], static_table: Path
) -> None:
    """The same shapes on seeded random streams: every batch id and its rows equal Spark's."""
    theirs = runs[case]
    assert any(rows for _, rows in theirs.batches), "Spark emitted nothing: the case tests nothing"
    assert_like_spark(case, theirs, static_table)


@pytest.mark.parametrize("case", list(LATE_CASES))
def test_late_rows_are_those_the_stateful_operator_drops(
    case: str, runs: Mapping[str, Theirs], static_table: Path
) -> None:
    """Spark's late counts are the hand-derived ones, then streamkit's late rows are the
    hand-derived rows and give Spark's counts; the windowed counts equal Spark's."""
    theirs = runs[case]
    assert theirs.dropped == LATE_CASES[case].dropped, "Spark disagrees with the derivation"
    ours = assert_like_spark(case, theirs, static_table)
    assert ours.late == LATE_CASES[case].late
