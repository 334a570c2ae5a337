"""Stateful operators after ``transform_with_state_in_pandas`` and
``apply_in_pandas_with_state``, through PySpark 4.3 and streamkit on the same files (one
file per micro-batch, ``available_now``, foreach-batch sinks): every batch id and its
rows equal Spark's.

- ``stamp``: :class:`Stamp` (time mode ``EventTime``, ``eventTimeColumnName="at"``)
  emits each input row as ``(k, at=ts, v)`` and, per key, an event-time timer at the
  key's latest time + 10 s that emits ``(k, at=timer, count of rows)``; a windowed count
  over ``at`` follows in append or update mode, or ``dropDuplicates(k, at)``.
- ``stamp_key`` / ``stamp_rename_key``: the same, then a count per ``(at, k)`` (or per a
  rename ``t`` of ``at``), no window: groups leave by that key (Spark's ``numRowsTotal``
  checked); ``stamp_rename_window``: a window on the rename.
- ``echo_count``: the same processor in time mode ``None`` without a watermark, then a
  count per key (update and complete mode).
- ``capped_count``: ``applyInPandasWithState`` (``NoTimeout``, append) emitting a key's
  running count once it reaches 3, then a count per key (update and complete mode).

What Spark refuses (the queries in :data:`REFUSED`), streamkit refuses at plan time
with the same reason; a processor emitting a row behind the watermark fails both
engines' queries in the same batch (``EMITTING_ROWS_OLDER_THAN_WATERMARK_NOT_ALLOWED``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from tests.differential import test_stateful as stateful
from tests.differential.engines import DEADLINE, order
from tests.differential.inputs import SCHEMA, SPARK_SCHEMA, Files, random_files, write_files
from tests.differential.lazy_runs import LazyRuns
from tests.differential.spark_functions import (
    Behind,
    Echo,
    Stamp,
    Tally,
    apply_tally,
    apply_tally_timed,
    capped,
)
from tests.differential.worker_retry import retried, worker_lost

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.slow]

Batches = list[tuple[int, list[tuple[Any, ...]]]]
STAMP_OUT = "k string, at timestamp, v bigint"


TALLY_OUT = "k string, kind string, n bigint, wm bigint"
APPLY_OUT = "k string, kind string, n bigint, s bigint, wm bigint"


def _then_apply(out: Any, then: str, op_mode: str, spark: bool) -> Any:
    """``applyInPandasWithState`` per ``k`` of ``out`` (``then``: ``apply`` for
    ``NoTimeout``, ``apply_timeout`` for ``EventTimeTimeout``)."""
    grouped = out.groupBy("k") if spark else out.group_by("k")
    timed = then == "apply_timeout"
    return grouped.applyInPandasWithState(
        apply_tally_timed if timed else apply_tally, APPLY_OUT, "n bigint, s bigint",
        op_mode.lower(), "EventTimeTimeout" if timed else "NoTimeout",
    )  # fmt: skip


def _sk() -> Any:
    import streamkit as sk

    return sk


@dataclass(frozen=True)
class Chain:
    """One query, built for both engines."""

    kind: str
    mode: str
    then: str = "window"
    op_mode: str = "Append"
    marked: bool = False
    """``capped_count`` and ``echo_count``: with a watermark on the input."""
    renamed: bool = False
    """``dedup``: ``ts`` renamed ``at`` between ``dropDuplicates`` and the function."""

    def build(self, frame: Any, spark: bool) -> Any:
        from pyspark.sql import functions as F

        sk = None if spark else _sk()
        grouped = "groupBy" if spark else "group_by"
        if self.marked:
            frame = (
                frame.withWatermark("ts", "5 seconds")
                if spark
                else frame.with_watermark("ts", "5 seconds")
            )
        if self.kind == "capped_count":
            out = getattr(frame, grouped)("k").applyInPandasWithState(
                capped, "k string, n bigint", "n bigint", self.op_mode.lower(), "NoTimeout"
            )
            return self._count(out, spark)
        if self.kind == "window_tally":  # a windowed count, then a processor over it
            marked = (
                frame.withWatermark("ts", "5 seconds")
                if spark
                else frame.with_watermark("ts", "5 seconds")
            )
            if spark:
                counts = marked.groupBy(F.window("ts", "10 seconds").alias("w"), "k").count()
                rows = counts.selectExpr("k", "w.end AS at", "count AS v")
                return rows.groupBy("k").transformWithStateInPandas(
                    Tally(), TALLY_OUT, "Append", "None"
                )
            sk = _sk()
            counts = marked.group_by(sk.window("ts", "10 seconds"), "k").agg(sk.count().alias("v"))
            rows = counts.select("k", sk.window_time("window").alias("at"), "v")
            return rows.group_by("k").transformWithStateInPandas(
                Tally(), TALLY_OUT, "Append", "None"
            )
        if self.kind == "dedup":  # drop_duplicates with a watermark, then the function
            marked = (
                frame.withWatermark("ts", "5 seconds")
                if spark
                else frame.with_watermark("ts", "5 seconds")
            )
            deduped = (
                marked.dropDuplicates(["k", "ts"]) if spark else marked.drop_duplicates(["k", "ts"])
            )
            if self.renamed:  # a plain alias keeps the event-time metadata (Spark)
                at = F.col("ts") if spark else _sk().col("ts")
                deduped = deduped.select(at.alias("at"), "k", "v")
            return _then_apply(deduped, self.then, self.op_mode, spark)
        if self.kind == "echo_count":
            out = getattr(frame, grouped)("k").transformWithStateInPandas(
                Echo(), STAMP_OUT, self.op_mode, "None"
            )
            return out if self.then == "none" else self._count(out, spark)
        marked = (
            frame.withWatermark("ts", "5 seconds")
            if spark
            else frame.with_watermark("ts", "5 seconds")
        )
        processor = Behind() if self.kind == "behind" else Stamp()
        # all six arguments positional, as PySpark allows
        out = getattr(marked, grouped)("k").transformWithStateInPandas(
            processor, STAMP_OUT, self.op_mode, "EventTime", None, "at"
        )
        return self._then_above(out, spark)

    def _then_above(self, out: Any, spark: bool) -> Any:
        """The operator ``then`` names above the processor's output ``out``."""
        from pyspark.sql import functions as F

        if self.then == "tally":  # a second processor on the first's event time
            grouped2 = out.groupBy("k") if spark else out.group_by("k")
            return grouped2.transformWithStateInPandas(Tally(), TALLY_OUT, "Append", "EventTime")
        if self.then.startswith("apply"):
            return _then_apply(out, self.then, self.op_mode, spark)
        if self.then == "dedup":
            return out.dropDuplicates(["k", "at"]) if spark else out.drop_duplicates(["k", "at"])
        if self.then == "renamed_within":  # at renamed t2, then a dedup within the watermark
            t2 = (F.col("at") if spark else _sk().col("at")).alias("t2")
            renamed = out.select(t2, "k", "v")
            return (
                renamed.dropDuplicatesWithinWatermark(["k"])
                if spark
                else renamed.drop_duplicates_within_watermark(["k"])
            )
        if self.then == "none":
            return out
        if self.then in ABOVE:
            return _above_stamp(out, self.then, spark)
        if spark:
            return out.groupBy(F.window("at", "10 seconds").alias("window")).agg(
                F.count("*").alias("n"), F.sum("v").alias("s")
            )
        sk = _sk()
        return out.group_by(sk.window("at", "10 seconds")).agg(
            sk.count().alias("n"), sk.sum("v").alias("s")
        )

    def _count(self, out: Any, spark: bool) -> Any:
        from pyspark.sql import functions as F

        if spark:
            return out.groupBy("k").agg(F.count("*").alias("n"))
        sk = _sk()
        return out.group_by("k").agg(sk.count().alias("n"))


