"""Stream-stream joins whose event times reach the join through a projection after
``with_watermark`` (README rule 1b), without Spark: a plain rename carries the watermark
(late rows, state watermarks and outer rows as on the column itself), a column computed
from it carries none (no state cleanup on that side, as Spark), and two carrying columns
on one side are refused. Every expected batch is derived by hand in the comments;
``tests/differential/test_joins_stream_lineage.py`` checks the same cases against PySpark.

Times are seconds after 2024-01-01T00:00Z. Both sides' files are read one per batch
(``available_now``); the condition is ``lk = rk AND r BETWEEN l - 5 s AND l + 10 s`` on the
columns ``l`` and ``r`` that reach the join, with delays 10 s (left) and 5 s (right).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import streamkit as sk
from streamkit.errors import PlanError

TS = pa.timestamp("us", "UTC")
LEFT = pa.schema([("lt", TS), ("lk", pa.string()), ("lv", pa.int64())])
RIGHT = pa.schema([("rt", TS), ("rk", pa.string()), ("rv", pa.int64())])
BASE = datetime(2024, 1, 1, tzinfo=UTC)
Files = list[list[tuple[int, str, int]]]
Side = Callable[[sk.DataFrame], tuple[sk.DataFrame, str]]
"""A side's raw stream -> (what reaches the join, its time column in the condition)."""


def plain(time: str, delay: int) -> Side:
    return lambda d: (d.with_watermark(time, f"{delay} seconds"), time)


def renamed(time: str, delay: int) -> Side:
    """``with_watermark(time)`` then ``time AS <x>_at`` (a plain rename: carries it)."""
    name, rest = f"{time[0]}_at", [c for c in ("lk", "lv", "rk", "rv") if c[0] == time[0]]
    return lambda d: (
        d.with_watermark(time, f"{delay} seconds").select(sk.col(time).alias(name), *rest),
        name,
    )


def computed(time: str, delay: int, keep: bool = False) -> Side:
    """``<x>_at = time + 2 s`` after ``with_watermark`` (carries none); ``keep``: ``time``
    stays beside it (and carries the watermark)."""
    name, rest = f"{time[0]}_at", [c for c in ("lk", "lv", "rk", "rv") if c[0] == time[0]]
    shifted = sk.col(time) + timedelta(seconds=2)
    if keep:
        return lambda d: (
            d.with_watermark(time, f"{delay} seconds").with_column(name, shifted),
            name,
        )
    return lambda d: (
        d.with_watermark(time, f"{delay} seconds").select(shifted.alias(name), *rest),
        name,
    )


def joined(left: sk.DataFrame, right: sk.DataFrame, lside: Side, rside: Side, how: str) -> Any:
    (lw, lcol), (rw, rcol) = lside(left), rside(right)
    cond = (
        (sk.col("lk") == sk.col("rk"))
        & (sk.col(rcol) >= sk.col(lcol) - timedelta(seconds=5))
        & (sk.col(rcol) <= sk.col(lcol) + timedelta(seconds=10))
    )
    return lw.join(rw, cond, how)


def _write(folder: Path, files: Files, names: tuple[str, str, str]) -> None:
    folder.mkdir()
    for i, rows in enumerate(files):
        path = folder / f"f-{i:03d}.json"
        iso = [(BASE + timedelta(seconds=t)).strftime("%Y-%m-%dT%H:%M:%SZ") for t, _, _ in rows]
        lines = [
            json.dumps(dict(zip(names, (s, k, v), strict=True))) + "\n"
            for s, (_, k, v) in zip(iso, rows, strict=True)
        ]
        path.write_text("".join(lines))
        os.utime(path, (1_700_000_000 + i, 1_700_000_000 + i))


def _seconds(table: pa.Table) -> list[tuple[Any, ...]]:
    """Rows sorted, timestamps as whole seconds after BASE, a window as (start, end)."""
    epoch = int(BASE.timestamp())
    cols: list[list[Any]] = []
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if pa.types.is_struct(column.type):
            bounds = [column.field(f) for f in ("start", "end")]
            pairs = zip(*(_secs(b, epoch) for b in bounds), strict=True)
            cols.append([tuple(p) for p in pairs])
        elif pa.types.is_timestamp(column.type):
            cols.append(_secs(column, epoch))
        else:
            cols.append(column.to_pylist())
    key = lambda r: tuple((x is None, x or 0) for x in r)  # noqa: E731
    return sorted(zip(*cols, strict=True), key=key)


