"""Seeded NDJSON event files for the streaming benchmark (W3).

File ``i`` of a stream holds ``ROWS_PER_FILE`` rows whose *arrival* times cover
``[i * SPAN, (i + 1) * SPAN)`` after 2024-01-01T00:00Z (``SPAN`` = 10 minutes of event
time per file), in arrival order. Columns as in ``gen_events.py``:

- ``event_time``: ISO-8601 string with microseconds and ``Z``; ~5% of rows are up to
  10 minutes late (always within the 10-minute watermark delay, never dropped), and a
  fraction ``very_late`` (default 0.1%) is 10-60 minutes late, so some rows fall behind
  the watermark and exercise the late-row path;
- ``action``: 20 values, Zipf-like skew; ``user_id``: int64 from a pool of 100,000 ids;
  ``value``: log-normal float, 2 decimals.

File ``i`` depends only on ``(seed, i, very_late)``, so a feeder can produce file 10,000
without producing the ones before, and the parent can rebuild any file as Arrow to
compute the reference. Files are written under a temporary name and renamed into place,
with their mtime set so that arrival order (mtime, then name) is the index order.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from gen_events import ACTIONS, DATA_DIR, START_US, _user_pool

STREAM_GEN_VERSION = 1
ROWS_PER_FILE = 100_000
MINUTE_US = 60 * 1_000_000
SPAN_US = 10 * MINUTE_US
LATE_FRACTION = 0.05
VERY_LATE = 0.001
SCHEMA = pa.schema(
    [
        pa.field("event_time", pa.timestamp("us", tz="UTC")),
        pa.field("action", pa.string()),
        pa.field("user_id", pa.int64()),
        pa.field("value", pa.float64()),
    ]
)
"""The declared schema both readers use (``event_time`` parsed from the ISO strings)."""


@functools.cache
def _users(seed: int) -> np.ndarray:
    return _user_pool(np.random.default_rng(seed))


def file_table(seed: int, index: int, very_late: float = VERY_LATE) -> pa.Table:
    """File ``index`` of the stream as Arrow (deterministic in its arguments)."""
    rng = np.random.default_rng([seed, index])
    rows = ROWS_PER_FILE
    arrival = np.sort(rng.integers(0, SPAN_US, size=rows, dtype=np.int64)) + index * SPAN_US
    late = rng.random(rows) < LATE_FRACTION
    lateness = rng.integers(1, 10 * MINUTE_US + 1, size=rows, dtype=np.int64)
    very = rng.random(rows) < very_late
    extra = rng.integers(10 * MINUTE_US, 60 * MINUTE_US + 1, size=rows, dtype=np.int64)
    shift = np.where(late, lateness, 0) + np.where(very, extra, 0)
    event = np.maximum(arrival - shift, 0) + START_US
    weights = 1.0 / np.arange(1, len(ACTIONS) + 1)
    codes = rng.choice(len(ACTIONS), size=rows, p=weights / weights.sum())
    users = _users(seed)[rng.integers(0, len(_users(seed)), size=rows)]
    values = np.round(rng.lognormal(mean=3.0, sigma=1.0, size=rows), 2)
    return pa.table(
        [
            pa.array(event, type=SCHEMA.field("event_time").type),
            pc.take(pa.array(ACTIONS, type=pa.string()), pa.array(codes)),
            pa.array(users, type=pa.int64()),
            pa.array(values, type=pa.float64()),
        ],
        schema=SCHEMA,
    )


def to_ndjson(table: pa.Table) -> bytes:
    """One JSON object per line, ``\\n``-terminated, keys in schema order (vectorised)."""
    micros = table["event_time"].combine_chunks().cast(pa.int64()).to_numpy()
    iso = pa.array(np.datetime_as_string(micros.astype("datetime64[us]"), unit="us"))
    parts = [
        pa.scalar('{"event_time":"'),
        iso,
        pa.scalar('Z","action":"'),
        table["action"].combine_chunks(),
        pa.scalar('","user_id":'),
        pc.cast(table["user_id"].combine_chunks(), pa.string()),
        pa.scalar(',"value":'),
        pc.cast(table["value"].combine_chunks(), pa.string()),
        pa.scalar("}\n"),
    ]
    lines = pc.binary_join_element_wise(*parts, "")
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)
    start, end = int(offsets[lines.offset]), int(offsets[lines.offset + len(lines)])
    data: bytes = lines.buffers()[2].to_pybytes()
    return data[start:end]


def file_name(index: int) -> str:
    """Name of file ``index`` (zero-padded, so name order is index order)."""
    return f"part-{index:07d}.json"


def write_file(directory: Path, seed: int, index: int, very_late: float = VERY_LATE) -> Path:
    """Write file ``index`` of the stream (see :func:`write_table`)."""
    return write_table(directory, index, file_table(seed, index, very_late))


def write_table(directory: Path, index: int, table: pa.Table) -> Path:
    """Write ``table`` as file ``index`` atomically (temp name, then rename); its mtime is
    its index in ms after a fixed epoch, so arrival order is index order."""
    final = directory / file_name(index)
    temp = directory / f".{final.name}.tmp"  # dot files are ignored by the file source
    temp.write_bytes(to_ndjson(table))
    stamp = 1_700_000_000_000_000_000 + index * 1_000_000
    os.utime(temp, ns=(stamp, stamp))
    temp.replace(final)
    return final


def shifted(table: pa.Table, micros: int) -> pa.Table:
    """``table`` with every event time moved ``micros`` later."""
    moved = pc.add(table["event_time"], pa.scalar(micros, pa.duration("us")))
    return table.set_column(0, SCHEMA.field("event_time"), moved.cast(SCHEMA.field(0).type))


def stream_dir(files: int, seed: int, very_late: float) -> Path:
    """Cached directory holding ``files`` files (generated on first use)."""
    tag = f"{very_late:g}".replace(".", "p")
    directory = DATA_DIR / f"stream_v{STREAM_GEN_VERSION}_f{files}_s{seed}_vl{tag}"
    done = DATA_DIR / f"{directory.name}.complete"
    if not done.exists():
        directory.mkdir(parents=True, exist_ok=True)
        for index in range(files):
            write_file(directory, seed, index, very_late)
        done.touch()
    return directory
