"""A streaming ``apply_in_pandas_with_state`` (sessions per key with event-time timeouts)
killed with SIGKILL several times mid-run, then run to the end, emits each key's closed
session exactly once, with the count, first and last event time of all its rows.

The query (this file run as a script) reads NDJSON files, one file per batch, keeps a
(count, first, last) state per key with ``EventTimeTimeout`` and emits a session in
append mode when its timeout fires, into a Parquet sink, checkpointing locally. The input
is laid out so that the answer does not depend on batch boundaries: a key's rows arrive
over three consecutive files, never behind the watermark and long before its session can
time out, and a last row far ahead (key ``end``) moves the watermark past every other
session. So the truth is one row per key (except ``end``) with its count, min and max
event time, computed here by DuckDB. The test kills the job at seeded random moments
after it acknowledged a batch, restarts it, and finally lets it finish.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.streaming.sinks import ParquetSink
from tests.streamkit.streaming.kill9 import Announcing, run_job

SCRIPT = Path(__file__)
FILES = 36
SCHEMA = pa.schema([("ts", pa.timestamp("us", "UTC")), ("k", pa.string()), ("v", pa.int64())])
BASE = datetime(2024, 1, 1, tzinfo=UTC)
DELAY_S, GAP_MS = 30, 20_000


def sessions(key: tuple[Any, ...], pdfs: Iterator[pd.DataFrame], state: Any) -> Iterator[Any]:
    """(count, first, last) per key; the closed session when the timeout fires."""
    if state.has_timed_out:
        n, first, last = state.get
        state.remove()
        yield pd.DataFrame({"k": [key[0]], "n": [n], "first": [first], "last": [last]})
        return
    n, first, last = state.get if state.exists else (0, None, None)
    for pdf in pdfs:
        ms = (pd.to_datetime(pdf["ts"], utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(
            milliseconds=1
        )
        n += len(pdf)
        first = int(ms.min()) if first is None else min(first, int(ms.min()))
        last = int(ms.max()) if last is None else max(last, int(ms.max()))
    state.update((n, first, last))
    state.set_timeout_timestamp(max(last + GAP_MS, state.get_current_watermark_ms()))


def child(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    for name in ("input", "checkpoint", "out"):
        p.add_argument(f"--{name}", required=True)
    args = p.parse_args(argv)
    df = sk.read_stream.files(args.input, format="json", schema=SCHEMA, max_files_per_trigger=1)
    closed = (
        df.with_watermark("ts", f"{DELAY_S} seconds").group_by("k")
        .apply_in_pandas_with_state(sessions, "k string, n bigint, first bigint, last bigint",
                                    "n bigint, first bigint, last bigint", "append",
                                    "EventTimeTimeout")
    )  # fmt: skip
    writer = closed.write_stream.checkpoint(args.checkpoint).trigger(available_now=True)
    writer.to(Announcing(ParquetSink(args.out))).start().await_termination()
    print("done", flush=True)
    return 0


# --- the test ----------------------------------------------------------------------------


def write_inputs(folder: Path, seed: int) -> None:
    """``FILES`` files; file i holds rows at ``5 i .. 5 i + 4`` s of keys started in files
    i-2..i (each key lives three files); the last file holds key ``end`` an hour ahead."""
    rng = random.Random(seed)
    folder.mkdir()
    for i in range(FILES):
        rows = []
        for key in range(max(0, i - 2), i + 1):
            for _ in range(rng.randint(0, 3)):
                ts = BASE + timedelta(seconds=i * 5 + rng.randint(0, 4))
                rows.append({"ts": ts.isoformat(), "k": f"k{key:03d}", "v": rng.randint(0, 9)})
        rng.shuffle(rows)
        if i == FILES - 1:
            end = BASE + timedelta(hours=1)
            rows.append({"ts": end.isoformat(), "k": "end", "v": 0})
        path = folder / f"f-{i:03d}.json"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.utime(path, (1_700_000_000 + i, 1_700_000_000 + i))


def truth(folder: Path) -> list[tuple[str, int, int, int]]:
    """Per key but ``end``: rows, first and last event time (epoch ms), by DuckDB."""
    import duckdb

    relation = duckdb.sql(
        "SELECT k, count(*), epoch_ms(min(CAST(ts AS TIMESTAMPTZ))), "
        "epoch_ms(max(CAST(ts AS TIMESTAMPTZ))) "
        f"FROM read_json_auto('{folder}/*.json') WHERE k <> 'end' GROUP BY k ORDER BY k"
    )
    assert relation is not None
    return [(str(k), int(n), int(a), int(b)) for k, n, a, b in relation.fetchall()]


@pytest.mark.slow
def test_killed_stateful_query_emits_each_session_once(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_inputs(folder, seed=21)
    out = tmp_path / "out"
    args = ["--input", str(folder), "--checkpoint", str(tmp_path / "ck"), "--out", str(out)]
    log, rng = tmp_path / "job.log", random.Random(8)
    # sessions close from batch 13 on (W passes last + gap): kill before and after, spread
    # over the run (37 batches: one per file and the last no-data batch)
    for point in sorted(rng.sample(range(4, 34), 5)):
        assert run_job(SCRIPT, args, log, kill_after=point, pause=rng.random() / 5) is not None
    run_job(SCRIPT, args, log, kill_after=None, pause=0)
    got = sk.read.parquet(str(out)).to_arrow().to_pylist()
    emitted = sorted((r["k"], r["n"], r["first"], r["last"]) for r in got)
    keys = [k for k, *_ in emitted]
    assert len(set(keys)) == len(keys), "a session was emitted twice"
    assert emitted == truth(folder)


if __name__ == "__main__":
    sys.exit(child(sys.argv[1:]))
