"""Seeded generator of a synthetic event log, written to Parquet.

Schema (rows are in *arrival* order, as an ingesting service would append them):

- ``event_time``: ``timestamp[us, tz=UTC]`` spanning 48 hours from 2024-01-01T00:00Z.
  ~5% of rows are late: their event time is up to 10 minutes before their arrival
  time, so the column is out of order relative to row order (clipped at the start).
- ``action``: plain ``string`` (utf8, not dictionary-typed) with 20 distinct values
  and a Zipf-like skew, as a typical user's file would be. Parquet still
  dictionary-encodes the pages; only the Arrow type is plain.
- ``user_id``: ``int64``, exactly 100,000 distinct ids scattered over the positive
  int64 range (not 0..99999, so no engine can exploit dense small ids).
- ``value``: ``float64``, log-normal, no nulls.

The same (rows, seed) always yields the same bytes; files are cached under
``bench/data/`` by (generator version, rows, seed). Everything is vectorised numpy.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

GENERATOR_VERSION = 1
DATA_DIR = Path(__file__).resolve().parent / "data"
START_US = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z in microseconds
SPAN_US = 48 * 3600 * 1_000_000
LATE_FRACTION = 0.05
MAX_LATENESS_US = 10 * 60 * 1_000_000
N_USERS = 100_000
ACTIONS = (
    "view", "click", "scroll", "search", "add_to_cart", "remove_from_cart", "purchase",
    "login", "logout", "signup", "share", "like", "comment", "follow", "unfollow",
    "play", "pause", "download", "upload", "error",
)  # fmt: skip


def _event_times(rng: np.random.Generator, rows: int) -> np.ndarray:
    """Arrival times sorted ascending; ~5% of event times shifted up to 10 min earlier."""
    arrival = np.sort(rng.integers(0, SPAN_US, size=rows, dtype=np.int64))
    late = rng.random(rows) < LATE_FRACTION
    lateness = rng.integers(1, MAX_LATENESS_US + 1, size=rows, dtype=np.int64)
    event = np.where(late, np.maximum(arrival - lateness, 0), arrival)
    return event + START_US


def _user_pool(rng: np.random.Generator) -> np.ndarray:
    """Exactly N_USERS distinct positive int64 ids, in random order."""
    pool = np.unique(rng.integers(1, 2**62, size=N_USERS + 1000, dtype=np.int64))
    return rng.permutation(pool)[:N_USERS]


def generate(rows: int, seed: int) -> pa.Table:
    """Build the event log in memory (deterministic for a given rows and seed)."""
    rng = np.random.default_rng(seed)
    event_us = _event_times(rng, rows)
    weights = 1.0 / np.arange(1, len(ACTIONS) + 1)
    codes = rng.choice(len(ACTIONS), size=rows, p=weights / weights.sum())
    users = _user_pool(rng)[rng.integers(0, N_USERS, size=rows)]
    values = np.round(rng.lognormal(mean=3.0, sigma=1.0, size=rows), 2)
    return pa.table(
        {
            "event_time": pa.array(event_us, type=pa.timestamp("us", tz="UTC")),
            "action": pc.take(pa.array(ACTIONS, type=pa.string()), pa.array(codes)),
            "user_id": pa.array(users, type=pa.int64()),
            "value": pa.array(values, type=pa.float64()),
        }
    )


def data_path(rows: int, seed: int, data_dir: Path = DATA_DIR) -> Path:
    """Cache location of the Parquet file for (rows, seed)."""
    return data_dir / f"events_v{GENERATOR_VERSION}_r{rows}_s{seed}.parquet"


def ensure_parquet(rows: int, seed: int, data_dir: Path = DATA_DIR) -> Path:
    """Return the cached Parquet file, generating it (atomically) if missing.

    Written with pyarrow defaults (snappy, 1Mi-row row groups, dictionary-encoded
    pages where useful): what a typical producer would write.
    """
    path = data_path(rows, seed, data_dir)
    if path.exists():
        return path
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    pq.write_table(generate(rows, seed), tmp)
    tmp.replace(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    args = parser.parse_args()
    for rows in args.rows:
        print(ensure_parquet(rows, args.seed, args.data_dir))


if __name__ == "__main__":
    main()