ABOVE = ("key", "rename_key", "rename_window")
"""Aggregations above ``Stamp`` by the event time it passes on, no window: grouped by
``(at, k)`` or by a rename ``t`` of ``at``; or a window on that rename."""


def _above_stamp(out: Any, then: str, spark: bool) -> Any:
    """``out`` (Stamp's rows) counted per ``then`` (:data:`ABOVE`)."""
    from pyspark.sql import functions as F

    if spark:
        if then != "key":
            out = out.select(F.col("at").alias("t"), "k", "v")
        by = {"key": ("at", "k"), "rename_key": ("t", "k"),
              "rename_window": (F.window("t", "10 seconds").alias("window"),)}[then]  # fmt: skip
        return out.groupBy(*by).agg(F.count("*").alias("n"), F.sum("v").alias("s"))
    sk = _sk()
    if then != "key":
        out = out.select(sk.col("at").alias("t"), "k", "v")
    keys = {"key": ("at", "k"), "rename_key": ("t", "k"),
            "rename_window": (sk.window("t", "10 seconds"),)}[then]  # fmt: skip
    return out.group_by(*keys).agg(sk.count().alias("n"), sk.sum("v").alias("s"))


def _capped(frame: Any, spark: bool) -> Any:
    """``capped`` (``NoTimeout``, append) per ``k`` of ``frame``."""
    grouped = frame.groupBy("k") if spark else frame.group_by("k")
    return grouped.applyInPandasWithState(
        capped, "k string, n bigint", "n bigint", "append", "NoTimeout"
    )


