"""Cost of one micro-batch of a stream-static left join, through the streaming engine
(``IncrementalQuery.run``): median over ``--batches`` batches, per static-side size and
batch size. The static side is pinned once (its one-time load is reported apart).

    .venv/bin/python bench/stream_static_join.py --static 100000 1000000 --batch 1000 10000
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import polars as pl
import pyarrow as pa

import streamkit as sk
from streamkit.streaming.incremental import IncrementalQuery

SCHEMA = pa.schema([("user_id", pa.int64()), ("v", pa.int64())])


def measure(static_rows: int, batch_rows: int, batches: int) -> tuple[float, float]:
    """(seconds to pin the static side, median seconds per micro-batch)."""
    rng = np.random.default_rng(7)
    users = sk.from_arrow(
        pa.table({"user_id": np.arange(static_rows), "country": rng.integers(0, 200, static_rows)})
    )
    engine = IncrementalQuery(sk.read_stream.memory(SCHEMA).join(users, "user_id", "left").plan,
                              "append")  # fmt: skip
    frames = [
        pl.DataFrame(
            {
                "user_id": rng.integers(0, static_rows * 2, batch_rows),
                "v": np.ones(batch_rows, np.int64),
            }
        )
        for _ in range(batches + 1)
    ]
    started = time.perf_counter()
    engine.run(frames[0])  # pins the static side
    first = time.perf_counter() - started
    times = []
    for frame in frames[1:]:
        started = time.perf_counter()
        out = engine.run(frame).output
        times.append(time.perf_counter() - started)
        assert out.height == batch_rows  # a left join on a unique static key: one row each
    return first, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--static", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--batch", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    measure(1_000, 100, 2)  # warm-up: Polars' thread pool, imports
    print("| static rows | batch rows | first batch (pins) | median batch |")
    print("|---:|---:|---:|---:|")
    for static_rows in args.static:
        for batch_rows in args.batch:
            first, median = measure(static_rows, batch_rows, args.batches)
            cells = [f"{static_rows:,}", f"{batch_rows:,}", f"{first * 1e3:.1f} ms"]
            print(f"| {' | '.join(cells)} | {median * 1e3:.2f} ms |")


if __name__ == "__main__":
    main()
