"""Batch job: event counts per action per 1-hour window over a Parquet file.

Run: ``python examples/batch_windowed_counts.py [events.parquet]``. With no argument it
writes a small synthetic clickstream first, so it runs anywhere.
"""

from __future__ import annotations

import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import streamkit as sk


def synthetic_events(path: Path, rows: int = 200_000, seed: int = 1) -> Path:
    """A seeded clickstream over 6 hours written to ``path``."""
    rng = np.random.default_rng(seed)
    start = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1e6)
    times = start + np.sort(rng.integers(0, 6 * 3600 * 10**6, rows))
    actions = np.array(["view", "click", "add_to_cart", "purchase", "share"])
    table = pa.table(
        {
            "event_time": pa.array(times, pa.timestamp("us", "UTC")),
            "action": actions[rng.choice(5, rows, p=[0.6, 0.25, 0.08, 0.05, 0.02])],
            "user_id": rng.integers(0, 5_000, rows),
            "value": np.round(rng.gamma(2.0, 10.0, rows), 2),
        }
    )
    pq.write_table(table, path)
    return path


def windowed_counts(df: sk.DataFrame) -> sk.DataFrame:
    """The query: the same function serves batch jobs and streams."""
    return (
        df.filter(sk.col("value") > 0)
        .group_by(sk.window("event_time", "1 hour"), "action")
        .agg(
            sk.count().alias("events"),
            sk.sum("value").alias("revenue"),
            sk.approx_count_distinct("user_id").alias("users"),
        )
    )


def main(argv: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(argv[1]) if len(argv) > 1 else synthetic_events(Path(tmp) / "events.parquet")
        query = windowed_counts(sk.read.parquet(str(path)))
        query.explain()
        result = query.to_pandas()
        result["window"] = result["window"].map(lambda w: f"{w['start']:%H:%M}-{w['end']:%H:%M}")
        print(result.to_string(index=False))


if __name__ == "__main__":
    main(sys.argv)
