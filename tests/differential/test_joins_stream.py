"""Stream-stream joins through PySpark and streamkit on the same files: two file streams
(``left/`` and ``right/``, one file per micro-batch on each side, ``available_now``), each
with its own watermark, joined on a key and a time range; a foreach-batch sink records
every batch. Every batch id and its rows must equal Spark's, and so must the number of
rows buffered in the join state after each batch (Spark's ``numRowsTotal``): that is how
eviction by the state watermark is compared. Hand-made cases first check Spark against
the derivation in their comment; seeded random cases add late rows, null keys, empty
files and sides of different lengths.

Times are seconds after 2024-01-01T00:00Z; ``W(n)`` is the global watermark after batch n
(the minimum of the two sides' watermarks).
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tests.differential.engines import DEADLINE, order
from tests.differential.inputs import MTIME0, iso, micros

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.slow]

SideRow = tuple[int | None, str | None, int]
"""``(t, key, value)``: event time in seconds (None: null), join key, a value."""
SideFiles = list[list[SideRow]]
OutRow = tuple[Any, ...]
Batches = list[tuple[int, list[OutRow]]]
LEFT_DDL = "lt timestamp, lk string, lv bigint"
RIGHT_DDL = "rt timestamp, rk string, rv bigint"
CONCURRENT = 8
"""Spark queries run at once (more made py4j's callback channel fail on a busy machine)."""


@dataclass(frozen=True)
class JoinOp:
    """``left.join(right, lk == rk AND rt BETWEEN lt - before AND lt + after, how)``,
    with watermark delays ``left_delay`` and ``right_delay`` (seconds)."""

    how: str
    before: int = 5
    after: int = 10
    left_delay: int = 10
    right_delay: int = 5

    @property
    def spark_how(self) -> str:
        return {"left": "left_outer", "right": "right_outer", "full": "full_outer"}.get(
            self.how, self.how
        )

    def spark(self, left: Any, right: Any) -> Any:
        from pyspark.sql import functions as F

        cond = F.expr(
            f"lk = rk AND rt >= lt - interval {self.before} seconds "
            f"AND rt <= lt + interval {self.after} seconds"
        )
        lw = left.withWatermark("lt", f"{self.left_delay} seconds")
        rw = right.withWatermark("rt", f"{self.right_delay} seconds")
        return lw.join(rw, cond, self.spark_how).select(
            F.unix_micros("lt"), "lk", "lv", F.unix_micros("rt"), "rk", "rv"
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
        return lw.join(rw, cond, self.how)


def write_side(directory: Path, files: SideFiles, time_col: str, key: str, val: str) -> Path:
    """JSON lines files ``part-NNNN.json``, mtimes one second apart (arrival order)."""
    directory.mkdir(parents=True, exist_ok=True)
    for index, rows in enumerate(files):
        path = directory / f"part-{index:04d}.json"
        lines = [json.dumps({time_col: iso(t), key: k, val: v}) + "\n" for t, k, v in rows]
        path.write_text("".join(lines))
        os.utime(path, (MTIME0 + index, MTIME0 + index))
    return directory


def out_rows(table: pa.Table) -> list[OutRow]:
    cols = []
    for column in table.columns:
        array = column.combine_chunks()
        if pa.types.is_timestamp(array.type):
            array = pc.cast(array, pa.int64())
        cols.append(array.to_pylist())
    return sorted(zip(*cols, strict=True), key=order)


def spark_rows(batch: Any) -> list[OutRow]:
    return sorted((tuple(r) for r in batch.collect()), key=order)


class SparkJoinRun:
    """Spark's query over ``left/`` and ``right/`` of one directory; every batch's rows
    and the join state's row count after each batch."""

    def __init__(self, spark: Any, op: JoinOp, directory: Path) -> None:
        self.seen: Batches = []
        self._ck = tempfile.TemporaryDirectory(prefix="spark-ck-")

        def stream(side: str, ddl: str) -> Any:
            reader = spark.readStream.schema(ddl).option("maxFilesPerTrigger", 1)
            return reader.json(str(directory / side))

        joined = op.spark(stream("left", LEFT_DDL), stream("right", RIGHT_DDL))
        self._handle = (
            joined.writeStream.outputMode("append").trigger(availableNow=True)
            .option("checkpointLocation", self._ck.name)
            .foreachBatch(lambda b, i: self.seen.append((i, spark_rows(b))))
            .start()
        )  # fmt: skip

    def result(self) -> tuple[Batches, list[int]]:
        try:
            assert self._handle.awaitTermination(DEADLINE), "Spark did not finish"
            assert self._handle.exception() is None, str(self._handle.exception())
            states = [
                int(p["stateOperators"][0]["numRowsTotal"])
                for p in sorted(self._handle.recentProgress, key=lambda p: p["batchId"])
            ]
        finally:
            self._ck.cleanup()
        return sorted(self.seen, key=lambda b: b[0]), states


def run_streamkit(op: JoinOp, directory: Path) -> tuple[Batches, list[int]]:
    import streamkit as sk

    seen: Batches = []

    def side(name: str, schema: pa.Schema) -> Any:
        return sk.read_stream.files(
            str(directory / name), format="json", schema=schema, max_files_per_trigger=1
        )

    ts = pa.timestamp("us", "UTC")
    left = side("left", pa.schema([("lt", ts), ("lk", pa.string()), ("lv", pa.int64())]))
    right = side("right", pa.schema([("rt", ts), ("rk", pa.string()), ("rv", pa.int64())]))
    handle = (
        op.streamkit(left, right).write_stream.output_mode("append").trigger(available_now=True)
        .foreach_batch(lambda f, i: seen.append((i, out_rows(f.to_arrow())))).start()
    )  # fmt: skip
    assert handle.await_termination(timeout=DEADLINE), "streamkit did not finish"
    assert handle.exception is None, repr(handle.exception)
    states = [p.state_rows for p in handle.recent_progress if p.num_input_rows >= 0]
    return sorted(seen, key=lambda b: b[0]), states


def random_side(rng: random.Random, files: int, spread: int) -> SideFiles:
    """A clock advancing 0..8 s per file, rows up to ``spread`` s behind it (some behind
    the watermark), keys a/b/c or null, one empty file in six."""
    clock: int = 20
    out: SideFiles = []
    for index in range(files):
        clock += rng.randint(0, 8)
        if index and rng.random() < 1 / 6:
            out.append([])
            continue
        rows: list[SideRow] = []
        for _ in range(rng.randint(1, 5)):
            behind = rng.choice([0, 0, rng.randint(0, 6), rng.randint(0, spread)])
            key = None if rng.random() < 0.1 else rng.choice("abc")
            rows.append((clock - behind, key, rng.randint(0, 99)))
        out.append(rows)
    return out


def L(t: int | None, k: str | None, v: int) -> OutRow:
    """An output row with only the left side."""
    return (None if t is None else micros(t), k, v, None, None, None)


def R(t: int, k: str, v: int) -> OutRow:
    """An output row with only the right side."""
    return (None, None, None, micros(t), k, v)


def P(left: SideRow, right: SideRow) -> OutRow:
    """A joined pair."""
    (lt, lk, lv), (rt, rk, rv) = left, right
    assert lt is not None
    assert rt is not None
    return (micros(lt), lk, lv, micros(rt), rk, rv)


@dataclass(frozen=True)
class Case:
    op: JoinOp
    left: SideFiles
    right: SideFiles
    expected: Batches | None = None
    """Hand-derived batches Spark must give (None: random input, Spark is the oracle)."""
    states: list[int] | None = None
    """Hand-derived rows buffered after each batch."""


# Condition: rt in [lt - 5, lt + 10]; delays left 10, right 5. With W the watermark in
# force, the left buffer drops lt <= W - 10 s - 1 ms (from rt <= lt + 10, i.e.
# lt >= rt - 10) and the right buffer rt <= W - 5 s - 1 ms (from rt >= lt - 5).
# Batch 0: L a@100 b@100, R a@105: pair (a100, a105). Left max 100 -> 90, right max
#   105 -> 100: W = min = 90. Buffered 3.
# Batch 1 (W in force 90): L a@150, R a@112: a150 vs a105 no (105 < 145); a112 vs a100
#   no (112 > 110), vs a150 no. Nothing evicted. Left 150 -> 140, right 112 -> 107:
#   W = 107. Buffered 5.
# Batch 2 (in force 107; late threshold: 90, the one in force in batch 1): R b@98 (not
#   late) pairs with b100 (98 in [95, 110]); a@160 pairs with a150. b@98 is not buffered
#   (98 <= 107 - 5 - 0.001). Evicting with 107 drops nothing (left <= 96.999, right <=
#   101.999). Right 160 -> 155: W = 140. Buffered 6.
# Batch 3, no data (in force 140): left drops <= 129.999 (a100, b100), right <= 134.999
#   (a105, a112). Buffered 2.
HAND = {
    "inner_pairs_across_batches": Case(
        JoinOp("inner"),
        [[(100, "a", 1), (100, "b", 2)], [(150, "a", 3)]],
        [[(105, "a", 10)], [(112, "a", 11)], [(98, "b", 12), (160, "a", 13)]],
        [
            (0, [P((100, "a", 1), (105, "a", 10))]),
            (1, []),
            (2, [P((100, "b", 2), (98, "b", 12)), P((150, "a", 3), (160, "a", 13))]),
            (3, []),
        ],
        [3, 5, 6, 2],
    ),
    # Left outer, same condition and delays. Batch 0: pair (a100, a105); W = min(90, 100)
    # = 90. Batch 1 (in force 90): c@130 and z@140 match nothing; nothing evicted; W =
    # min(120, 135) = 120. Batch 2 (the left side's empty file; in force 120): the left
    # buffer drops lt <= 109.999: a100 (matched) and b100, which never matched and is
    # emitted with nulls; the right buffer drops a105. Buffered: c130, z140.
    "left_outer_nulls_when_watermark_passes": Case(
        JoinOp("left"),
        [[(100, "a", 1), (100, "b", 2)], [(130, "c", 3)], []],
        [[(105, "a", 10)], [(140, "z", 11)]],
        [(0, [P((100, "a", 1), (105, "a", 10))]), (1, []), (2, [L(100, "b", 2)])],
        [3, 5, 2],
    ),
    # Right outer, mirrored: the right buffer drops rt <= W - 5 s - 1 ms. Batch 0: pair
    # (a100, a102); W = min(90, 105) = 90. Batch 1 (in force 90):
    # nothing pairs; W = min(140, 145) = 140. Batch 2, no data (in force 140): right
    # drops <= 134.999: a102 (matched) and y110 (never matched: emitted with nulls); left
    # drops <= 129.999: a100, b100.
    "right_outer_nulls_in_no_data_batch": Case(
        JoinOp("right"),
        [[(100, "a", 1), (100, "b", 2)], [(150, "c", 3)]],
        [[(102, "a", 10), (110, "y", 12)], [(150, "z", 11)]],
        [(0, [P((100, "a", 1), (102, "a", 10))]), (1, []), (2, [R(110, "y", 12)])],
        [4, 6, 2],
    ),
}


CASES: dict[str, Case] = dict(HAND)
for _seed in (1, 2, 3, 4, 5):
    _rng = random.Random(_seed)
    _left, _right = random_side(_rng, 7, 25), random_side(_rng, 5 + _seed % 3, 25)
    # seeds 4 and 5: a one-sided range (rt in [lt, lt + 15]) and other delays
    _op = JoinOp("inner") if _seed <= 3 else JoinOp("inner", 0, 15, 3, 8)
    for _how in ("inner", "left", "right", "full"):
        CASES[f"random{_seed}_{_how}"] = Case(replace(_op, how=_how), _left, _right)


@pytest.fixture(scope="module")
def runs(
    spark: Any, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> dict[str, Any]:
    """The selected cases' directories and Spark's batches and state sizes (Spark's
    queries run concurrently)."""
    selected = {
        item.callspec.params["name"]
        for item in request.session.items
        if getattr(item, "module", None) is request.module and hasattr(item, "callspec")
    }
    dirs: dict[str, Path] = {}
    for name, case in CASES.items():
        if name not in selected:
            continue
        root = tmp_path_factory.mktemp(name)
        write_side(root / "left", case.left, "lt", "lk", "lv")
        write_side(root / "right", case.right, "rt", "rk", "rv")
        dirs[name] = root
    names, results = list(dirs), {}  # type: list[str], dict[str, Any]
    for at in range(0, len(names), CONCURRENT):  # a few at a time: py4j's callbacks
        chunk = names[at : at + CONCURRENT]
        started = {n: SparkJoinRun(spark, CASES[n].op, dirs[n]) for n in chunk}
        results |= {n: (dirs[n], run.result()) for n, run in started.items()}
    return results


@pytest.mark.parametrize("name", list(CASES))
def test_stream_join_matches_spark(name: str, runs: dict[str, Any]) -> None:
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
    assert our_states == their_states, "rows buffered in the join state differ"