def spark_rows(batch: Any) -> list[tuple[Any, ...]]:
    """Timestamps (and a window's start and end) as epoch microseconds."""
    from pyspark.sql import functions as F

    cols: list[Any] = []
    for field in batch.schema.fields:
        name, kind = field.name, field.dataType.typeName()
        if name == "window":
            cols += [F.unix_micros("window.start"), F.unix_micros("window.end")]
        elif kind == "timestamp":
            cols.append(F.unix_micros(name))
        else:
            cols.append(F.col(name))
    return sorted((tuple(r) for r in batch.select(*cols).collect()), key=order)


def streamkit_rows(table: pa.Table) -> list[tuple[Any, ...]]:
    columns: list[list[Any]] = []
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if name == "window":
            columns += [column.field(f).cast(pa.int64()).to_pylist() for f in ("start", "end")]
        elif pa.types.is_timestamp(column.type):
            columns.append(column.cast(pa.timestamp("us", "UTC")).cast(pa.int64()).to_pylist())
        else:
            columns.append(column.to_pylist())
    return sorted(zip(*columns, strict=True), key=order)


class SparkRun(stateful.SparkRun):
    """:class:`test_stateful.SparkRun` with rows as :func:`spark_rows` gives them, and the
    query's error returned rather than raised (:meth:`outcome`)."""

    def _collect(self, batch: Any, batch_id: int) -> None:
        self.seen.append((batch_id, spark_rows(batch)))

    def outcome(self) -> tuple[Batches, str | None, list[int]]:
        """The batches, the query's error (None: it finished) and, per batch, the rows its
        aggregations hold (``numRowsTotal`` of ``stateStoreSave``)."""
        from pyspark.errors import StreamingQueryException

        try:
            with contextlib.suppress(StreamingQueryException):  # exception() says why
                assert self._handle.awaitTermination(DEADLINE), "Spark did not finish"
            error = self._handle.exception()
        finally:
            self._ck.cleanup()
        progress = sorted(self._handle.recentProgress, key=lambda p: p["batchId"])
        held = [
            sum(
                o["numRowsTotal"]
                for o in p["stateOperators"]
                if o["operatorName"] == "stateStoreSave"
            )
            for p in progress
        ]
        return sorted(self.seen, key=lambda b: b[0]), None if error is None else str(error), held


def run_streamkit(chain: Chain, directory: Path) -> tuple[Batches, str | None]:
    from streamkit.errors import StreamkitError

    sk = _sk()
    seen: Batches = []
    source = sk.read_stream.files(
        str(directory), format="json", schema=SCHEMA, max_files_per_trigger=1
    )
    handle = (
        chain.build(source, spark=False).write_stream.output_mode(chain.mode)
        .trigger(available_now=True)
        .foreach_batch(lambda f, i: seen.append((i, streamkit_rows(f.to_arrow())))).start()
    )  # fmt: skip
    with contextlib.suppress(StreamkitError):  # the query failed: handle.exception says why
        assert handle.await_termination(timeout=DEADLINE), "streamkit did not finish"
    error = handle.exception
    return sorted(seen, key=lambda b: b[0]), None if error is None else str(error)