def _secs(array: pa.Array, epoch: int) -> list[int | None]:
    micros = pc.cast(array, pa.int64()).to_pylist()
    return [None if m is None else m // 1_000_000 - epoch for m in micros]


def run(
    tmp_path: Path, left: Files, right: Files, build: Callable[[sk.DataFrame, sk.DataFrame], Any]
) -> tuple[list[tuple[int, list[tuple[Any, ...]]]], list[int], list[int]]:
    """(batches, rows held after each batch, late rows per batch) of ``build``'s query."""
    _write(tmp_path / "l", left, ("lt", "lk", "lv"))
    _write(tmp_path / "r", right, ("rt", "rk", "rv"))
    read = sk.read_stream.files
    lw = read(str(tmp_path / "l"), format="json", schema=LEFT, max_files_per_trigger=1)
    rw = read(str(tmp_path / "r"), format="json", schema=RIGHT, max_files_per_trigger=1)
    seen: list[tuple[int, list[tuple[Any, ...]]]] = []
    q = (
        build(lw, rw).write_stream.output_mode("append").trigger(available_now=True)
        .foreach_batch(lambda f, i: seen.append((i, _seconds(f.to_arrow())))).start()
    )  # fmt: skip
    assert q.await_termination(timeout=120)
    assert q.exception is None, repr(q.exception)
    progress = [p for p in q.recent_progress if p.num_input_rows >= 0]
    return sorted(seen), [p.state_rows for p in progress], [p.late_rows for p in progress]


def _join(lside: Side, rside: Side, how: str) -> Callable[[sk.DataFrame, sk.DataFrame], Any]:
    return lambda left, right: joined(left, right, lside, rside, how)


# Left outer, both sides renamed (l_at, r_at), as the plain columns would give: batch 0
# pairs (a100, a105); W = min(100 - 10, 105 - 5) = 90. Batch 1 (in force 90): c130 and
# z140 match nothing; W = min(120, 135) = 120. Batch 2 (the left's empty file; in force
# 120): the left buffer drops l_at <= 120 - 10 s - 1 ms (a100 matched; b100 never: null
# row), the right one r_at <= 114.999 (a105). Held: c130, z140.
def test_outer_join_on_renamed_event_times(tmp_path: Path) -> None:
    batches, held, _ = run(
        tmp_path,
        [[(100, "a", 1), (100, "b", 2)], [(130, "c", 3)], []],
        [[(105, "a", 10)], [(140, "z", 11)]],
        _join(renamed("lt", 10), renamed("rt", 5), "left"),
    )
    assert batches == [
        (0, [(100, "a", 1, 105, "a", 10)]),
        (1, []),
        (2, [(100, "b", 2, None, None, None)]),
    ]
    assert held == [3, 5, 2]


# Inner, both renamed, a late left row. Batch 0: (a100, a105); W = 90. Batch 1 (in force
# 90): (a150, a155); W = 140. Batch 2 (in force 140, late at or before 90): a120 pairs
# with a118; evicted: left l_at <= 129.999 (a100, a120), right r_at <= 134.999 (a105,
# a118 not buffered); held a150, a155; W stays 140. Batch 3 (late at or before 140): a95
# is late (dropped, in late_rows); (b180, b182); W = min(170, 177) = 170, so batch 4 runs
# without data: left drops l_at <= 159.999 (a150), right r_at <= 164.999 (a155).
def test_late_rows_are_judged_on_the_renamed_column(tmp_path: Path) -> None:
    batches, held, late = run(
        tmp_path,
        [[(100, "a", 1)], [(150, "a", 2)], [(120, "a", 3)], [(95, "a", 4), (180, "b", 5)]],
        [[(105, "a", 10)], [(155, "a", 11)], [(118, "a", 12)], [(182, "b", 13)]],
        _join(renamed("lt", 10), renamed("rt", 5), "inner"),
    )
    assert batches == [
        (0, [(100, "a", 1, 105, "a", 10)]),
        (1, [(150, "a", 2, 155, "a", 11)]),
        (2, [(120, "a", 3, 118, "a", 12)]),
        (3, [(180, "b", 5, 182, "b", 13)]),
        (4, []),
    ]
    assert held == [2, 4, 2, 4, 2]
    assert late == [0, 0, 0, 1, 0]


# Left outer, the left's event time computed (l_at = lt + 2 s, lt gone): the left side
# carries no watermark, so its buffer is never cleaned and no left row is ever emitted
# with nulls (Spark runs it so: its check only needs the right side's watermark and the
# range). The right buffer is not cleaned either (its bound reads l_at, which carries no
# watermark), and no batch without data is owed. Batch 0: (a102, a105). Held 3, 5, 5.
def test_outer_join_on_a_computed_event_time_never_cleans_its_state(tmp_path: Path) -> None:
    batches, held, _ = run(
        tmp_path,
        [[(100, "a", 1), (100, "b", 2)], [(130, "c", 3)], []],
        [[(105, "a", 10)], [(140, "z", 11)]],
        _join(computed("lt", 10), renamed("rt", 5), "left"),
    )
    assert batches == [(0, [(102, "a", 1, 105, "a", 10)]), (1, []), (2, [])]
    assert held == [3, 5, 5]


# Left outer, lt kept (it carries the watermark) beside l_at = lt + 2 s, the range on
# l_at. As Spark: the left buffer's state watermark comes from the range (W - 10 s - 1 ms)
# and is applied to lt, the left's watermarked column; the right buffer has none (the
# range bounds it by l_at, which carries no watermark). Batch 0: (a100/102, a105); W =
# min(111 - 10, 105 - 5) = 100. Batch 1 (in force 100): nothing; W = min(125, 122) = 122.
# Batch 2 (in force 122): the left drops lt <= 111.999: a100 and b111, never matched:
# emitted with nulls (its l_at, 113, is past the bound). Batch 3 (late at or before 122):
# b123 is not late, but b111 is gone: no pair. Held 3, 5, 4, 5.
def test_state_watermark_of_a_computed_range_column_applies_to_the_watermarked_one(
    tmp_path: Path,
) -> None:
    batches, held, _ = run(
        tmp_path,
        [[(100, "a", 1), (111, "b", 2)], [(135, "c", 3)], [(140, "d", 4)]],
        [[(105, "a", 10)], [(127, "z", 11)], [], [(123, "b", 12)]],
        _join(computed("lt", 10, keep=True), renamed("rt", 5), "left"),
    )
    assert batches == [
        (0, [(100, "a", 1, 102, 105, "a", 10)]),
        (1, []),
        (2, [(111, "b", 2, 113, None, None, None)]),
        (3, []),
    ]
    assert held == [3, 5, 4, 5]


# The aggregation of test_joins_stream_agg's hand case, on renamed columns (rename before
# the join, or after it): r in [l, l + 10], delays 5 and 5, a 10 s count per window of l.
# The join passes on W - 10.001 s. Batch 2 closes [100,110) with 6 pairs, the no-data
# batch 4 closes [130,140) with 3 (derivation in that file).
@pytest.mark.parametrize("where", ["before", "after"])
def test_aggregation_above_the_join_on_a_renamed_event_time(tmp_path: Path, where: str) -> None:
    def build(left: sk.DataFrame, right: sk.DataFrame) -> Any:
        ls, rs = renamed("lt", 5), renamed("rt", 5)
        if where == "after":
            ls, rs = plain("lt", 5), plain("rt", 5)
        (lw, lcol), (rw, rcol) = ls(left), rs(right)
        cond = (
            (sk.col("lk") == sk.col("rk"))
            & (sk.col(rcol) >= sk.col(lcol))
            & (sk.col(rcol) <= sk.col(lcol) + timedelta(seconds=10))
        )
        pairs = lw.join(rw, cond, "inner")
        if where == "after":
            pairs = pairs.select(sk.col("lt").alias("l_at"), "lk", "rv")
        by = sk.window("l_at", "10 seconds")
        return pairs.group_by(by, "lk").agg(sk.count().alias("n"), sk.sum("rv").alias("s"))

    batches, held, _ = run(
        tmp_path,
        [[(100, "a", 1), (103, "a", 2)], [(130, "a", 3)], [(101, "a", 4), (135, "a", 5)],
         [(200, "a", 6)]],
        [[(105, "a", 10)], [(133, "a", 11)], [(104, "a", 12), (140, "a", 13)], [(210, "a", 14)]],
        build,
    )  # fmt: skip
    assert batches == [
        (0, []),
        (1, []),
        (2, [((100, 110), "a", 6, 66)]),
        (3, []),
        (4, [((130, 140), "a", 3, 37)]),
    ]
    assert held == [4, 7, 5, 8, 3]


# drop_duplicates above an inner join on lt renamed between them (select(lt AS t, lk)):
# the alias keeps the watermark (and the left's 10 s delay), so the deduplication drops
# late rows and expires keys on t, with the watermark the join passes on, O = W - 10.001
# s (left buffer: lt <= W - 10.001, right: rt <= W - 5.001). Joined rows per batch: a100
# twice (a105, a108), a112 (a115), a150 (a152), a170 (a175), a190 (a195); W after each
# batch: 90, 102, 140, 160, 180, so a batch without data (5) follows batch 4. Join held
# (left + right): 1+2, 2+3, 3+4, 2+2 (batch 3, in force 140: lt <= 129.999 and rt <=
# 134.999 go), 3+2 (in force 160: rt 152 goes, lt 150 stays), 2+2 (in force 180).
# [lk, t]: keys a100, a112, a150, a170, a190 emitted once each; batch 3 expires t <=
# 129.999 (a100, a112), batch 4 none (149.999), batch 5 a150 (169.999): 1, 2, 3, 2, 3, 2.
# Within the watermark on [lk]: a's expiry is 100 + 10 s; a112, a150, a170 are dropped
# as duplicates; batch 3 (O 129.999) expires it, so a190 is emitted again (expiry 200):
# 1, 1, 1, 0, 1, 1. lt + 2 s AS lt carries nothing: no key expires: 1, 2, 3, 4, 5, 5.
DEDUP_LEFT: Files = [[(100, "a", 1)], [(112, "a", 2)], [(150, "a", 3)], [(170, "a", 4)],
                     [(190, "a", 5)]]  # fmt: skip
DEDUP_RIGHT: Files = [[(105, "a", 10), (108, "a", 11)], [(115, "a", 12)], [(152, "a", 13)],
                      [(175, "a", 14)], [(195, "a", 15)]]  # fmt: skip
_JOIN_HELD = [3, 5, 7, 4, 5, 4]


@pytest.mark.parametrize(
    ("kind", "emitted", "keys"),
    [
        ("renamed", [100, 112, 150, 170, 190, None], [1, 2, 3, 2, 3, 2]),
        ("within", [100, None, None, None, 190, None], [1, 1, 1, 0, 1, 1]),
        ("computed", [102, 114, 152, 172, 192, None], [1, 2, 3, 4, 5, 5]),
    ],
)
def test_drop_duplicates_above_the_join_follows_a_rename_after_it(
    tmp_path: Path, kind: str, emitted: list[int | None], keys: list[int]
) -> None:
    def build(left: sk.DataFrame, right: sk.DataFrame) -> Any:
        pairs = joined(left, right, plain("lt", 10), plain("rt", 5), "inner")
        if kind == "computed":
            shifted = (sk.col("lt") + timedelta(seconds=2)).alias("lt")
            return pairs.select(shifted, "lk").drop_duplicates(["lk", "lt"])
        renamed_pairs = pairs.select(sk.col("lt").alias("t"), "lk")
        if kind == "within":
            return renamed_pairs.drop_duplicates_within_watermark(["lk"])
        return renamed_pairs.drop_duplicates(["lk", "t"])

    batches, held, late = run(tmp_path, DEDUP_LEFT, DEDUP_RIGHT, build)
    assert batches == [(i, [] if t is None else [(t, "a")]) for i, t in enumerate(emitted)]
    assert held == [j + k for j, k in zip(_JOIN_HELD, keys, strict=True)]
    assert late == [0] * 6


def test_drop_duplicates_above_the_join_refuses_a_renamed_copy_beside_its_column() -> None:
    """``lt`` and ``lt AS t`` both reach ``drop_duplicates`` above the join: Spark fails the
    batch (``MULTIPLE_EVENT_TIME_COLUMNS``, PySpark 4.3); streamkit refuses at start."""
    left, right = sk.read_stream.memory(LEFT), sk.read_stream.memory(RIGHT)
    pairs = joined(left, right, plain("lt", 10), plain("rt", 5), "inner")
    query = pairs.select("lt", sk.col("lt").alias("t"), "lk").drop_duplicates(["lk", "t"])
    with pytest.raises(PlanError, match=r"MULTIPLE_EVENT_TIME_COLUMNS"):
        query.write_stream.memory("x").start()


# A stateful function per lk above an inner join (rt in [lt, lt + 10 s], delays 5 s and
# 5 s) reading lt renamed t above the join (test_joins_stream_function's tally): the alias
# carries the watermark, so timeouts and timers fire at the one the join passes on, O = W
# - 10.001 s, as on lt itself. Pairs: a100 (batch 0), b125 (1), c200 (2); each key times
# out at its latest t + 5 s. W after each batch: 95, 120, 195. Batch 0: a data (wm 0).
# Batch 1 (O 84.999): b data. Batch 2 (O 109.999): c data; a (105) times out. Batch 3, no
# data (O 184.999): b (130) times out. Held (join + keys): 2 + 1, 4 + 2, 4 + 2 (a100 and
# a105 evicted, a gone, c in), 2 + 1.
@pytest.mark.parametrize("kind", ["apply", "tws"])
def test_function_above_the_join_follows_a_rename_after_it(tmp_path: Path, kind: str) -> None:
    from tests.differential.spark_functions import JOIN_STATE, JoinTally, tally_timed

    out = "k string, kind string, n bigint, s bigint, wm bigint"

    def build(left: sk.DataFrame, right: sk.DataFrame) -> Any:
        lw, rw = left.with_watermark("lt", "5 seconds"), right.with_watermark("rt", "5 seconds")
        cond = (
            (sk.col("lk") == sk.col("rk"))
            & (sk.col("rt") >= sk.col("lt"))
            & (sk.col("rt") <= sk.col("lt") + timedelta(seconds=10))
        )
        pairs = lw.join(rw, cond, "inner").select("lk", sk.col("lt").alias("t"), "lv", "rv")
        grouped = pairs.group_by("lk")
        if kind == "tws":
            return grouped.transformWithStateInPandas(JoinTally(), out, "Append", "EventTime")
        return grouped.applyInPandasWithState(
            tally_timed, out, JOIN_STATE, "append", "EventTimeTimeout"
        )

    batches, held, _ = run(
        tmp_path,
        [[(100, "a", 1)], [(125, "b", 2)], [(200, "c", 3)]],
        [[(105, "a", 10)], [(125, "b", 11)], [(200, "c", 12)]],
        build,
    )
    ms, timeout = int(BASE.timestamp()) * 1000, "timer" if kind == "tws" else "timeout"
    assert batches == [
        (0, [("a", "data", 1, 10, 0)]),
        (1, [("b", "data", 1, 11, ms + 84_999)]),
        (2, [("a", timeout, 1, 10, ms + 109_999), ("c", "data", 1, 12, ms + 109_999)]),
        (3, [("b", timeout, 1, 11, ms + 184_999)]),
    ]
    assert held == [3, 6, 6, 3]


def test_two_columns_carrying_the_watermark_on_one_side_are_refused() -> None:
    """``lt`` and a copy ``l_at`` both reach the join: Spark fails the first batch
    (``MULTIPLE_EVENT_TIME_COLUMNS``); streamkit refuses at start."""
    left, right = sk.read_stream.memory(LEFT), sk.read_stream.memory(RIGHT)
    copy: Side = lambda d: (  # noqa: E731
        d.with_watermark("lt", "10 seconds").with_column("l_at", sk.col("lt")),
        "l_at",
    )
    query = joined(left, right, copy, renamed("rt", 5), "left")
    with pytest.raises(PlanError, match=r"MULTIPLE_EVENT_TIME_COLUMNS.*'lt', 'l_at'"):
        query.write_stream.memory("x").start()


def test_outer_join_whose_other_side_computed_its_event_time_is_refused() -> None:
    """A right outer join needs the right buffer's state watermark, derived from the left
    column in the range: computed after ``with_watermark``, it carries none (Spark's
    refusal at start, PySpark 4.3)."""
    left, right = sk.read_stream.memory(LEFT), sk.read_stream.memory(RIGHT)
    query = joined(left, right, computed("lt", 10), renamed("rt", 5), "right")
    with pytest.raises(PlanError, match=r"RightOuter join .* without a watermark on the nullable"):
        query.write_stream.memory("x").start()
