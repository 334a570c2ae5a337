"""Inputs of the differential tests: rows, the files they are split into, and seeded
random streams of them.

A row is ``(ts, k, v, u)``: ``ts`` whole seconds after :data:`BASE` (None: a null event
time), ``k`` a string key, ``v`` an integer value, ``u`` a user id; any of them may be
null. Whole seconds make ties frequent on purpose: rows exactly at a window end, at the
watermark, at ``last + gap`` of a session.
"""

from __future__ import annotations

import json
import os
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

Row = tuple[int | None, str | None, int | None, int | None]
Files = list[list[Row]]
"""Rows per file, in arrival order (an empty list is an empty file)."""

BASE = datetime(2024, 1, 1, tzinfo=UTC)
MICROS = 1_000_000
SCHEMA = pa.schema(
    [("ts", pa.timestamp("us", "UTC")), ("k", pa.string()), ("v", pa.int64()), ("u", pa.int64())]
)
SPARK_SCHEMA = "ts timestamp, k string, v bigint, u bigint"
"""The same schema in Spark's DDL."""
MTIME0 = 1_700_000_000


def iso(seconds: int | None) -> str | None:
    """``ts`` as the ISO-8601 string written into JSON files."""
    if seconds is None:
        return None
    return (BASE + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def micros(seconds: int) -> int:
    """``ts`` as epoch microseconds (the unit both engines' outputs are compared in)."""
    return int(BASE.timestamp()) * MICROS + seconds * MICROS


def write_files(directory: Path, files: Files, fmt: str) -> Path:
    """Write ``files`` as ``part-NNNN.<fmt>`` (JSON lines or Parquet) with mtimes one
    second apart, so arrival order (mtime, then name) is list order for both engines."""
    directory.mkdir(parents=True, exist_ok=True)
    for index, rows in enumerate(files):
        path = directory / f"part-{index:04d}.{fmt}"
        if fmt == "json":
            path.write_text("".join(_json_line(row) for row in rows))
        else:
            pq.write_table(rows_table(rows), path)
        os.utime(path, (MTIME0 + index, MTIME0 + index))
    return directory


def rows_table(rows: list[Row]) -> pa.Table:
    """``rows`` as an Arrow table of :data:`SCHEMA`."""
    ts = [None if r[0] is None else BASE + timedelta(seconds=r[0]) for r in rows]
    rest = [[r[i] for r in rows] for i in (1, 2, 3)]
    return pa.table([ts, *rest], schema=SCHEMA)


def _json_line(row: Row) -> str:
    ts, k, v, u = row
    return json.dumps({"ts": iso(ts), "k": k, "v": v, "u": u}) + "\n"


def random_files(
    seed: int,
    files: int = 7,
    *,
    step: int = 6,
    spread: int = 30,
    null_rate: float = 0.1,
    empty_rate: float = 0.15,
) -> Files:
    """A seeded stream of ``files`` files: a clock advancing ``0..step`` seconds per file,
    rows up to ``spread`` seconds behind it (out of order, some behind the watermark, some
    in windows already closed), keys a/b/c, nulls in k, v and u at ``null_rate``, and
    empty files at ``empty_rate`` (never the first)."""
    rng = random.Random(seed)
    clock: int = 20
    out: Files = []
    for index in range(files):
        clock += rng.randint(0, step)
        if index and rng.random() < empty_rate:
            out.append([])
            continue
        out.append([_random_row(rng, clock, spread, null_rate) for _ in range(rng.randint(1, 8))])
    return out


def _random_row(rng: random.Random, clock: int, spread: int, null_rate: float) -> Row:
    def maybe(value: object) -> object:
        return None if rng.random() < null_rate else value

    behind = rng.choice([0, 0, 0, rng.randint(0, 8), rng.randint(0, spread)])
    k = maybe(rng.choice("abc"))
    v = maybe(rng.randint(-5, 20))
    u = maybe(rng.randint(0, 6))
    return (clock - behind, k, v, u)  # type: ignore[return-value]
