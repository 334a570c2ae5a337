"""An aggregation grouped by the window struct of the windowed aggregation below it,
against PySpark 4.3 (issue 18): the window carries the watermark (Spark's grouping
attribute keeps the window's event-time metadata) and the aggregation above evicts by its
``end``. Same files, one per micro-batch; every batch id and its rows equal Spark's, and
so does ``numRowsTotal`` summed over the stateful operators. The hand derivation (the
same batches, server-free): ``tests/streamkit/streaming/test_window_struct_chains.py``.

``KEY_FILES`` of :mod:`tests.differential.test_watermark_key` (delay 5 s; W in force 95
in batches 1-3, 195 in the no-data batch 4; 15a late in batch 2). Below: ``v = sum(v)``
per (10 s window of ``ts``, ``k``), closing [10, 20) a 4 in batch 1 and [90, 100) (q 300,
e 9, f 13) and [100, 110) z 200 in batch 4; it holds 3, 3, 4, 5, 1 groups, and the
aggregation above (``n = count``, ``s = sum(v)``) evicts each group at once:

- per ``window``, a rename ``w`` of it, ``col("window").alias("w")`` in ``group_by``, and
  above a middle ``(window, k)`` aggregation: (10, 1, 4); (90, 3, 322), (100, 1, 200);
- per ``(window, k)``: (10, a, 1, 4); (90, e, 1, 9), (90, f, 1, 13), (90, q, 1, 300),
  (100, z, 1, 200);
- sliding 10 s / 5 s below: (5, 1, 4), (10, 1, 4), (85, 1, 300); (90, 3, 322),
  (95, 3, 222), (100, 1, 200) (held below 6, 5, 7, 9, 2);
- a 20 s window of ``window_time("w")``, and of ``window_time("window")`` above a middle
  ``(window, k)`` aggregation: (0, 1, 4); (80, 3, 322), (100, 1, 200);
- per ``window`` above ``v = sum(v)`` per 20 s window of ``window_time("window")``:
  (0, 1, 4); (80, 1, 322), (100, 1, 200).

Spark refuses: update and complete mode ("correctness"); grouping by ``window.start`` or
``window.end`` (a struct field carries no watermark: "without watermark"); it fails the
first batch grouped by ``w`` and a window on ``window_time("w")``
(``MULTIPLE_EVENT_TIME_COLUMNS``) and by a session window of the aggregation below alone
("Global aggregation with session window"). streamkit refuses each at start with Spark's
reason. Grouped by the session window below and another key, Spark runs a session window
aggregation: sessions of equal other keys that overlap or touch merge (e [95, 101),
f [95, 101) and z [100, 105) become one session [95, 105) grouped by a constant; on
``TOUCHING``, [10, 15) and [15, 20) merge), again when the merged session is grouped by
above (per (session, k, x), then per (session, x)); streamkit merges them the same way.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.differential.engines import DEADLINE
from tests.differential.inputs import SPARK_SCHEMA, Files, micros, write_files
from tests.differential.test_watermark_key import KEY_FILES, assert_as_in_spark, key_runs
from tests.differential.test_watermark_key import SparkRun as KeyRun
from tests.differential.test_watermark_key_chains import Shape, _api, counted
from tests.differential.test_watermark_lineage import Case

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.slow]


def windowed(frame: Any, spark: bool, slide: str | None = None) -> Any:
    """``frame`` watermarked on ``ts`` (5 s), ``v = sum(v)`` per (10 s window, ``k``)."""
    fn, group_by, _ = _api(spark)
    marked = getattr(frame, "withWatermark" if spark else "with_watermark")("ts", "5 seconds")
    window = fn.window("ts", "10 seconds", slide)
    return getattr(marked, group_by)(window, "k").agg(fn.sum("v").alias("v"))


def _renamed(frame: Any, spark: bool) -> Any:
    return windowed(frame, spark).select(_api(spark)[0].col("window").alias("w"), "k", "v")


def _field(spark: bool, name: str) -> Any:
    fn = _api(spark)[0]
    return fn.col(f"window.{name}") if spark else fn.col("window").get_field(name)


def _on_window_time(spark: bool) -> Any:
    fn = _api(spark)[0]
    return fn.window(fn.window_time("w"), "20 seconds")


def _three(frame: Any, spark: bool) -> Any:
    fn = _api(spark)[0]
    middle = counted(windowed(frame, spark), spark, "window", "k")
    return counted(middle.select("window", "k", fn.col("s").alias("v")), spark, "window")


def _window_time_between(frame: Any, spark: bool) -> Any:
    """``v = sum(v)`` per 20 s window of ``window_time("window")``, counted per ``window``."""
    fn, group_by, _ = _api(spark)
    below = windowed(frame, spark)
    middle = getattr(below, group_by)(fn.window(fn.window_time("window"), "20 seconds"))
    return counted(middle.agg(fn.sum("v").alias("v")), spark, "window")


def _session_rows(frame: Any, spark: bool) -> Any:
    """``v = sum(v)`` per (5 s session of ``ts``, ``k``), with ``x = 1``."""
    fn, group_by, _ = _api(spark)
    marked = getattr(frame, "withWatermark" if spark else "with_watermark")("ts", "5 seconds")
    below = getattr(marked, group_by)(fn.session_window("ts", "5 seconds"), "k")
    below = below.agg(fn.sum("v").alias("v"))
    return getattr(below, "withColumn" if spark else "with_column")("x", fn.lit(1))


def _sessions(frame: Any, spark: bool, *keys: str) -> Any:
    """:func:`_session_rows` counted per ``keys`` (``"window"``: the session window,
    Spark's ``session_window``)."""
    name = "session_window" if spark else "window"
    return counted(
        _session_rows(frame, spark), spark, *(name if k == "window" else k for k in keys)
    )


def _sessions_with_end(frame: Any, spark: bool) -> Any:
    """:func:`_session_rows` per (session, ``x``), with ``e``, the latest session end."""
    fn, group_by, _ = _api(spark)
    name = "session_window" if spark else "window"
    end = fn.col(f"{name}.end") if spark else fn.col(name).get_field("end")
    one = fn.count(fn.lit(1)) if spark else fn.count()
    return getattr(_session_rows(frame, spark), group_by)(name, "x").agg(
        one.alias("n"), fn.sum("v").alias("s"), fn.max(end).alias("e")
    )


def _sessions_twice(frame: Any, spark: bool) -> Any:
    """``v = sum(v)`` per (session, ``k``, ``x``) above the sessions, then counted per
    (session, ``x``)."""
    fn, group_by, _ = _api(spark)
    name = "session_window" if spark else "window"
    middle = getattr(_session_rows(frame, spark), group_by)(name, "k", "x")
    return counted(middle.agg(fn.sum("v").alias("v")), spark, name, "x")


def _key_then_window_time(frame: Any, spark: bool) -> Any:
    """``v = s`` per (``window``, ``k``) above :func:`windowed`, counted per 20 s window of
    ``window_time("window")``: the window reaches the top as a group key passed on."""
    fn = _api(spark)[0]
    middle = counted(windowed(frame, spark), spark, "window", "k")
    middle = middle.select("window", "k", fn.col("s").alias("v"))
    return counted(middle, spark, fn.window(fn.window_time("window"), "20 seconds"))


def _by(*keys: str) -> Shape:
    return Shape(lambda frame, spark: counted(windowed(frame, spark), spark, *keys))


def _t(second: int) -> int:
    return micros(second)


BY_WINDOW: dict[int, list[Any]] = {
    0: [], 1: [(_t(10), 1, 4)], 2: [], 3: [], 4: [(_t(90), 3, 322), (_t(100), 1, 200)],
}  # fmt: skip
BELOW = [3, 3, 4, 5, 1]
SHAPES: dict[str, tuple[Shape, dict[int, list[Any]], list[int]]] = {
    "window_then_window": (_by("window"), BY_WINDOW, BELOW),
    "window_then_window_k": (_by("window", "k"), {
        0: [], 1: [(_t(10), "a", 1, 4)], 2: [], 3: [],
        4: [(_t(90), "e", 1, 9), (_t(90), "f", 1, 13), (_t(90), "q", 1, 300),
            (_t(100), "z", 1, 200)],
    }, BELOW),
    "window_renamed_then_w": (
        Shape(lambda f, spark: counted(_renamed(f, spark), spark, "w")), BY_WINDOW, BELOW
    ),
    "window_then_alias_in_group_by": (
        Shape(lambda f, spark: counted(windowed(f, spark), spark,
                                       _api(spark)[0].col("window").alias("w"))),
        BY_WINDOW, BELOW,
    ),
    "window_then_window_k_then_window": (Shape(_three), BY_WINDOW, BELOW),
    "sliding_then_window": (
        Shape(lambda f, spark: counted(windowed(f, spark, "5 seconds"), spark, "window")),
        {0: [], 1: [(_t(5), 1, 4), (_t(10), 1, 4), (_t(85), 1, 300)], 2: [], 3: [],
         4: [(_t(90), 3, 322), (_t(95), 3, 222), (_t(100), 1, 200)]},
        [6, 5, 7, 9, 2],
    ),
    # the middle 20 s windows close as they arrive: [0, 20) v 4; [80, 100) v 322,
    # [100, 120) v 200
    "window_then_window_time_then_window": (
        Shape(_window_time_between),
        {0: [], 1: [(_t(0), 1, 4)], 2: [], 3: [], 4: [(_t(80), 1, 322), (_t(100), 1, 200)]},
        BELOW,
    ),
    "window_renamed_then_window_time": (
        Shape(lambda f, spark: counted(_renamed(f, spark), spark, _on_window_time(spark))),
        {0: [], 1: [(_t(0), 1, 4)], 2: [], 3: [], 4: [(_t(80), 3, 322), (_t(100), 1, 200)]},
        BELOW,
    ),
    # the window passed on as a key by a middle (window, k) aggregation, then a 20 s
    # window of its window_time (as the rename above: 3 rows in [80, 100))
    "window_k_then_window_time": (
        Shape(_key_then_window_time),
        {0: [], 1: [(_t(0), 1, 4)], 2: [], 3: [], 4: [(_t(80), 3, 322), (_t(100), 1, 200)]},
        BELOW,
    ),
    # session windows below, grouped by the session and another key: Spark's session
    # window aggregation (held below: sessions)
    "session_then_session_k": (
        Shape(lambda f, spark: _sessions(f, spark, "window", "k")),
        {0: [], 1: [(_t(10), "a", 1, 4), (_t(90), "q", 1, 300)], 2: [], 3: [],
         4: [(_t(95), "e", 1, 9), (_t(95), "f", 1, 13), (_t(100), "z", 1, 200)]},
        [3, 2, 3, 4, 1],
    ),
    # per a constant: e [95, 101), f [95, 101) and z [100, 105) merge into [95, 105)
    "session_then_session_x": (
        Shape(lambda f, spark: _sessions(f, spark, "window", "x")),
        {0: [], 1: [(_t(10), 1, 1, 4), (_t(90), 1, 1, 300)], 2: [], 3: [],
         4: [(_t(95), 1, 3, 222)]},
        [3, 2, 3, 4, 1],
    ),
    # the sessions merged per (k, x) above them (one each), then merged again per x
    "session_then_session_k_x_then_session_x": (
        Shape(_sessions_twice),
        {0: [], 1: [(_t(10), 1, 1, 4), (_t(90), 1, 1, 300)], 2: [], 3: [],
         4: [(_t(95), 1, 3, 222)]},
        [3, 2, 3, 4, 1],
    ),
    # TOUCHING: [10, 15) and [15, 20) touch and merge, [30, 35) and [33, 38) overlap;
    # (start, x, n, s, end)
    "touching_sessions": (
        Shape(_sessions_with_end),
        {0: [], 1: [(_t(10), 1, 2, 3, _t(20)), (_t(30), 1, 2, 7, _t(38))]},
        [5, 1],
    ),
}  # fmt: skip
TOUCHING: Files = [[(10, "a", 1, 1), (15, "b", 2, 2), (30, "c", 3, 3), (33, "d", 4, 4),
                    (60, "z", 9, 9)]]  # fmt: skip
"""One file (W = 55 after it): sessions a [10, 15), b [15, 20), c [30, 35), d [33, 38)
close in the no-data batch 1; z [60, 65) stays."""
CASES: dict[str, Case] = {
    name: Case(
        shape(True),
        shape(False),
        "append",
        TOUCHING if name == "touching_sessions" else KEY_FILES,
        expected,
    )
    for name, (shape, expected, _) in SHAPES.items()
}


@pytest.fixture(scope="module")
def runs(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> Mapping[str, KeyRun]:
    return key_runs(spark, tmp_path_factory, CASES)


@pytest.mark.parametrize("name", list(CASES))
def test_an_aggregation_by_the_window_below_evicts_by_its_end_as_in_spark(
    name: str, runs: Mapping[str, KeyRun]
) -> None:
    """Spark gives the hand-derived batches and state sizes, then streamkit gives Spark's
    batches, batch by batch."""
    assert_as_in_spark(runs[name], CASES[name], SHAPES[name][2])


# -- what Spark refuses (and what streamkit does not run yet) ---------------------------
CORRECTNESS = "correctness"
REFUSED: dict[str, tuple[Shape, str, str, str]] = {
    "update": (_by("window"), "update", CORRECTNESS, CORRECTNESS),
    "complete": (_by("window"), "complete", CORRECTNESS, CORRECTNESS),
    "by_start": (
        Shape(lambda f, spark: counted(windowed(f, spark), spark, _field(spark, "start"))),
        "append", "without watermark", "without watermark",
    ),
    "by_end": (
        Shape(lambda f, spark: counted(windowed(f, spark), spark, _field(spark, "end"))),
        "append", "without watermark", "without watermark",
    ),
    "w_and_window_time": (
        Shape(lambda f, spark: counted(_renamed(f, spark), spark, "w", _on_window_time(spark))),
        "append", "MULTIPLE_EVENT_TIME_COLUMNS", "MULTIPLE_EVENT_TIME_COLUMNS",
    ),
    "session_alone": (
        Shape(lambda f, spark: _sessions(f, spark, "window")), "append",
        "Global aggregation with session window", "Global aggregation with session window",
    ),
}  # fmt: skip


def _spark_writer(spark: Any, shape: Shape, mode: str, directory: Path, ck: str) -> Any:
    stream = spark.readStream.schema(SPARK_SCHEMA).option("maxFilesPerTrigger", 1)
    return (
        shape(True)(stream.json(str(directory))).writeStream.outputMode(mode)
        .trigger(availableNow=True).option("checkpointLocation", ck)
        .foreachBatch(lambda b, i: b.collect())
    )  # fmt: skip


def _streamkit_start(shape: Shape, mode: str, directory: Path) -> None:
    import streamkit as sk
    from tests.differential.inputs import SCHEMA

    source = sk.read_stream.files(str(directory), "json", SCHEMA)
    shape(False)(source).write_stream.output_mode(mode).foreach_batch(lambda f, i: None).start()


@pytest.mark.parametrize("name", list(REFUSED))
def test_what_spark_refuses_above_the_window_is_refused(
    name: str, spark: Any, tmp_path: Path
) -> None:
    """Spark refuses at start (``AnalysisException``) or fails the first batch
    (``StreamingQueryException``) with its reason; streamkit refuses at start with it."""
    from pyspark.errors import AnalysisException, StreamingQueryException

    from streamkit.errors import PlanError

    shape, mode, theirs, ours = REFUSED[name]
    directory = write_files(tmp_path / "in", KEY_FILES, "json")
    with tempfile.TemporaryDirectory(prefix="spark-ck-") as ck:
        writer = _spark_writer(spark, shape, mode, directory, ck)
        with pytest.raises((AnalysisException, StreamingQueryException), match=theirs):
            writer.start().awaitTermination(DEADLINE)
    with pytest.raises(PlanError, match=ours):
        _streamkit_start(shape, mode, directory)
