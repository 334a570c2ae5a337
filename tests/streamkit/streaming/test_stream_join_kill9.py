"""A stream-stream join killed with SIGKILL several times mid-run, then run to the end,
emits each joined row exactly once, as DuckDB's join of all the input says.

The job (this file run as a script) reads two NDJSON folders, impressions (left) and
clicks (right), one file per batch on each side, joins them on ``id`` and
``ct BETWEEN it AND it + 20 s`` (inner or left outer), and writes each batch to a Parquet
sink, checkpointing locally. Files are in event-time order within the watermark delays,
so no row is late and no buffered row is evicted before its match arrived; the last file
of each side is far in the future, so the watermark passes every earlier row and the left
outer join emits every unmatched impression. The truth is DuckDB's join (left join) of
all the rows but those two. The test kills the job at seeded random moments after it
acknowledged a batch (before, during or after the state and commit files), restarts it,
and finally lets it finish.
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

FILES = 24
TS = pa.timestamp("us", "UTC")
LEFT = pa.schema([("it", TS), ("id", pa.int64()), ("ad", pa.int64())])
RIGHT = pa.schema([("ct", TS), ("id", pa.int64()), ("cost", pa.int64())])
BASE = datetime(2024, 1, 1, tzinfo=UTC)
SCRIPT = Path(__file__)
FAR = 100_000
"""Seconds: the event time of each side's last file (moves the watermark past all)."""


def child(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    for name in ("left", "right", "checkpoint", "out", "how"):
        p.add_argument(f"--{name}", required=True)
    args = p.parse_args(argv)
    read = sk.read_stream.files
    imps = read(args.left, format="json", schema=LEFT, max_files_per_trigger=1)
    clicks = read(args.right, format="json", schema=RIGHT, max_files_per_trigger=1)
    cond = (sk.col("ct") >= sk.col("it")) & (sk.col("ct") <= sk.col("it") + timedelta(seconds=20))
    joined = imps.with_watermark("it", "30 seconds").join(
        clicks.with_watermark("ct", "30 seconds"), ["id", cond], args.how
    )
    writer = joined.write_stream.checkpoint(args.checkpoint).trigger(available_now=True)
    writer.to(Announcing(ParquetSink(args.out))).start().await_termination()
    print("done", flush=True)
    return 0


# --- the test ----------------------------------------------------------------------------


def _write(path: Path, rows: list[dict[str, object]], index: int) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.utime(path, (1_700_000_000 + index, 1_700_000_000 + index))


def _iso(second: int) -> str:
    return (BASE + timedelta(seconds=second)).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_inputs(left: Path, right: Path, seed: int) -> None:
    """File i of each side holds the rows with event time in [10 i, 10 i + 10); about
    60% of impressions get one or two clicks 0..20 s after them; ids repeat (a click may
    match several impressions). The last file of each side is at ``FAR``."""
    rng = random.Random(seed)
    left.mkdir()
    right.mkdir()
    imps: list[list[dict[str, object]]] = [[] for _ in range(FILES)]
    clicks: list[list[dict[str, object]]] = [[] for _ in range(FILES + 3)]
    for i in range(FILES):
        for _ in range(rng.randint(0, 6)):
            second, key = 10 * i + rng.randint(0, 9), rng.randint(0, 30)
            imps[i].append({"it": _iso(second), "id": key, "ad": rng.randint(0, 999)})
            for _ in range(rng.choice([0, 0, 1, 1, 2])):
                at = second + rng.randint(0, 20)
                clicks[at // 10].append({"ct": _iso(at), "id": key, "cost": rng.randint(1, 99)})
    imps.append([{"it": _iso(FAR), "id": -1, "ad": 0}])
    clicks = [*clicks[:FILES], [{"ct": _iso(FAR), "id": -2, "cost": 0}]]
    for i, rows in enumerate(imps):
        _write(left / f"f-{i:03d}.json", rows, i)
    for i, rows in enumerate(clicks):
        _write(right / f"f-{i:03d}.json", rows, i)


Out = tuple[int | None, int | None, int | None, int | None, int | None, int | None]


def truth(left: Path, right: Path, how: str) -> list[Out]:
    """DuckDB's join of every row but the two far-future ones (microseconds)."""
    import duckdb

    kind = "LEFT JOIN" if how == "left" else "JOIN"
    relation = duckdb.sql(
        "WITH l AS (SELECT id, epoch_us(CAST(it AS TIMESTAMP)) AS it, ad "
        f"           FROM read_json_auto('{left}/*.json') WHERE id >= 0), "
        "     r AS (SELECT id, epoch_us(CAST(ct AS TIMESTAMP)) AS ct, cost "
        f"           FROM read_json_auto('{right}/*.json') WHERE id >= 0) "
        f"SELECT l.id, l.it, l.ad, r.ct, r.cost FROM l {kind} r "
        "ON l.id = r.id AND r.ct BETWEEN l.it AND l.it + 20000000 ORDER BY ALL"
    )
    assert relation is not None
    return [tuple(row) for row in relation.fetchall()]


def emitted(out: Path) -> list[tuple[object, ...]]:
    got = sk.read.parquet(str(out)).to_arrow()
    cols = [got.column(n) for n in ("id", "it", "ad", "ct", "cost")]
    as_ints = [c.cast(pa.int64()) if pa.types.is_timestamp(c.type) else c for c in cols]
    rows = zip(*(c.to_pylist() for c in as_ints), strict=True)
    return sorted(rows, key=lambda r: tuple((x is None, x or 0) for x in r))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["inner", "left"])
def test_killed_stream_join_emits_each_row_once(tmp_path: Path, how: str) -> None:
    left, right, out = tmp_path / "imps", tmp_path / "clicks", tmp_path / "out"
    write_inputs(left, right, seed=21)
    args = ["--left", str(left), "--right", str(right), "--checkpoint", str(tmp_path / "ck")]
    args += ["--out", str(out), "--how", how]
    kill_then_finish(SCRIPT, args, tmp_path / "job.log", seed=8)
    expected = sorted(truth(left, right, how), key=lambda r: tuple((x is None, x or 0) for x in r))
    assert len(expected) > 40
    assert emitted(out) == expected


if __name__ == "__main__":
    sys.exit(child(sys.argv[1:]))
