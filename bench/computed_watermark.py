"""What a watermark on a computed event time costs per batch (issue 18): the event times at
``with_watermark`` are the plan below it run once more over the batch, with a row index.

Usage:
    .venv/bin/python bench/computed_watermark.py --rows 200000 --batches 20 --repeat 7

Two queries on the single-process engine (``IncrementalQuery``, update mode, count and sum
per (10-second window, key)), fed the same batches: ``raw`` has ``with_watermark("ts")``
on the column as read; ``projected`` also computes ``ts2 = ts + 7 s`` (the same
projection, the watermark still on the column as read: the baseline); ``computed`` has
``with_column("ts", ts + 7 s)`` before the watermark. Rounds run every mode (the order
rotating) in one process; prints per mode the median CPU seconds (``time.process_time``,
all threads) and wall seconds of a round, and the ratio to ``projected`` both as the ratio
of the medians and as the median of the per-round ratios; the 1-minute load average
before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pyarrow as pa

import streamkit as sk
from streamkit.streaming.incremental import IncrementalQuery

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def batches(rows: int, count: int, behind_ms: int = 0) -> list[pl.DataFrame]:
    """``count`` batches of ``rows`` rows, event times moving 60 s a batch over
    ``[60 b s - behind_ms, 60 b s + 90 s)``, 100 keys."""
    rng = np.random.default_rng(18)
    out = []
    for b in range(count):
        ms = rng.integers(b * 60_000 - behind_ms, b * 60_000 + 90_000, rows)
        out.append(
            pl.DataFrame(
                {
                    "ts": pl.Series((T0.timestamp() * 1000 + ms).astype("int64"))
                    .cast(pl.Datetime("ms", "UTC"))
                    .cast(pl.Datetime("us", "UTC")),
                    "k": [f"k{i}" for i in rng.integers(0, 100, rows)],
                    "v": rng.integers(0, 1000, rows),
                }
            )
        )
    return out


def query(mode: str) -> IncrementalQuery:
    schema = pa.schema([("ts", pa.timestamp("us", "UTC")), ("k", pa.string()), ("v", pa.int64())])
    df = sk.from_arrow(schema.empty_table())
    if mode == "computed":
        df = df.with_column("ts", sk.col("ts") + timedelta(seconds=7))
    if mode == "projected":
        df = df.with_column("ts2", sk.col("ts") + timedelta(seconds=7))
    df = df.with_watermark("ts", "5 seconds")
    agg = df.group_by(sk.window("ts", "10 seconds"), "k").agg(
        sk.count().alias("n"), sk.sum("v").alias("s")
    )
    return IncrementalQuery(agg.plan, "update")


def one_round(mode: str, data: list[pl.DataFrame]) -> tuple[float, float]:
    q = query(mode)
    cpu, wall = time.process_time(), time.perf_counter()
    for frame in data:
        q.run(frame)
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    data = batches(args.rows, args.batches)
    modes = ("raw", "projected", "computed")
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    wall: dict[str, list[float]] = {m: [] for m in modes}
    load_before = os.getloadavg()[0]
    one_round("raw", data[:2])  # warm-up (imports, compilation caches)
    for r in range(args.repeat):
        for mode in modes[r % 3 :] + modes[: r % 3]:
            c, w = one_round(mode, data)
            cpu[mode].append(c)
            wall[mode].append(w)
    load_after = os.getloadavg()[0]
    for mode in modes:
        print(f"{mode:9s} CPU {statistics.median(cpu[mode]):.3f} s  "
              f"wall {statistics.median(wall[mode]):.3f} s")  # fmt: skip
    base = "projected"
    for mode in ("raw", "computed"):
        medians = statistics.median(cpu[mode]) / statistics.median(cpu[base])
        paired = statistics.median(c / b for c, b in zip(cpu[mode], cpu[base], strict=True))
        wall_ratio = statistics.median(wall[mode]) / statistics.median(wall[base])
        print(f"{mode} / {base} CPU: {medians:.3f} (ratio of medians), {paired:.3f} "
              f"(per round); wall {wall_ratio:.3f}")  # fmt: skip
    print(f"load average (1 min): {load_before:.1f} before, {load_after:.1f} after")


if __name__ == "__main__":
    main()
