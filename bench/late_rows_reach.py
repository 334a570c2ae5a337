"""What judging late rows only on the rows that reach the aggregation costs (issue 18,
review F3): a late row is reported only when the plan below the aggregation (its filters
and stream-static joins) lets it through, found by running that plan once more over the
batch's late rows, with a row index. Batches without late rows, and plans of projections
only, pay nothing; this measures a plan with a filter and many late rows.

Usage:
    .venv/bin/python bench/late_rows_reach.py --rows 200000 --batches 20 --repeat 7

One process, ``IncrementalQuery`` in update mode, count and sum per (10-second window,
key) after ``filter(k != "k0")`` (1% of the rows rejected), fed the same batches; each
batch reaches 60 s further back than the previous one's watermark, so about 13% of its
rows are late. Two modes interleaved, the order alternating: ``before`` (the query with
its operator-input rows unset, ``_reaching = None``: every late row read is reported, as
before the fix) and ``after`` (the fix). Prints per mode the median CPU seconds
(``time.process_time``, all threads) and wall seconds of a round, the ratio ``after /
before`` (ratio of the medians, median of the per-round ratios), the late rows per round
of each mode, and the 1-minute load average before and after.
"""

from __future__ import annotations

import time

import polars as pl
import pyarrow as pa
from _before_after import before_after, options
from computed_watermark import batches

import streamkit as sk
from streamkit.streaming.incremental import IncrementalQuery


def query(mode: str) -> IncrementalQuery:
    schema = pa.schema([("ts", pa.timestamp("us", "UTC")), ("k", pa.string()), ("v", pa.int64())])
    df = sk.from_arrow(schema.empty_table()).filter(sk.col("k") != "k0")
    df = df.with_watermark("ts", "5 seconds")
    agg = df.group_by(sk.window("ts", "10 seconds"), "k").agg(
        sk.count().alias("n"), sk.sum("v").alias("s")
    )
    q = IncrementalQuery(agg.plan, "update")
    if mode == "before":
        q._reaching = None  # the behaviour before the fix, for the A/B
    return q


def one_round(mode: str, data: list[pl.DataFrame]) -> tuple[float, float, int]:
    q = query(mode)
    late = 0
    cpu, wall = time.process_time(), time.perf_counter()
    for frame in data:
        late += q.run(frame).late_rows.height
    return time.process_time() - cpu, time.perf_counter() - wall, late


def main() -> None:
    args = options().parse_args()
    data = batches(args.rows, args.batches, behind_ms=60_000)  # ~12% of rows late
    before_after(one_round, data, args.repeat, "late rows")


if __name__ == "__main__":
    main()
