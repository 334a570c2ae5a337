"""``apply_in_pandas_with_state`` after a stream-stream join, killed with SIGKILL several
times mid-run and then run to the end, emits each joined row once and each key's totals
once, as DuckDB's join of all the input says: the join's buffers and the function's
group states are checkpointed together (one state per batch), so a restart resumes both
exactly (a lost state would lower a total, a replayed batch double it).

The job (this file run as a script) reads the inputs of ``test_stream_join_kill9``
(impressions and clicks, one file per batch on each side, no row late, the last file of
each side far in the future), joins them on ``id`` and ``ct BETWEEN it AND it + 20 s``,
then per ``id`` runs :func:`tally` (append mode, ``EventTimeTimeout``): each joined row
is emitted as it arrives (``kind = "row"``), and the key's running count and cost are
kept in its state with a timeout 1000 s after its latest ``it``, which only the far
future watermark passes: then the totals are emitted once (``kind = "total"``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import streamkit as sk
from streamkit.streaming.sinks import ParquetSink
from tests.streamkit.streaming.kill9 import Announcing, kill_then_finish
from tests.streamkit.streaming.test_stream_join_kill9 import LEFT, RIGHT, write_inputs

SCRIPT = Path(__file__)
OUT = "kind string, id bigint, it bigint, ct bigint, cost bigint, n bigint"
TIMEOUT_MS = 1_000_000

Row = tuple[str, int, int | None, int | None, int, int | None]


def _micros(column: pd.Series) -> pd.Series:
    ts = pd.to_datetime(column, utc=True)
    return (ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1)


def tally(key: Any, pdfs: Iterator[pd.DataFrame], state: Any) -> Iterator[pd.DataFrame]:
    """Each joined row as it comes; the key's totals when it times out."""
    if state.hasTimedOut:
        n, cost = state.get
        state.remove()
        yield pd.DataFrame(
            {"kind": ["total"], "id": [key[0]], "it": [None], "ct": [None], "cost": [cost],
             "n": [n]}
        )  # fmt: skip
        return
    n, cost = state.get if state.exists else (0, 0)
    latest = None
    for pdf in pdfs:
        it, ct = _micros(pdf["it"]), _micros(pdf["ct"])
        n += len(pdf)
        cost += int(pdf["cost"].sum())
        latest = max(int(it.max()) // 1000, latest or 0)
        yield pd.DataFrame(
            {"kind": "row", "id": pdf["id"], "it": it, "ct": ct, "cost": pdf["cost"], "n": None}
        )
    state.update((n, cost))
    if latest is not None:
        state.setTimeoutTimestamp(latest + TIMEOUT_MS)


def child(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    for name in ("left", "right", "checkpoint", "out"):
        p.add_argument(f"--{name}", required=True)
    args = p.parse_args(argv)
    read = sk.read_stream.files
    imps = read(args.left, format="json", schema=LEFT, max_files_per_trigger=1)
    clicks = read(args.right, format="json", schema=RIGHT, max_files_per_trigger=1)
    cond = (sk.col("ct") >= sk.col("it")) & (sk.col("ct") <= sk.col("it") + timedelta(seconds=20))
    joined = imps.with_watermark("it", "30 seconds").join(
        clicks.with_watermark("ct", "30 seconds"), ["id", cond], "inner"
    )
    tallied = (
        joined.select("id", "it", "ct", "cost")
        .group_by("id")
        .apply_in_pandas_with_state(
            tally, OUT, "n bigint, cost bigint", "append", "EventTimeTimeout"
        )
    )
    writer = tallied.write_stream.output_mode("append").checkpoint(args.checkpoint)
    writer = writer.trigger(available_now=True)
    writer.to(Announcing(ParquetSink(args.out))).start().await_termination()
    print("done", flush=True)
    return 0


def truth(left: Path, right: Path) -> list[Row]:
    """DuckDB: every joined row (microseconds), then each id's count and cost, over every
    row but the two far-future ones."""
    import duckdb

    joined = (
        "WITH l AS (SELECT id, epoch_us(CAST(it AS TIMESTAMP)) AS it "
        f"           FROM read_json_auto('{left}/*.json') WHERE id >= 0), "
        "     r AS (SELECT id, epoch_us(CAST(ct AS TIMESTAMP)) AS ct, cost "
        f"           FROM read_json_auto('{right}/*.json') WHERE id >= 0), "
        "     j AS (SELECT l.id, l.it, r.ct, r.cost FROM l JOIN r "
        "           ON l.id = r.id AND r.ct BETWEEN l.it AND l.it + 20000000) "
    )
    rows = duckdb.sql(joined + "SELECT 'row', id, it, ct, cost, NULL FROM j")
    totals = duckdb.sql(
        joined + "SELECT 'total', id, NULL, NULL, sum(cost), count(*) FROM j GROUP BY id"
    )
    assert rows is not None
    assert totals is not None
    return sorted((_key_row(r) for r in [*rows.fetchall(), *totals.fetchall()]), key=_order)


def _key_row(row: tuple[Any, ...]) -> Row:
    kind, key, it, ct, cost, n = row
    return (kind, int(key), it, ct, int(cost), None if n is None else int(n))


def _order(row: Row) -> tuple[tuple[bool, Any], ...]:
    return tuple((x is None, x or 0) for x in row)


def emitted(out: Path) -> list[Row]:
    got = sk.read.parquet(str(out)).to_arrow()
    cols = [got.column(c).to_pylist() for c in ("kind", "id", "it", "ct", "cost", "n")]
    return sorted((_key_row(r) for r in zip(*cols, strict=True)), key=_order)


@pytest.mark.slow
def test_killed_join_then_function_emits_each_row_and_total_once(tmp_path: Path) -> None:
    left, right, out = tmp_path / "imps", tmp_path / "clicks", tmp_path / "out"
    write_inputs(left, right, seed=25)
    args = ["--left", str(left), "--right", str(right), "--checkpoint", str(tmp_path / "ck")]
    args += ["--out", str(out)]
    kill_then_finish(SCRIPT, args, tmp_path / "job.log", seed=10)
    expected = truth(left, right)
    assert sum(r[0] == "total" for r in expected) > 5
    assert emitted(out) == expected


if __name__ == "__main__":
    sys.exit(child(sys.argv[1:]))