def w(start: int, end: int) -> tuple[int, int]:
    from tests.differential.inputs import micros

    return micros(start), micros(end)


def t(second: int) -> int:
    from tests.differential.inputs import micros

    return micros(second)


@dataclass(frozen=True)
class Case:
    chain: Chain
    files: Files
    expected: Batches | None = None
    held: list[int] | None = None
    """Spark's aggregation's ``numRowsTotal`` per batch, where derived by hand."""


HAND: Files = [
    [(0, "a", 1, 0), (3, "b", 2, 0)],
    [(12, "a", 3, 0)],
    [(25, "b", 4, 0), (1, "a", 5, 0)],
    [(40, "a", 6, 0)],
    [],
]
MOVES: Files = [[(0, "a", 1, 0), (1, "a", 1, 0)], [(20, "a", 2, 0), (21, "b", 2, 0)]]
CASES: dict[str, Case] = {
    # Stamp, delay 5 s, timers at a key's latest time in the batch + 10 s; W(n) in force
    # in batch n. Batch 0 (W 0): a@0 (timer 10), b@3 (timer 13). Batch 1 (W -2): a@12
    # (timer 22). Batch 2 (W 7, late mark -2): b@25 (timer 35), a@1 (timer 11: rows
    # move a key's timer). Batch 3 (W 20): a@40 moves a's timer to 50 before timers fire,
    # so nothing fires; windows over `at` ending at or before 20 close (append):
    # [0,10) a@0, b@3, a@1 (v 1+2+5) and [10,20) a@12. Batch 4 (empty file, W 35): b's
    # timer fires, emitting (b, 35, 2 rows) into [30,40); [20,30) (b@25) closes. W stays
    # 35: no batch owed.
    "stamp_window_append": Case(
        Chain("stamp", "append"),
        HAND,
        [
            (0, []),
            (1, []),
            (2, []),
            (3, [(*w(0, 10), 3, 8), (*w(10, 20), 1, 3)]),
            (4, [(*w(20, 30), 1, 4)]),
        ],
    ),
    "stamp_window_update": Case(Chain("stamp", "update", op_mode="Update"), HAND),
    "stamp_dedup": Case(Chain("stamp", "append", then="dedup"), HAND),
    # at renamed t2 before dropDuplicatesWithinWatermark(k): keys expire at t2 + 5 s
    "stamp_renamed_within": Case(Chain("stamp", "append", then="renamed_within"), HAND),
    "echo_count_update": Case(Chain("echo_count", "update"), HAND),
    "echo_count_complete": Case(Chain("echo_count", "complete"), HAND),
    "capped_count_update": Case(Chain("capped_count", "update"), HAND),
    "capped_count_complete": Case(Chain("capped_count", "complete"), HAND),
    "behind": Case(Chain("behind", "append", then="none"), HAND),
    "stamp_then_tally": Case(Chain("stamp", "append", then="tally"), HAND),
    # the last file moves the watermark: Spark runs a no-data batch after a None-mode
    # processor (its rule looks at the watermark), none for a count above
    # applyInPandasWithState (which passes no watermark on)
    "echo_none_moved": Case(Chain("echo_count", "append", then="none", marked=True), MOVES),
    "capped_count_moved": Case(Chain("capped_count", "update", marked=True), MOVES),
    "window_then_tally": Case(Chain("window_tally", "append"), HAND),
}
for _seed in (1, 2):
    _files = random_files(_seed, files=7, null_rate=0.05)
    CASES[f"random{_seed}_stamp_window_append"] = Case(Chain("stamp", "append"), _files)
    CASES[f"random{_seed}_stamp_dedup"] = Case(Chain("stamp", "append", then="dedup"), _files)
    CASES[f"random{_seed}_stamp_then_tally"] = Case(Chain("stamp", "append", then="tally"), _files)
