"""A streaming ``drop_duplicates`` killed with SIGKILL several times mid-run, then run to
the end, leaves each distinct key exactly once in its Parquet output.

The query (this file run as a script) reads NDJSON files from a local folder, one file per
batch, drops duplicates and writes each batch to a Parquet sink, checkpointing locally.
The input re-sends a third of its rows (same ``id`` and ``ts``, another ``payload``) in
the same file or a later one, always within the watermark delay, so no row is late and
the truth is simply the distinct keys of the input, computed here with DuckDB. The test
kills the job at seeded random moments after it acknowledged a new batch (before, during
or after the state and commit files), restarts it, and finally lets it finish.
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
from tests.streamkit.streaming.kill9 import Announcing, kill_then_finish

SCRIPT = Path(__file__)
FILES = 40
SCHEMA = pa.schema([("ts", pa.timestamp("us", "UTC")), ("id", pa.int64()), ("payload", pa.int64())])
BASE = datetime(2024, 1, 1, tzinfo=UTC)
DELAY_S = 30


def child(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    for name in ("input", "checkpoint", "out", "op"):
        p.add_argument(f"--{name}", required=True)
    args = p.parse_args(argv)
    df = sk.read_stream.files(args.input, format="json", schema=SCHEMA, max_files_per_trigger=1)
    marked = df.with_watermark("ts", f"{DELAY_S} seconds")
    if args.op == "within":
        deduped = marked.drop_duplicates_within_watermark(["id"])
    else:
        deduped = marked.drop_duplicates(["id", "ts"])
    writer = deduped.write_stream.checkpoint(args.checkpoint).trigger(available_now=True)
    writer.to(Announcing(ParquetSink(args.out))).start().await_termination()
    print("done", flush=True)
    return 0


# --- the test ----------------------------------------------------------------------------


def write_inputs(folder: Path, seed: int) -> None:
    """``FILES`` files; each id's rows share one ``ts``; a re-sent row comes at most 3
    files (at most 15 s of event time) after the first, well within the delay."""
    rng = random.Random(seed)
    folder.mkdir()
    recent: list[tuple[int, int, int]] = []
    next_id = 0
    for i in range(FILES):
        rows = []
        for _ in range(rng.randint(0, 12)):
            near = [(s, k) for f, s, k in recent if f >= i - 3]
            if near and rng.random() < 0.35:
                second, key = rng.choice(near)
            else:
                second, key = i * 5 + rng.randint(0, 4), next_id
                next_id += 1
                recent.append((i, second, key))
            ts = (BASE + timedelta(seconds=second)).strftime("%Y-%m-%dT%H:%M:%SZ")
            rows.append({"ts": ts, "id": key, "payload": rng.randint(0, 10**6)})
        path = folder / f"f-{i:03d}.json"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.utime(path, (1_700_000_000 + i, 1_700_000_000 + i))


def truth(folder: Path) -> list[tuple[int, int]]:
    """The distinct ``(id, epoch micros)`` of the input, by DuckDB."""
    import duckdb

    relation = duckdb.sql(
        "SELECT DISTINCT id, epoch_us(CAST(ts AS TIMESTAMP)) "
        f"FROM read_json_auto('{folder}/*.json') ORDER BY ALL"
    )
    assert relation is not None
    rows = relation.fetchall()
    return [(int(a), int(b)) for a, b in rows]


@pytest.mark.slow
@pytest.mark.parametrize("op", ["dedup", "within"])
def test_killed_dedup_query_emits_each_key_once(tmp_path: Path, op: str) -> None:
    folder = tmp_path / "in"
    write_inputs(folder, seed=13)
    out = tmp_path / "out"
    args = ["--input", str(folder), "--checkpoint", str(tmp_path / "ck"), "--out", str(out)]
    args += ["--op", op]
    kill_then_finish(SCRIPT, args, tmp_path / "job.log", seed=5)
    got = sk.read.parquet(str(out)).to_arrow()
    ids, stamps = got.column("id").to_pylist(), got.column("ts").cast(pa.int64()).to_pylist()
    emitted = sorted(zip(ids, stamps, strict=True))
    assert len(set(ids)) == len(ids), "a key was emitted twice"
    assert emitted == truth(folder)


if __name__ == "__main__":
    sys.exit(child(sys.argv[1:]))
