"""A session-window aggregation (append mode) killed with SIGKILL several times mid-run,
then run to the end, emits each closed session exactly once, with its exact count and sum.

The query (this file run as a script) reads NDJSON files, one per batch, groups by
``session_window(ts, 4 seconds)`` and ``user``, and writes each batch to a Parquet sink,
checkpointing locally (a snapshot every 4 batches and after each start, deltas of the
session store between them, so restarts replay a snapshot plus deltas). Event times
advance 5 s per file with a few seconds of jitter, within the 30 s watermark delay, so no
row is late; the truth is every session of the input (rows of a user at most 4 s apart,
Spark's ``t_next <= last + gap``) that ends at or before the final watermark (max event
time - 30 s), computed with DuckDB. The kill moments reuse
:func:`~tests.streamkit.streaming.kill9.run_job`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.streaming.sinks import ParquetSink

FILES = 40
SCHEMA = pa.schema([("ts", pa.timestamp("us", "UTC")), ("user", pa.int64()), ("v", pa.int64())])
BASE = datetime(2024, 1, 1, tzinfo=UTC)


def child(argv: list[str]) -> int:
    from tests.streamkit.streaming.kill9 import Announcing

    p = argparse.ArgumentParser()
    for name in ("input", "checkpoint", "out"):
        p.add_argument(f"--{name}", required=True)
    args = p.parse_args(argv)
    df = sk.read_stream.files(args.input, format="json", schema=SCHEMA, max_files_per_trigger=1)
    sessions = (
        df.with_watermark("ts", "30 seconds")
        .group_by(sk.session_window("ts", "4 seconds"), "user")
        .agg(sk.count().alias("n"), sk.sum("v").alias("total"))
    )
    writer = sessions.write_stream.output_mode("append").checkpoint(args.checkpoint, 4)
    writer = writer.trigger(available_now=True)
    writer.to(Announcing(ParquetSink(args.out))).start().await_termination()
    print("done", flush=True)
    return 0


def write_inputs(folder: Path, seed: int) -> None:
    """``FILES`` files (some empty); file ``i`` holds times ``5 i`` to ``5 i + 4`` s."""
    rng = random.Random(seed)
    folder.mkdir()
    for i in range(FILES):
        rows = []
        for _ in range(rng.randint(0, 8)):
            ts = (BASE + timedelta(seconds=i * 5 + rng.randint(0, 4))).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            )
            rows.append({"ts": ts, "user": rng.randint(0, 5), "v": rng.randint(0, 100)})
        path = folder / f"f-{i:03d}.json"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.utime(path, (1_700_000_000 + i, 1_700_000_000 + i))


def truth(folder: Path) -> list[tuple[int, int, int, int, int]]:
    """(user, start us, end us, count, sum) of the sessions closed by the final
    watermark, by DuckDB (gaps and islands)."""
    import duckdb

    relation = duckdb.sql(
        f"""
        WITH r AS (
            SELECT "user" AS u, CAST(ts AS TIMESTAMP) AS t, v
            FROM read_json_auto('{folder}/*.json')
        ), g AS (
            SELECT *, CASE WHEN t - lag(t) OVER (PARTITION BY u ORDER BY t)
                             <= INTERVAL 4 SECOND THEN 0 ELSE 1 END AS brk
            FROM r
        ), s AS (
            SELECT *, sum(brk) OVER (PARTITION BY u ORDER BY t, brk DESC
                                     ROWS UNBOUNDED PRECEDING) AS sid
            FROM g
        )
        SELECT u, epoch_us(min(t)), epoch_us(max(t) + INTERVAL 4 SECOND), count(*), sum(v)
        FROM s GROUP BY u, sid
        HAVING max(t) + INTERVAL 4 SECOND <= (SELECT max(t) FROM r) - INTERVAL 30 SECOND
        ORDER BY ALL
        """
    )
    assert relation is not None
    return [tuple(int(x) for x in row) for row in relation.fetchall()]  # type: ignore[misc]


@pytest.mark.slow
def test_killed_session_query_emits_each_session_once(tmp_path: Path) -> None:
    from tests.streamkit.streaming.kill9 import run_job

    folder = tmp_path / "in"
    write_inputs(folder, seed=29)
    out = tmp_path / "out"
    args = ["--input", str(folder), "--checkpoint", str(tmp_path / "ck"), "--out", str(out)]
    log, rng = tmp_path / "job.log", random.Random(7)
    done = -1
    for _ in range(5):  # kill after one more batch each time, at a random point in it
        pause = rng.random() / 5
        last = run_job(Path(__file__), args, log, done + 1 + rng.randint(0, 4), pause)
        assert last is not None
        done = last
    run_job(Path(__file__), args, log, kill_after=None, pause=0)
    assert (tmp_path / "ck" / "deltas").is_dir()  # restarts went through deltas
    got = sk.read.parquet(str(out)).to_arrow()
    window = got.column("window").combine_chunks()
    starts = window.field("start").cast(pa.int64()).to_pylist()
    ends = window.field("end").cast(pa.int64()).to_pylist()
    rows = zip(
        got.column("user").to_pylist(),
        starts,
        ends,
        got.column("n").to_pylist(),
        got.column("total").to_pylist(),
        strict=True,
    )
    emitted = sorted(rows)
    assert len({(u, s) for u, s, *_ in emitted}) == len(emitted), "a session emitted twice"
    want = truth(folder)
    assert len(want) > 20
    assert emitted == want


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the job imports tests.*
    sys.exit(child(sys.argv[1:]))
