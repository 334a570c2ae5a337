"""A windowed count after a stream-stream join, killed with SIGKILL several times mid-run
and then run to the end, emits each window once with the count DuckDB gives for the join
of all the input: the join's buffers and the aggregation's open windows are checkpointed
together (one state per batch), so a restart resumes both exactly.

The job (this file run as a script) reads the inputs of ``test_stream_join_kill9``
(impressions and clicks, one file per batch on each side, no row late, the last file of
each side far in the future so the watermark finally closes every window), joins them on
``id`` and ``ct BETWEEN it AND it + 20 s`` and counts the joined rows per 30-second window
of ``it`` in append mode, into the exactly-once Parquet sink.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.streaming.sinks import ParquetSink
from tests.streamkit.streaming.kill9 import Announcing, kill_then_finish
from tests.streamkit.streaming.test_stream_join_kill9 import LEFT, RIGHT, write_inputs

SCRIPT = Path(__file__)


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
    counted = joined.group_by(sk.window("it", "30 seconds")).agg(
        sk.count().alias("n"), sk.sum("cost").alias("cost")
    )
    writer = counted.write_stream.output_mode("append").checkpoint(args.checkpoint)
    writer = writer.trigger(available_now=True)
    writer.to(Announcing(ParquetSink(args.out))).start().await_termination()
    print("done", flush=True)
    return 0


def truth(left: Path, right: Path) -> list[tuple[int, int, int]]:
    """DuckDB: (window start in microseconds, joined rows, their cost) per 30 s window
    of ``it`` over every row but the two far-future ones."""
    import duckdb

    relation = duckdb.sql(
        "WITH l AS (SELECT id, epoch_us(CAST(it AS TIMESTAMP)) AS it "
        f"           FROM read_json_auto('{left}/*.json') WHERE id >= 0), "
        "     r AS (SELECT id, epoch_us(CAST(ct AS TIMESTAMP)) AS ct, cost "
        f"           FROM read_json_auto('{right}/*.json') WHERE id >= 0) "
        "SELECT it // 30000000 * 30000000 AS start, count(*), sum(cost) FROM l JOIN r "
        "ON l.id = r.id AND r.ct BETWEEN l.it AND l.it + 20000000 GROUP BY 1 ORDER BY 1"
    )
    assert relation is not None
    return [(int(s), int(n), int(c)) for s, n, c in relation.fetchall()]


def emitted(out: Path) -> list[tuple[int, int, int]]:
    got = sk.read.parquet(str(out)).to_arrow()
    starts = got.column("window").combine_chunks().field("start").cast(pa.int64()).to_pylist()
    rows = zip(starts, got.column("n").to_pylist(), got.column("cost").to_pylist(), strict=True)
    return sorted(rows)


@pytest.mark.slow
def test_killed_join_then_count_emits_each_window_once(tmp_path: Path) -> None:
    left, right, out = tmp_path / "imps", tmp_path / "clicks", tmp_path / "out"
    write_inputs(left, right, seed=23)
    args = ["--left", str(left), "--right", str(right), "--checkpoint", str(tmp_path / "ck")]
    args += ["--out", str(out)]
    kill_then_finish(SCRIPT, args, tmp_path / "job.log", seed=9)
    expected = truth(left, right)
    assert len(expected) > 5
    assert emitted(out) == expected


if __name__ == "__main__":
    sys.exit(child(sys.argv[1:]))
