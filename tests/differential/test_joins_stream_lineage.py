"""Stream-stream joins whose event times reach the join through a projection after
``with_watermark`` (README rule 1b), through PySpark and streamkit on the same files (two
file streams, one file per micro-batch on each side, ``available_now``): a plain rename
(``lt AS l_at``) on one side or both, a column computed from it (``lt + 2 s AS l_at``,
which carries no watermark), ``lt`` kept beside such a column, and an aggregation or
``drop_duplicates`` above the join on a renamed column. Every batch id and its rows must
equal Spark's, and so must the rows held by the stateful operators after each batch
(``numRowsTotal``: how eviction is compared) and the rows dropped as late per batch
(``numRowsDroppedByWatermark``, against streamkit's late rows). Hand-made cases check
Spark against the derivation in ``tests/streamkit/streaming/test_stream_join_lineage.py``
and ``test_joins_stream.py``; seeded random cases take Spark as the oracle. Two shapes
Spark fails or refuses are refused by streamkit at start.

Condition: ``lk = rk AND r BETWEEN l - before AND l + after`` on the columns ``l`` and
``r`` that reach the join; times are seconds after 2024-01-01T00:00Z.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from tests.differential.engines import order
from tests.differential.inputs import micros
from tests.differential.test_joins_stream import (
    HAND,
    P,
    SideFiles,
    random_side,
)
from tests.differential.test_joins_stream_agg import (
    HAND_PROBE,
    Batches,
    Case,
    SparkRun,
    sides,
    spark_runs,
    streamkit_progress,
    write_case,
)

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.slow]

SHIFT = 2
"""Seconds a computed event time adds to the column it is computed from."""


@dataclass(frozen=True)
class Lineage:
    """A join whose sides give ``left`` / ``right``: ``plain`` (the watermarked column
    itself), ``rename`` (``<t> AS <x>_at``), ``computed`` (``<t> + 2 s AS <x>_at``, ``<t>``
    dropped), ``kept`` (``<t>`` kept, ``<x>_at = <t> + 2 s`` added), ``copy`` (``<t>`` kept,
    ``<x>_at = <t>`` added); ``post``: ``agg`` (count and sum per 10 s window of the left
    time column and ``lk``), ``agg_after`` (the same on the left's watermarked column
    renamed after the join), ``dedup`` (``select(l, lk)`` then ``drop_duplicates([lk, l])``);
    above the join on ``lt`` renamed there (``select(lt AS t, lk)``): ``dedup_after``
    (``drop_duplicates([lk, t])``), ``dedup_after_within``
    (``drop_duplicates_within_watermark([lk])``), ``dedup_after_copy`` (``lt`` kept beside
    ``t``), ``dedup_after_computed`` (``lt + 2 s AS lt``, no rename: carries nothing); or
    nothing."""

    how: str = "inner"
    left: str = "rename"
    right: str = "rename"
    post: str = ""
    before: int = 5
    after: int = 10
    left_delay: int = 10
    right_delay: int = 5
    mode: str = "append"

    def column(self, side: str) -> str:
        kind, time = (self.left, "lt") if side == "left" else (self.right, "rt")
        return time if kind == "plain" else f"{time[0]}_at"

    def _side(self, frame: Any, side: str, col: Any, shift: Any, wm: str) -> Any:
        kind, time = (self.left, "lt") if side == "left" else (self.right, "rt")
        delay = self.left_delay if side == "left" else self.right_delay
        rest = ["lk", "lv"] if side == "left" else ["rk", "rv"]
        name, marked = self.column(side), getattr(frame, wm)(time, f"{delay} seconds")
        if kind == "plain":
            return marked
        if kind == "rename":
            return marked.select(col(time).alias(name), *rest)
        if kind == "computed":
            return marked.select((col(time) + shift).alias(name), *rest)
        added = col(time) + shift if kind == "kept" else col(time)
        return marked.withColumn(name, added) if wm == "withWatermark" else (
            marked.with_column(name, added)
        )  # fmt: skip

    def _dedup_after(self, joined: Any, col: Any, shift: Any, dedup: str) -> Any:
        """A ``dedup_after*`` post on the joined rows (``dedup``: the method's name)."""
        if self.post == "dedup_after_computed":
            return getattr(joined.select((col("lt") + shift).alias("lt"), "lk"), dedup)(
                ["lk", "lt"]
            )
        kept = ["lt"] if self.post == "dedup_after_copy" else []
        renamed = joined.select(*kept, col("lt").alias("t"), "lk")
        if self.post == "dedup_after_within":
            within = "dropDuplicatesWithinWatermark" if dedup == "dropDuplicates" else (
                "drop_duplicates_within_watermark"
            )  # fmt: skip
            return getattr(renamed, within)(["lk"])
        return getattr(renamed, dedup)(["lk", "t"])

    def spark(self, left: Any, right: Any) -> Any:
        from pyspark.sql import functions as F

        shift = F.expr(f"interval {SHIFT} seconds")
        lw = self._side(left, "left", F.col, shift, "withWatermark")
        rw = self._side(right, "right", F.col, shift, "withWatermark")
        lc, rc = self.column("left"), self.column("right")
        cond = F.expr(
            f"lk = rk AND {rc} >= {lc} - interval {self.before} seconds "
            f"AND {rc} <= {lc} + interval {self.after} seconds"
        )
        how = {"left": "left_outer", "right": "right_outer", "full": "full_outer"}
        joined = lw.join(rw, cond, how.get(self.how, self.how))
        if self.post == "dedup":
            return joined.select(lc, "lk").dropDuplicates(["lk", lc])
        if self.post.startswith("dedup_after"):
            return self._dedup_after(joined, F.col, shift, "dropDuplicates")
        if self.post == "agg_after":
            joined = joined.select(F.col("lt").alias("l_at"), "lk", "rv")
        if self.post.startswith("agg"):
            by = F.window("l_at", "10 seconds").alias("window")
            return joined.groupBy(by, "lk").agg(
                F.count(F.lit(1)).alias("n"), F.sum("rv").alias("s")
            )
        return joined

    def streamkit(self, left: Any, right: Any) -> Any:
        from datetime import timedelta

        import streamkit as sk

        shift = timedelta(seconds=SHIFT)
        lw = self._side(left, "left", sk.col, shift, "with_watermark")
        rw = self._side(right, "right", sk.col, shift, "with_watermark")
        lc, rc = self.column("left"), self.column("right")
        cond = (
            (sk.col("lk") == sk.col("rk"))
            & (sk.col(rc) >= sk.col(lc) - timedelta(seconds=self.before))
            & (sk.col(rc) <= sk.col(lc) + timedelta(seconds=self.after))
        )
        joined = lw.join(rw, cond, self.how)
        if self.post == "dedup":
            return joined.select(lc, "lk").drop_duplicates(["lk", lc])
        if self.post.startswith("dedup_after"):
            return self._dedup_after(joined, sk.col, shift, "drop_duplicates")
        if self.post == "agg_after":
            joined = joined.select(sk.col("lt").alias("l_at"), "lk", "rv")
        if self.post.startswith("agg"):
            by = sk.window("l_at", "10 seconds")
            return joined.group_by(by, "lk").agg(sk.count().alias("n"), sk.sum("rv").alias("s"))
        return joined


Result = tuple[Batches, list[int], list[int]]
"""Batches, rows held after each batch, rows dropped as late in each batch."""


def spark_result(run: SparkRun) -> Result | str:
    """What Spark's query emitted, held and dropped as late; or the error that stopped it."""
    batches, progress, error = run.outcome()
    if error is not None:
        return error
    ops = [p["stateOperators"] for p in progress]
    held = [sum(int(s["numRowsTotal"]) for s in o) for o in ops]
    # the join is the first operator of the plan's chain (the last one listed)
    late = [int(o[-1]["numRowsDroppedByWatermark"]) for o in ops]
    return batches, held, late


def run_streamkit(op: Lineage, directory: Path) -> Result:
    batches, progress = streamkit_progress(op, directory)
    return batches, [p.state_rows for p in progress], [p.late_rows for p in progress]


def at(t: int | None) -> int | None:
    return None if t is None else micros(t)


def row(*values: Any, times: tuple[int, ...]) -> tuple[Any, ...]:
    """An output row whose positions ``times`` are event times (seconds -> micros)."""
    return tuple(at(v) if i in times else v for i, v in enumerate(values))


_inner, _left, _right = (
    HAND[n]
    for n in (
        "inner_pairs_across_batches",
        "left_outer_nulls_when_watermark_passes",
        "right_outer_nulls_in_no_data_batch",
    )
)
_late_left: SideFiles = [
    [(100, "a", 1)], [(150, "a", 2)], [(120, "a", 3)], [(95, "a", 4), (180, "b", 5)]
]  # fmt: skip
_late_right: SideFiles = [[(105, "a", 10)], [(155, "a", 11)], [(118, "a", 12)], [(182, "b", 13)]]
_kept_left: SideFiles = [[(100, "a", 1), (111, "b", 2)], [(135, "c", 3)], [(140, "d", 4)]]
_kept_right: SideFiles = [[(105, "a", 10)], [(127, "z", 11)], [], [(123, "b", 12)]]
_agg = Lineage(post="agg", before=0, after=10, left_delay=5, right_delay=5)
_dedup_left: SideFiles = [
    [(100, "a", 1)], [(112, "a", 2)], [(150, "a", 3)], [(170, "a", 4)], [(190, "a", 5)]
]  # fmt: skip
_dedup_right: SideFiles = [
    [(105, "a", 10), (108, "a", 11)], [(115, "a", 12)], [(152, "a", 13)], [(175, "a", 14)],
    [(195, "a", 15)],
]  # fmt: skip
_dedup_join_held = [3, 5, 7, 4, 5, 4]
_t = (0, 3)  # the event-time positions of a joined row
CASES: dict[str, Case[Lineage]] = {
    # renames change nothing: the plain columns' hand cases (test_joins_stream.py)
    "inner_renamed": Case(Lineage(), _inner.left, _inner.right, _inner.expected, _inner.states),
    "left_renamed": Case(Lineage("left"), _left.left, _left.right, _left.expected, _left.states),
    "right_renamed_right_only": Case(
        Lineage("right", left="plain"), _right.left, _right.right, _right.expected, _right.states
    ),
    "full_renamed_left_only": Case(
        Lineage("full", right="plain"), _left.left, _left.right, _left.expected, _left.states
    ),
    # a late row judged on the renamed column (derivation in test_stream_join_lineage.py)
    "inner_renamed_late": Case(
        Lineage(),
        _late_left,
        _late_right,
        [
            (0, [row(100, "a", 1, 105, "a", 10, times=_t)]),
            (1, [row(150, "a", 2, 155, "a", 11, times=_t)]),
            (2, [row(120, "a", 3, 118, "a", 12, times=_t)]),
            (3, [row(180, "b", 5, 182, "b", 13, times=_t)]),
            (4, []),
        ],
        [2, 4, 2, 4, 2],
    ),
    # l_at = lt + 2 s carries no watermark: neither buffer is cleaned and no batch is
    # owed (the inner hand case's no-data batch 3 does not run); a112 now meets a102
    "inner_computed_left": Case(
        Lineage(left="computed"),
        _inner.left,
        _inner.right,
        [
            (0, [P((102, "a", 1), (105, "a", 10))]),
            (1, [P((102, "a", 1), (112, "a", 11))]),
            (2, [P((102, "b", 2), (98, "b", 12)), P((152, "a", 3), (160, "a", 13))]),
        ],
        [3, 5, 7],
    ),
    "left_computed_left": Case(
        Lineage("left", left="computed"),
        _left.left,
        _left.right,
        [(0, [P((102, "a", 1), (105, "a", 10))]), (1, []), (2, [])],
        [3, 5, 5],
    ),
    # lt kept beside l_at = lt + 2 s: the left bound from the range on l_at is applied to
    # lt, which drops b111 (l_at 113) in batch 2, before b123 could meet it in batch 3
    "left_kept_computed": Case(
        Lineage("left", left="kept"),
        _kept_left,
        _kept_right,
        [
            (0, [row(100, "a", 1, 102, 105, "a", 10, times=(0, 3, 4))]),
            (1, []),
            (2, [row(111, "b", 2, 113, None, None, None, times=(0, 3, 4))]),
            (3, []),
        ],
        [3, 5, 4, 5],
    ),
    # an aggregation above the join on a renamed column: test_joins_stream_agg's case
    "agg_renamed_before_join": Case(
        _agg, HAND_PROBE.left, HAND_PROBE.right, HAND_PROBE.expected, HAND_PROBE.states
    ),
    "agg_renamed_after_join": Case(
        replace(_agg, left="plain", right="plain", post="agg_after"),
        HAND_PROBE.left,
        HAND_PROBE.right,
        HAND_PROBE.expected,
        HAND_PROBE.states,
    ),
}
# drop_duplicates above the join on lt renamed between them (select(lt AS t, lk)), or on
# lt + 2 s AS lt (carries nothing): (emitted t per batch, keys held after each batch),
# derivation in test_stream_join_lineage.py
_DEDUP_AFTER = {
    "dedup_after": ([100, 112, 150, 170, 190, None], [1, 2, 3, 2, 3, 2]),
    "dedup_after_within": ([100, None, None, None, 190, None], [1, 1, 1, 0, 1, 1]),
    "dedup_after_computed": ([102, 114, 152, 172, 192, None], [1, 2, 3, 4, 5, 5]),
}
for _post, (_out, _keys) in _DEDUP_AFTER.items():
    CASES[f"{_post}_join"] = Case(
        Lineage(left="plain", right="plain", post=_post),
        _dedup_left,
        _dedup_right,
        [(i, [] if t is None else [row(t, "a", times=(0,))]) for i, t in enumerate(_out)],
        [j + k for j, k in zip(_dedup_join_held, _keys, strict=True)],
    )
_random: dict[int, tuple[SideFiles, SideFiles]] = {}
for _seed in (1, 2, 3):
    _rng = random.Random(100 + _seed)
    _l, _r = _random[_seed] = random_side(_rng, 7, 25), random_side(_rng, 5 + _seed % 3, 25)
    for _how in ("inner", "left", "right", "full") if _seed == 1 else ("inner", "left"):
        CASES[f"random{_seed}_{_how}_renamed"] = Case(Lineage(_how), _l, _r)
    CASES[f"random{_seed}_left_computed"] = Case(Lineage("left", left="computed"), _l, _r)
    CASES[f"random{_seed}_left_kept"] = Case(Lineage("left", left="kept"), _l, _r)
    CASES[f"random{_seed}_dedup_renamed"] = Case(Lineage(post="dedup"), _l, _r)
    if _seed < 3:
        _after = Lineage(left="plain", right="plain", post="dedup_after")
        CASES[f"random{_seed}_dedup_renamed_after_join"] = Case(_after, _l, _r)
CASES["random2_agg_renamed"] = Case(replace(_agg, before=5), *_random[2])


@pytest.fixture(scope="module")
def runs(
    spark: Any, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> dict[str, Any]:
    """The selected cases' directories and Spark's results (a few queries at a time)."""
    return spark_runs(spark, request, tmp_path_factory, CASES, spark_result)


@pytest.mark.parametrize("name", list(CASES))
def test_join_on_carried_event_times_matches_spark(name: str, runs: dict[str, Any]) -> None:
    case = CASES[name]
    directory, theirs = runs[name]
    assert not isinstance(theirs, str), f"Spark failed: {theirs}"
    their_batches, their_held, their_late = theirs
    if case.expected is not None:
        assert their_batches == case.expected, "Spark disagrees with the hand derivation"
    if case.states is not None:
        assert their_held == case.states, "Spark's state sizes disagree with the derivation"
    ours, our_held, our_late = run_streamkit(case.op, directory)
    assert [b for b, _ in ours] == [b for b, _ in their_batches], "batch ids differ"
    for (bid, rows), (_, spark_rows) in zip(ours, their_batches, strict=True):
        assert rows == spark_rows, f"batch {bid}: streamkit {rows} vs Spark {spark_rows}"
    assert our_held == their_held, "rows held by the stateful operators differ"
    assert our_late == their_late, "rows dropped as late differ"
    final = sorted((r for _, rows in ours for r in rows), key=order)
    assert final == sorted((r for _, rows in their_batches for r in rows), key=order)


REFUSED = {
    # lt and its copy l_at both reach the join: Spark fails the first batch
    "copy_beside_it": (Lineage("left", left="copy"), "MULTIPLE_EVENT_TIME_COLUMNS"),
    # lt and lt AS t both reach drop_duplicates above the join: Spark fails the batch
    "dedup_after_join_copy": (
        Lineage(left="plain", right="plain", post="dedup_after_copy"),
        "MULTIPLE_EVENT_TIME_COLUMNS",
    ),
    # the right buffer's bound reads l_at, computed: no watermark on the nullable side
    "right_outer_on_computed": (
        Lineage("right", left="computed"),
        "Stream-stream RightOuter join between two streaming DataFrame",
    ),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_what_spark_fails_is_refused_at_start(spark: Any, name: str, tmp_path: Path) -> None:
    import streamkit as sk

    op, reason = REFUSED[name]
    directory = write_case(tmp_path, Case(op, [[(100, "a", 1)]], [[(101, "a", 2)]]))
    try:
        theirs = spark_result(SparkRun(spark, op, directory))
    except Exception as error:  # refused at start (AnalysisException)
        theirs = str(error)
    assert isinstance(theirs, str), "Spark ran it"
    assert reason in theirs
    with pytest.raises(sk.PlanError, match=reason):
        op.streamkit(*sides(directory)).write_stream.foreach_batch(lambda f, i: None).start()
