"""Per-batch cost of a streaming ``drop_duplicates(["id", "ts"])`` as its state grows.

Usage:
    .venv/bin/python bench/dedup_cost.py [--delay "60 seconds"] [--batches 200]

Each batch is 10,000 rows: 8,000 new ids and 2,000 re-deliveries of recent ones, 1,000 ids
per second of event time. With a short delay the state stays bounded (each batch evicts
about as many keys as it adds); with a long one it grows by 8,000 keys a batch. Prints the
keys held at the end and the median and 90th percentile time of batches 100..end, run
in-process through the incremental engine (no source, sink or checkpoint).
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

SCHEMA = pa.schema([("ts", pa.timestamp("us", "UTC")), ("id", pa.int64())])
BASE_US = 1_704_067_200_000_000


def batch(rng: np.random.Generator, first_new: int) -> pl.DataFrame:
    ids = np.concatenate(
        [
            np.arange(first_new, first_new + 8000),
            rng.integers(max(0, first_new - 12_000), first_new + 8000, 2000),
        ]
    )
    ts = pl.Series(BASE_US + (ids // 1000) * 1_000_000).cast(pl.Datetime("us", "UTC"))
    return pl.DataFrame({"ts": ts, "id": ids})


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--delay", default="60 seconds")
    p.add_argument("--batches", type=int, default=200)
    args = p.parse_args()
    df = sk.from_arrow(SCHEMA.empty_table()).with_watermark("ts", args.delay)
    q = IncrementalQuery(df.drop_duplicates(["id", "ts"]).plan, "append")
    rng, times = np.random.default_rng(0), []
    for b in range(args.batches):
        rows = batch(rng, b * 8000)
        start = time.perf_counter()
        q.run(rows)
        times.append(time.perf_counter() - start)
    tail = sorted(times[100:])
    print(
        f"delay {args.delay}: {q.state_rows} keys held after {args.batches} batches; "
        f"batches 100..: median {statistics.median(tail) * 1000:.1f} ms, "
        f"p90 {tail[int(len(tail) * 0.9)] * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