# applyInPandasWithState after dropDuplicates (with a watermark) or after a processor
# (Spark 4 runs both): it sees the watermark passed on, which drops late rows and fires
# EventTimeTimeout; after dropDuplicates a repeated (k, ts) reaches it once
# HAND with repeats: b@3 again in batch 1, a@12 again in batch 2 (both in the
# deduplication's state, neither late)
REPEATS: Files = [HAND[0], HAND[1] + [(3, "b", 2, 0)], HAND[2] + [(12, "a", 3, 0)], *HAND[3:]]
CASES["dedup_apply"] = Case(Chain("dedup", "append", then="apply"), REPEATS)
CASES["dedup_apply_timeout"] = Case(Chain("dedup", "append", then="apply_timeout"), REPEATS)
CASES["dedup_apply_update"] = Case(
    Chain("dedup", "update", then="apply_timeout", op_mode="Update"), REPEATS
)
# ts renamed at between dropDuplicates and the function: Spark's function still sees the
# watermark (for late rows, EventTimeTimeout and getCurrentWatermarkMs)
CASES["dedup_renamed_apply_timeout"] = Case(
    Chain("dedup", "append", then="apply_timeout", renamed=True), REPEATS
)
CASES["stamp_apply"] = Case(Chain("stamp", "append", then="apply"), HAND)
# far-future last files move the watermark past every key's timeout (a processor's
# timers fire at the first, and the rows they emit set timeouts the second passes)
FAR: Files = [[(10_000, "z", 1, 0)], [(20_000, "z", 1, 0)]]
CASES["stamp_apply_timeout"] = Case(Chain("stamp", "append", then="apply_timeout"), HAND + FAR)
for _seed in (4, 5):
    _files = random_files(_seed, files=7, null_rate=0.05) + FAR
    _files[2] += _files[1][:2]  # repeats, for drop_duplicates
    CASES[f"random{_seed}_dedup_apply_timeout"] = Case(
        Chain("dedup", "append", then="apply_timeout"), _files
    )
    CASES[f"random{_seed}_stamp_apply_timeout"] = Case(
        Chain("stamp", "append", then="apply_timeout"), _files
    )
# Stamp, then an aggregation by the event time it passes on (at, or a rename t of it), no
# window (Spark's watermarkExpression on the first key carrying it). HAND as above: W in
# force none, -2, 7, 20, 35. B2: (25,b) and (1,a) arrive, then (0,a), (1,a), (3,b) leave
# (<= 7); B3: (40,a) arrives, (12,a) leaves; B4: b's timer emits (35, b, 2 rows); (25,b)
# and (35,b) leave. Held: 2, 3, 2, 2, 1 (the same server-free in
# tests/streamkit/streaming/test_watermark_key.py).
_KEYED = {
    "append": [(0, []), (1, []), (2, [(t(0), "a", 1, 1), (t(1), "a", 1, 5), (t(3), "b", 1, 2)]),
               (3, [(t(12), "a", 1, 3)]), (4, [(t(25), "b", 1, 4), (t(35), "b", 1, 2)])],
    "update": [(0, [(t(0), "a", 1, 1), (t(3), "b", 1, 2)]), (1, [(t(12), "a", 1, 3)]),
               (2, [(t(1), "a", 1, 5), (t(25), "b", 1, 4)]), (3, [(t(40), "a", 1, 6)]),
               (4, [(t(35), "b", 1, 2)])],
}  # fmt: skip
for _then in ("key", "rename_key"):
    for _mode in ("append", "update"):
        CASES[f"stamp_{_then}_{_mode}"] = Case(
            Chain("stamp", _mode, then=_then, op_mode=_mode.capitalize()), HAND,
            _KEYED[_mode], [2, 3, 2, 2, 1],
        )  # fmt: skip
# a window on the rename: stamp_window_append's batches; windows held 1, 2, 3 ([20,30)
# and [0,10) again), 2 (+[40,50), -[0,10), -[10,20)), 2 (+[30,40), -[20,30))
CASES["stamp_rename_window_append"] = Case(
    Chain("stamp", "append", then="rename_window"),
    HAND,
    CASES["stamp_window_append"].expected,
    [1, 2, 3, 2, 2],
)
CASES["random1_stamp_key_append"] = Case(
    Chain("stamp", "append", then="key"), random_files(1, files=7, null_rate=0.05)
)
CASES["random3_capped_count_update"] = Case(
    Chain("capped_count", "update"), random_files(3, files=6, null_rate=0.05)
)

