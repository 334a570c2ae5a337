"""What grouping by the watermarked key costs (issue 18): a keyed store given an ``expiry``
key files each batch's new keys under that key's value (a Polars expression over the new
keys, a sort, one bucket per distinct value) and evicts them as a window store does.

Usage:
    .venv/bin/python bench/keyed_expiry.py --rows 100000 --batches 20 --repeat 7

Batches of ``--rows`` rows, event times in whole seconds moving 60 s a batch over
``[60 b s, 60 b s + 90 s)``, 1,000 keys, so that a group by (ts, k) and one by
(1-second window, k) hold the same groups. Four modes, fed the same batches, rounds
running every mode (the order rotating) in one process after one short warm-up round:

- ``window``: ``IncrementalQuery`` (update mode, watermark 10 s on ``ts``), count and sum
  per (1-second window, k): the baseline for ``key``;
- ``key``: the same per (ts, k), ``ts`` carrying the watermark (the store's ``expiry``);
- ``store_filed`` / ``store_unfiled``: the key query's ``KeyedStore`` alone, its
  ``merge_rows`` over each batch's input rows (the plan below it run as the engine
  does), with ``expiry="ts"`` and without (nothing
  evicted in either, so both hold the same state): the filing bookkeeping alone.

Prints per mode the median CPU seconds of a round (``time.process_time``, all threads) and
its wall seconds, the ratios ``key``/``window`` and ``store_filed``/``store_unfiled`` as
the ratio of the medians and the median of the per-round ratios, the groups held at the
end, and the 1-minute load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import polars as pl
import pyarrow as pa

import streamkit as sk
from streamkit.execute import aggregate_spec
from streamkit.plan import Aggregate
from streamkit.streaming.agg_steps import input_rows
from streamkit.streaming.incremental import IncrementalQuery
from streamkit.streaming.state.keyed import KeyedStore

T0_S = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp())
SCHEMA = pa.schema([("ts", pa.timestamp("us", "UTC")), ("k", pa.string()), ("v", pa.int64())])
MODES = ("window", "key", "store_filed", "store_unfiled")


def batches(rows: int, count: int) -> list[pl.DataFrame]:
    """``count`` batches of ``rows`` rows (see the module docstring)."""
    rng = np.random.default_rng(18)
    out = []
    for b in range(count):
        seconds = T0_S + rng.integers(b * 60, b * 60 + 90, rows)
        ts = pl.Series(seconds * 1_000_000).cast(pl.Datetime("us", "UTC"))
        keys = pl.Series([f"k{i}" for i in range(1000)])[rng.integers(0, 1000, rows)]
        out.append(pl.DataFrame({"ts": ts, "k": keys, "v": rng.integers(0, 1000, rows)}))
    return out


def frame(by_window: bool) -> sk.DataFrame:
    df = sk.from_arrow(SCHEMA.empty_table()).with_watermark("ts", "10 seconds")
    keys = (sk.window("ts", "1 second"), "k") if by_window else ("ts", "k")
    return df.group_by(*keys).agg(sk.count().alias("n"), sk.sum("v").alias("s"))


def run_query(by_window: bool, data: list[pl.DataFrame]) -> int:
    q = IncrementalQuery(frame(by_window).plan, "update")
    for rows in data:
        q.run(rows)
    return q.state_rows


def run_store(expiry: str | None, data: list[pl.DataFrame]) -> int:
    plan = frame(False).plan
    assert isinstance(plan, Aggregate)
    spec = aggregate_spec(plan)
    store = KeyedStore(spec, expiry=expiry)
    for rows in data:
        store.merge_rows(input_rows(plan, spec, rows))
    return store.rows().height


RUNS: dict[str, Callable[[list[pl.DataFrame]], int]] = {
    "window": lambda d: run_query(True, d),
    "key": lambda d: run_query(False, d),
    "store_filed": lambda d: run_store("ts", d),
    "store_unfiled": lambda d: run_store(None, d),
}


def ratio_line(cpu: dict[str, list[float]], a: str, b: str) -> str:
    medians = statistics.median(cpu[a]) / statistics.median(cpu[b])
    per_round = statistics.median(x / y for x, y in zip(cpu[a], cpu[b], strict=True))
    return f"{a} / {b} CPU: {medians:.3f} (ratio of medians), {per_round:.3f} (per round)"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--repeat", type=int, default=7)
    args = p.parse_args()
    data = batches(args.rows, args.batches)
    load = os.getloadavg()[0]
    cpu: dict[str, list[float]] = {m: [] for m in MODES}
    wall: dict[str, list[float]] = {m: [] for m in MODES}
    held: dict[str, int] = {m: RUNS[m](data[:2]) for m in MODES}  # warm up, not measured
    for r in range(args.repeat):
        for m in MODES[r % len(MODES) :] + MODES[: r % len(MODES)]:
            c0, w0 = time.process_time(), time.perf_counter()
            held[m] = RUNS[m](data)
            cpu[m].append(time.process_time() - c0)
            wall[m].append(time.perf_counter() - w0)
    for m in MODES:
        print(
            f"{m:14s} CPU {statistics.median(cpu[m]):.3f} s  wall "
            f"{statistics.median(wall[m]):.3f} s  groups held {held[m]}"
        )
    print(ratio_line(cpu, "key", "window"))
    print(ratio_line(cpu, "store_filed", "store_unfiled"))
    print(f"load average (1 min): {load:.1f} before, {os.getloadavg()[0]:.1f} after")


if __name__ == "__main__":
    main()
