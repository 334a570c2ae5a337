"""W1 with the dense-slot partials on and off, alternating in one process, by CPU time.

    nice -n 10 .venv/bin/python bench/w1_slots.py --rows 5000000 20000000 --repeat 7

The "group-by" run sets ``streamkit.aggregate.SLOT_MIN_ROWS`` above any chunk, so every
chunk takes the Polars group-by (the code path before the slots); "slots" leaves the
default. Per round: the bench's streamkit W1 query (``_engines.py``, the same timed region
as ``query_engine.py``) once each way, the order alternating, then each way's partial step
alone over the same collected 1Mi-row chunks (the kernel's cost per chunk, without the
read). Prints medians of CPU seconds (``time.process_time``, both cores' work) and wall.
Checks: the slot run's result passes ``_verify.check``; counts and sketches equal the
group-by run's, sums and averages within 1e-12 relative.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import polars as pl
import pyarrow as pa
from _engines import WORKLOADS, prepare
from _verify import cached_reference, check
from gen_events import ensure_parquet

from streamkit import aggregate as K

WAYS = {"group-by": 2**62, "slots": K.SLOT_MIN_ROWS}


def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def chunks_of(run: Callable[[], pa.Table]) -> list[tuple[pl.DataFrame, K.AggregateSpec]]:
    """The rows each call of ``partial`` receives in one run of the query."""
    seen: list[tuple[pl.DataFrame, K.AggregateSpec]] = []
    real = K.partial

    def spy(
        rows: pl.LazyFrame, spec: K.AggregateSpec, last_rows: str | None = None
    ) -> pl.DataFrame:
        data = rows.collect()
        seen.append((data, spec))
        return real(data.lazy(), spec, last_rows)

    K.partial = spy
    try:
        run()
    finally:
        K.partial = real
    return seen


def partials_cpu(chunks: list[tuple[pl.DataFrame, K.AggregateSpec]]) -> float:
    """CPU seconds of ``partial`` over every chunk, one after the other."""
    cpu = time.process_time()
    for data, spec in chunks:
        K.partial(data.lazy(), spec)
    return time.process_time() - cpu


def same(a: pa.Table, b: pa.Table) -> bool:
    keys = [("window", "ascending"), ("action", "ascending")]
    x, y = pl.from_arrow(a.sort_by(keys)), pl.from_arrow(b.sort_by(keys))
    assert isinstance(x, pl.DataFrame)
    assert isinstance(y, pl.DataFrame)
    exact = ["window", "action", "n", "approx_count_distinct(user_id)"]
    floats = ["sum(value)", "avg(value)"]
    close = all(np.allclose(x[c].to_numpy(), y[c].to_numpy(), rtol=1e-12, atol=0) for c in floats)
    return x.select(exact).equals(y.select(exact)) and close


def measure(rows: int, repeat: int, seed: int) -> bool:
    path = ensure_parquet(rows, seed)
    workload = WORKLOADS["W1"]
    ref = cached_reference(path, workload)
    run = prepare("streamkit", workload, path)
    chunks = chunks_of(run)
    query: dict[str, list[tuple[float, float]]] = {w: [] for w in WAYS}
    kernel: dict[str, list[float]] = {w: [] for w in WAYS}
    ok = True
    for rep in range(repeat):
        order = list(WAYS) if rep % 2 == 0 else list(WAYS)[::-1]
        results = {}
        for way in order:
            K.SLOT_MIN_ROWS = WAYS[way]
            wall, cpu, results[way] = timed(run)
            query[way].append((wall, cpu))
        for way in order:
            K.SLOT_MIN_ROWS = WAYS[way]
            kernel[way].append(partials_cpu(chunks))
        verdict = check(results["slots"], ref)
        ok &= verdict.ok and same(results["slots"], results["group-by"])
        print(f"round {rep}: {'ok' if ok else verdict}", file=sys.stderr)
    K.SLOT_MIN_ROWS = WAYS["slots"]
    per_mi = len(chunks) and rows / (1 << 20)
    print(f"\nW1, {rows:,} rows ({len(chunks)} chunks), {repeat} rounds, medians")
    print("| way | query CPU s | query wall s | partials CPU s | partial CPU ms per 1Mi rows |")
    print("|---|---:|---:|---:|---:|")
    for way in WAYS:
        cpu = statistics.median(c for _, c in query[way])
        wall = statistics.median(w for w, _ in query[way])
        part = statistics.median(kernel[way])
        print(f"| {way} | {cpu:.3f} | {wall:.3f} | {part:.3f} | {1e3 * part / per_mi:.1f} |")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[5_000_000])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    verdicts = [measure(rows, args.repeat, args.seed) for rows in args.rows]  # every size
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