CONCURRENT = 2


Outcome = tuple[Path, tuple[Batches, str | None, list[int]]]


def spark_outcomes(
    session: Any, cases: Mapping[str, Case], tmp_path_factory: pytest.TempPathFactory
) -> Mapping[str, Outcome]:
    """Each case's directory and Spark's outcome (:meth:`SparkRun.outcome`), run when a
    test first asks for it, ``CONCURRENT`` queries at a time
    (:mod:`~tests.differential.lazy_runs`); a run of selected tests starts only their
    queries."""
    dirs = {n: write_files(tmp_path_factory.mktemp(n), c.files, "json") for n, c in cases.items()}

    def chunk(names: list[str]) -> dict[str, Outcome]:
        started = {n: SparkRun(session, cases[n].chain, dirs[n]) for n in names}
        out = {}
        for n, run in started.items():
            again = partial(lambda n: SparkRun(session, cases[n].chain, dirs[n]).outcome(), n)
            out[n] = (dirs[n], retried(run.outcome, again, lost=lambda r: worker_lost(r[1])))
        return out

    return LazyRuns(list(dirs), chunk, CONCURRENT)


@pytest.fixture(scope="module")
def runs(rocksdb: Any, tmp_path_factory: pytest.TempPathFactory) -> Mapping[str, Outcome]:
    """Spark's outcome of each case (:func:`spark_outcomes`)."""
    return spark_outcomes(rocksdb, CASES, tmp_path_factory)


ERROR = "EMITTING_ROWS_OLDER_THAN_WATERMARK_NOT_ALLOWED"


@pytest.mark.parametrize("name", list(CASES))
def test_streamkit_matches_spark(name: str, runs: Mapping[str, Outcome]) -> None:
    check_against_spark(CASES[name], runs[name])


def check_against_spark(case: Case, run: Outcome) -> None:
    """Spark's outcome of ``case`` (``run``) is the hand derivation, where given, and its
    functions ran (and timed out) where the case needs them to; then streamkit gives the
    same batches, and fails where Spark failed, with the same error."""
    directory, (theirs, their_error, held) = run
    assert their_error is None or ERROR in their_error, f"Spark failed: {their_error}"
    if case.expected is not None:
        assert theirs == case.expected, "Spark disagrees with the hand derivation"
    if case.held is not None:
        assert held == case.held, "Spark's numRowsTotal disagrees with the hand derivation"
    if case.chain.then.startswith("apply"):  # Spark ran the function (and its timeouts)
        kinds = {r[1] for _, rows in theirs for r in rows}
        assert "data" in kinds, "Spark's function emitted nothing: the case tests nothing"
        if case.chain.then == "apply_timeout":
            assert "timeout" in kinds, "no key timed out in Spark: the case tests no timeout"
    ours, our_error = run_streamkit(case.chain, directory)
    assert [b for b, _ in ours] == [b for b, _ in theirs], "batch ids differ"
    for (bid, rows), (_, their_rows) in zip(ours, theirs, strict=True):
        assert rows == their_rows, f"batch {bid}: streamkit {rows} vs Spark {their_rows}"
    if their_error is None:
        assert our_error is None, our_error
    else:
        assert ERROR in their_error, their_error
        assert our_error is not None
        assert ERROR in our_error, our_error


def _capped_timeout_count(frame: Any, spark: bool) -> Any:
    """``capped`` with ``EventTimeTimeout`` (never set), then a count per key."""
    from pyspark.sql import functions as F

    marked = (
        frame.withWatermark("ts", "5 seconds") if spark else frame.with_watermark("ts", "5 seconds")
    )
    grouped = marked.groupBy("k") if spark else marked.group_by("k")
    out = grouped.applyInPandasWithState(
        capped, "k string, n bigint", "n bigint", "append", "EventTimeTimeout"
    )
    if spark:
        return out.groupBy("k").agg(F.count("*").alias("n"))
    return out.group_by("k").agg(_sk().count().alias("n"))


