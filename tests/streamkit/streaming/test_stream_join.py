"""Stream-stream joins without Spark: what is refused (with Spark's reason), a restart
from the checkpoint (both sources' offsets, the buffered rows as snapshot + deltas),
whose output DuckDB's join of all the input confirms, and the batch join of the same
plan against DuckDB."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.errors import PlanError

TS = pa.timestamp("us", "UTC")
LEFT = pa.schema([("lt", TS), ("k", pa.string()), ("lv", pa.int64())])
RIGHT = pa.schema([("rt", TS), ("rk", pa.string()), ("rv", pa.int64())])
BASE = datetime(2024, 1, 1, tzinfo=UTC)


def streams() -> tuple[sk.DataFrame, sk.DataFrame]:
    left = sk.read_stream.memory(LEFT).with_watermark("lt", "10 seconds")
    right = sk.read_stream.memory(RIGHT).with_watermark("rt", "10 seconds")
    return left, right


def in_range() -> sk.Expr:
    return (
        (sk.col("k") == sk.col("rk"))
        & (sk.col("rt") >= sk.col("lt"))
        & (sk.col("rt") <= sk.col("lt") + timedelta(seconds=30))
    )


@pytest.mark.parametrize("mode", ["update", "complete"])
def test_only_append_mode(mode: Literal["update", "complete"]) -> None:
    left, right = streams()
    writer = left.join(right, in_range(), "inner").write_stream.output_mode(mode).memory("x")
    with pytest.raises(PlanError, match="only in append mode"):
        writer.start()


@pytest.mark.parametrize("how", ["left", "right", "full"])
def test_outer_join_needs_a_time_range(how: str) -> None:
    left, right = streams()
    joined = left.join(right, sk.col("k") == sk.col("rk"), how)
    with pytest.raises(PlanError, match="without a watermark on the nullable side"):
        joined.write_stream.memory("x").start()


def test_outer_join_needs_the_bound_of_its_preserved_side() -> None:
    """``rt >= lt`` bounds only the right buffer (a right row older than W can meet no
    future left row); nothing says when a left row has seen all its matches, so a left
    outer join is refused and a right outer join runs."""
    left, right = streams()
    lower = (sk.col("k") == sk.col("rk")) & (sk.col("rt") >= sk.col("lt"))
    with pytest.raises(PlanError, match="LeftOuter"):
        left.join(right, lower, "left").write_stream.memory("x").start()
    left.join(right, lower, "right").write_stream.memory("x").start().stop()


def test_append_aggregation_after_the_join_needs_a_window_on_an_event_time() -> None:
    """Spark: append mode needs a watermarked grouping key; the join passes on ``lt`` and
    ``rt``, so a count by key alone is refused and a window on either runs."""
    left, right = streams()
    joined = left.join(right, in_range(), "inner")
    with pytest.raises(PlanError, match=r"without watermark.*'lt', 'rt'"):
        joined.group_by("k").agg(sk.count()).write_stream.output_mode("append").memory("x").start()
    for time in ("lt", "rt"):
        counted = joined.group_by(sk.window(time, "10 seconds"), "k").agg(sk.count())
        counted.write_stream.output_mode("append").memory(f"ok_{time}").start().stop()


def test_a_rename_of_a_joined_event_time_carries_the_watermark() -> None:
    """An alias keeps Spark's watermark metadata: a window on (or a group key of) ``t``,
    ``lt`` renamed after the join, runs in append mode as on ``lt`` (PySpark 4.3 gives
    the same batches and state sizes: tests/differential/test_joins_stream_agg.py, the
    ``renamed`` cases); a column computed from it carries none and is refused."""
    left, right = streams()
    joined = left.join(right, in_range(), "inner")
    renamed = joined.select(sk.col("lt").alias("t"), "k", "rv")
    for name, keys in (("window", (sk.window("t", "10 seconds"), "k")), ("key", ("t", "k"))):
        counted = renamed.group_by(*keys).agg(sk.count())
        counted.write_stream.output_mode("append").memory(f"renamed_{name}").start().stop()
    computed = joined.select((sk.col("lt") + timedelta(seconds=1)).alias("t"), "k", "rv")
    counted = computed.group_by(sk.window("t", "10 seconds"), "k").agg(sk.count())
    with pytest.raises(PlanError, match="without watermark"):
        counted.write_stream.output_mode("append").memory("computed").start()


@pytest.mark.parametrize(
    ("how", "mode", "reason"),
    [
        ("inner", "complete", "Inner join between two streaming DataFrames/Datasets is not "
         "supported in Complete output mode, only in Append and Update output modes"),
        ("left", "update", "LeftOuter join between two streaming DataFrames/Datasets is not "
         "supported in Update output mode, only in Append output mode"),
        ("full", "complete", "FullOuter join between two streaming DataFrames/Datasets is not "
         "supported in Complete output mode, only in Append output mode"),
    ],
)  # fmt: skip
def test_aggregation_after_the_join_refuses_the_modes_spark_refuses(
    how: str, mode: Literal["update", "complete"], reason: str
) -> None:
    """Spark's messages (PySpark 4.3): an inner join followed by an aggregation runs in
    append and update mode, an outer join only in append mode."""
    left, right = streams()
    counted = (
        left.join(right, in_range(), how).group_by(sk.window("lt", "10 seconds")).agg(sk.count())
    )
    with pytest.raises(PlanError, match=reason):
        counted.write_stream.output_mode(mode).memory("x").start()


def test_drop_duplicates_after_the_join_needs_a_single_event_time() -> None:
    """With both sides' event times in its input Spark fails the batch
    (``MULTIPLE_EVENT_TIME_COLUMNS``); streamkit refuses at start. Without ``rt`` it runs;
    complete mode is refused (Spark: the join's modes)."""
    left, right = streams()
    joined = left.join(right, in_range(), "inner")
    with pytest.raises(PlanError, match="MULTIPLE_EVENT_TIME_COLUMNS"):
        joined.drop_duplicates(["k", "lt"]).write_stream.output_mode("append").memory("x").start()
    deduped = joined.select("lt", "k", "rv").drop_duplicates(["k", "lt"])
    deduped.write_stream.output_mode("append").memory("ok").start().stop()
    with pytest.raises(PlanError, match="not supported in Complete output mode"):
        deduped.write_stream.output_mode("complete").memory("x").start()


def test_columns_on_both_sides_are_refused() -> None:
    left = sk.read_stream.memory(LEFT)
    with pytest.raises(PlanError, match="on both sides"):
        left.join(sk.read_stream.memory(LEFT), sk.col("lv") > 0, "inner")


def _write(folder: Path, index: int, rows: list[dict[str, object]]) -> None:
    folder.mkdir(exist_ok=True)
    path = folder / f"f-{index:03d}.json"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.utime(path, (1_700_000_000 + index, 1_700_000_000 + index))


def _iso(second: int) -> str:
    return (BASE + timedelta(seconds=second)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _run(left: Path, right: Path, checkpoint: Path, out: Path) -> None:
    read = sk.read_stream.files
    lw = read(str(left), format="json", schema=LEFT, max_files_per_trigger=1)
    rw = read(str(right), format="json", schema=RIGHT, max_files_per_trigger=1)
    joined = lw.with_watermark("lt", "10 seconds").join(
        rw.with_watermark("rt", "10 seconds"), in_range(), "left"
    )
    writer = joined.write_stream.checkpoint(str(checkpoint)).trigger(available_now=True)
    q = writer.parquet(str(out)).start()
    assert q.await_termination(timeout=120)
    assert q.exception is None


def test_restart_resumes_both_sources_and_the_buffers(tmp_path: Path) -> None:
    """Six files per side in two runs: rows buffered in the first run (unmatched, or
    matched later) still join or come out with nulls in the second."""
    left, right, ck, out = tmp_path / "l", tmp_path / "r", tmp_path / "ck", tmp_path / "out"
    for i in range(3):
        _write(left, i, [{"lt": _iso(20 * i + 1), "k": k, "lv": i} for k in "ab"])
        _write(right, i, [{"rt": _iso(20 * i + 25), "rk": "a", "rv": 10 + i}])
    _run(left, right, ck, out)
    assert os.listdir(ck / "deltas"), "the buffers are written as deltas"
    for i in range(3, 6):
        _write(left, i, [{"lt": _iso(20 * i + 1), "k": "a", "lv": i}])
        _write(right, i, [{"rt": _iso(20 * i + 25), "rk": "b", "rv": 10 + i}])
    _write(left, 6, [{"lt": _iso(1000), "k": "z", "lv": 99}])  # moves the watermark on
    _write(right, 6, [{"rt": _iso(1000), "rk": "y", "rv": 99}])
    _run(left, right, ck, out)
    got = sk.read.parquet(str(out)).to_arrow()
    cols = ["lt", "k", "lv", "rt", "rk", "rv"]
    ours = sorted(
        (tuple(r[c] for c in cols) for r in got.cast(_int_schema(got)).to_pylist()),
        key=lambda r: tuple((x is None, x or 0) for x in r),
    )
    assert ours == _duckdb_left_join(left, right)


def _int_schema(table: pa.Table) -> pa.Schema:
    return pa.schema([
        pa.field(f.name, pa.int64() if pa.types.is_timestamp(f.type) else f.type)
        for f in table.schema
    ])  # fmt: skip


def _duckdb_left_join(left: Path, right: Path) -> list[tuple[object, ...]]:
    """Every left row but the last file's with its matches, or nulls (DuckDB)."""
    import duckdb

    rel = duckdb.sql(
        "WITH l AS (SELECT epoch_us(CAST(lt AS TIMESTAMP)) AS lt, k, lv "
        f"FROM read_json_auto('{left}/*.json') WHERE k <> 'z'), "
        "r AS (SELECT epoch_us(CAST(rt AS TIMESTAMP)) AS rt, rk, rv "
        f"FROM read_json_auto('{right}/*.json')) "
        "SELECT * FROM l LEFT JOIN r ON k = rk AND rt BETWEEN lt AND lt + 30000000"
    )
    assert rel is not None
    return sorted(
        (tuple(r) for r in rel.fetchall()), key=lambda r: tuple((x is None, x or 0) for x in r)
    )


@pytest.mark.parametrize("how", ["inner", "left", "right", "full"])
def test_batch_join_of_the_same_plan_matches_duckdb(how: str) -> None:
    import duckdb

    lrows = [(BASE + timedelta(seconds=s), k, s) for s, k in [(0, "a"), (5, "b"), (9, None)]]
    rrows = [(BASE + timedelta(seconds=s), k, s) for s, k in [(3, "a"), (50, "a"), (6, "c")]]
    ltab = pa.Table.from_pylist([dict(zip(LEFT.names, r, strict=True)) for r in lrows], LEFT)
    rtab = pa.Table.from_pylist([dict(zip(RIGHT.names, r, strict=True)) for r in rrows], RIGHT)
    ours = sk.from_arrow(ltab).join(sk.from_arrow(rtab), in_range(), how).to_arrow()
    kind = {"inner": "JOIN", "left": "LEFT JOIN", "right": "RIGHT JOIN", "full": "FULL JOIN"}
    rel = duckdb.sql(
        "SELECT epoch_us(lt), k, lv, epoch_us(rt), rk, rv "
        f"FROM ltab {kind[how]} rtab ON k = rk AND rt >= lt AND rt <= lt + INTERVAL 30 SECOND"
    )
    assert rel is not None
    key = lambda r: tuple((x is None, str(x)) for x in r)  # noqa: E731
    mine = [tuple(r.values()) for r in ours.cast(_int_schema(ours)).to_pylist()]
    assert sorted(mine, key=key) == sorted(rel.fetchall(), key=key)


@pytest.mark.parametrize(("policy", "expected"), [("min", 9), ("max", 99)])
def test_multiple_watermark_policy(policy: str, expected: int) -> None:
    """Spark's multipleWatermarkPolicy: the query's watermark is the slower side's
    (``min``, the default) or the faster side's (``max``); delays of 1 s here."""
    lm, rm = sk.read_stream.memory(LEFT), sk.read_stream.memory(RIGHT)
    left, right = lm.with_watermark("lt", "1 second"), rm.with_watermark("rt", "1 second")
    writer = left.join(right, in_range(), "inner").write_stream.memory("wm")
    q = writer.multiple_watermark_policy(policy).start()
    lm.stream.add_rows([{"lt": BASE + timedelta(seconds=100), "k": "a", "lv": 1}])
    rm.stream.add_rows([{"rt": BASE + timedelta(seconds=10), "rk": "a", "rv": 2}])
    q.process_all_available()
    progress = q.last_progress
    q.stop()
    assert progress is not None
    assert progress.watermark == BASE + timedelta(seconds=expected)
