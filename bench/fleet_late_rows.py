"""What tagging partial states with the rows read they stand for costs a fleet's source
task (issue 18 / 14: the fleet counts late rows as the single-process engine does;
``streamkit/fleet/late_rows.py``). Only sliding windows and plans with a stream-static
join below the aggregation (or a ``drop_duplicates`` whose source keeps one row per key)
pay; a tumbling window without a join runs the code it ran before.

Usage:
    .venv/bin/python bench/fleet_late_rows.py --rows 200000 --batches 20 --repeat 7
        [--plan sliding|join|repeated]

One process, one ``SourceStage`` per round fed the same batches (event times 60 s apart
per batch, 100 keys), each batch's partial states routed and encoded into 4 exchange
chunks (``SourceStage.chunks``), for count and sum per (sliding 10-second window, 5-second
slide, key) (``--plan sliding``: the kernel's count), or per (tumbling 10-second window, a
column of a 100-row static table joined on the key) (``--plan join``: its keys are
unique, so no row repeats: one check of the table; ``--plan repeated``: 10 of its keys
twice, so 10% of the rows are joined twice: the row index threaded through the join and
the count taken from the joined rows). Two modes
interleaved, the order alternating: ``before`` (the stage with the tag switched off,
``_late_counts = False``: the code path and chunks before the fix) and ``after``. Prints
per mode the median CPU seconds (``time.process_time``, all threads) and wall seconds of
a round and the chunk bytes of a round, the ratio ``after / before`` (ratio of the
medians, median of per-round ratios), and the 1-minute load average before and after.
"""

from __future__ import annotations

import time
from functools import partial

import polars as pl
import pyarrow as pa
from _before_after import before_after, options
from computed_watermark import batches

import streamkit as sk
from streamkit.fleet import FleetPlan, SourceStage


def stage(mode: str, plan: str) -> SourceStage:
    schema = pa.schema([("ts", pa.timestamp("us", "UTC")), ("k", pa.string()), ("v", pa.int64())])
    df = sk.read_stream.memory(schema).with_watermark("ts", "5 seconds")
    window = sk.window("ts", "10 seconds", "5 seconds")
    if plan != "sliding":  # every row finds a row of a 100-row table: grouped by its column
        keys = list(range(100)) + (list(range(10)) if plan == "repeated" else [])
        table = pa.table({"k": [f"k{i}" for i in keys], "g": [i % 10 for i in keys]})
        df, window = df.join(sk.from_arrow(table), on="k"), sk.window("ts", "10 seconds")
    agg = df.group_by(window, "k" if plan == "sliding" else "g").agg(
        sk.count().alias("n"), sk.sum("v").alias("s")
    )
    source = SourceStage(FleetPlan.of(agg.plan, "update"))
    if mode == "before":  # the code path before the fix, for the A/B
        source._late_counts, source._settled = False, True
    return source


def one_round(mode: str, data: list[pl.DataFrame], plan: str) -> tuple[float, float, int]:
    source = stage(mode, plan)
    size = 0
    cpu, wall = time.process_time(), time.perf_counter()
    for seq, frame in enumerate(data):
        out = source.run(frame)
        first = str(seq) if seq else None
        parts = source.chunks(out, "s", first, str(seq + 1), out.max_event, False, 4, "q")
        size += sum(len(p) for chunk in parts for p in chunk)
    return time.process_time() - cpu, time.perf_counter() - wall, size


def main() -> None:
    parser = options()
    parser.add_argument("--plan", choices=["sliding", "join", "repeated"], default="sliding")
    args = parser.parse_args()
    data = batches(args.rows, args.batches, behind_ms=60_000)
    before_after(partial(one_round, plan=args.plan), data, args.repeat, "chunk bytes")


if __name__ == "__main__":
    main()