def _window_no_etcn(frame: Any, spark: bool) -> Any:
    """Stamp without ``eventTimeColumnName``, then a windowed count in append mode."""
    from pyspark.sql import functions as F

    marked = (
        frame.withWatermark("ts", "5 seconds") if spark else frame.with_watermark("ts", "5 seconds")
    )
    grouped = marked.groupBy("k") if spark else marked.group_by("k")
    out = grouped.transformWithStateInPandas(Stamp(), STAMP_OUT, "Append", "EventTime")
    if spark:
        return out.groupBy(F.window("at", "10 seconds")).count()
    sk = _sk()
    return out.group_by(sk.window("at", "10 seconds")).agg(sk.count().alias("count"))


REFUSED: dict[str, tuple[Callable[[Any, bool], Any], str, str]] = {
    # name: (query builder, output mode, what both engines' messages say)
    "event_time_column_without_watermark": (
        lambda f, spark: (f.groupBy("k") if spark else f.group_by("k")).transformWithStateInPandas(
            Echo(), STAMP_OUT, "Append", "None", eventTimeColumnName="at"
        ),
        "append",
        "CANNOT_ASSIGN_EVENT_TIME_COLUMN_WITHOUT_WATERMARK",
    ),
    "window_append_without_event_time_column": (
        _window_no_etcn,
        "append",
        "without watermark",
    ),
    "apply_update_then_count": (
        lambda f, spark: Chain("capped_count", "update", op_mode="Update").build(f, spark),
        "update",
        "applyInPandasWithState in update mode is not supported with aggregation",
    ),
    "apply_event_time_timeout_then_count": (_capped_timeout_count, "update", "correctness"),
    "apply_after_apply": (
        lambda f, spark: _capped(_capped(f, spark), spark),
        "append",
        "Multiple applyInPandasWithStates are not supported",
    ),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_refused_as_spark_refuses(name: str, rocksdb: Any, tmp_path: Path) -> None:
    """Spark refuses the query when it starts; streamkit when it is built or started,
    both naming the same reason."""
    from streamkit.errors import PlanError

    build, mode, reason = REFUSED[name]
    directory = write_files(tmp_path / "in", HAND, "json")
    stream = rocksdb.readStream.schema(SPARK_SCHEMA).json(str(directory))
    with pytest.raises(Exception) as spark_error:  # noqa: PT011 (Spark's AnalysisException)
        build(stream, True).writeStream.outputMode(mode).format("noop").option(
            "checkpointLocation", str(tmp_path / "ck")
        ).start().stop()
    assert reason.lower() in str(spark_error.value).lower(), str(spark_error.value)[:600]
    sk = _sk()
    source = sk.read_stream.files(str(directory), format="json", schema=SCHEMA)
    with pytest.raises(PlanError) as ours:
        build(source, False).write_stream.output_mode(mode).foreach_batch(
            lambda f, i: None
        ).start().stop()
    assert reason.lower() in str(ours.value).lower(), str(ours.value)


def test_batch_event_time_column_refused(rocksdb: Any) -> None:
    """A batch DataFrame: Spark refuses ``eventTimeColumnName`` even after
    ``withWatermark``; so does streamkit."""
    from streamkit.errors import PlanError
    from tests.differential.inputs import rows_table

    frame = rocksdb.createDataFrame([(1, "a", 1)], "s bigint, k string, v bigint").selectExpr(
        "timestamp_seconds(s) AS ts", "k", "v"
    )
    with pytest.raises(Exception, match="CANNOT_ASSIGN_EVENT_TIME_COLUMN_WITHOUT_WATERMARK"):
        frame.withWatermark("ts", "5 seconds").groupBy("k").transformWithStateInPandas(
            Echo(), STAMP_OUT, "Append", "None", eventTimeColumnName="at"
        ).collect()
    batch = _sk().from_arrow(rows_table([(1, "a", 1, 0)])).with_watermark("ts", "5 seconds")
    with pytest.raises(PlanError, match="CANNOT_ASSIGN_EVENT_TIME_COLUMN_WITHOUT_WATERMARK"):
        batch.group_by("k").transform_with_state_in_pandas(
            Echo(), STAMP_OUT, "append", "None", event_time_column_name="at"
        ).to_arrow()
