"""W1 for streamkit from several source trees against DuckDB and Polars, interleaved.

    nice -n 10 .venv/bin/python bench/w1_trees.py --rows 5000000 --repeat 5 \\
        --tree before=/tmp/before --tree after=.

Each measurement is one fresh process (``_measure.py``, the query of ``_engines.py``, the
same timed region as ``query_engine.py``); a tree is put first on ``PYTHONPATH`` for its
streamkit runs. Rounds are interleaved (every tree and engine once per round, the order
rotating), so a slow period of a shared machine spreads over all of them. Every result is
checked against the exact reference (``_verify.py``). Prints medians of wall and CPU
seconds and their ratios to the faster baseline (by median wall and by median CPU), and
median peak RSS. ``--cold-tree LABEL=PATH`` measures a tree as the bench did before
2026-12-06: streamkit's lazily imported modules and a full garbage collection inside the
timed region (DuckDB and Polars are always measured the current way)."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

from _engines import WORKLOADS
from _measure import spawn
from _verify import cached_reference, check, read_ipc
from gen_events import ensure_parquet

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--tree", action="append", required=True, help="LABEL=PATH")
    parser.add_argument(
        "--cold-tree",
        action="append",
        default=[],
        help="LABEL=PATH measured as the bench did before 2026-12-06 (_measure.spawn's cold)",
    )
    args = parser.parse_args()
    trees = dict(t.split("=", 1) for t in args.tree + args.cold_tree)
    cold = {t.split("=", 1)[0] for t in args.cold_tree}
    path = ensure_parquet(args.rows, args.seed)
    ref = cached_reference(path, WORKLOADS["W1"])
    base_path = os.environ.get("PYTHONPATH", "")
    runs: list[tuple[str, str | None]] = list(trees.items())
    runs += [("duckdb", None), ("polars", None)]
    samples: dict[str, list[tuple[float, float, float]]] = {label: [] for label, _ in runs}
    out = HERE / "results" / "scratch" / "w1_trees.arrow"
    out.parent.mkdir(parents=True, exist_ok=True)
    failed = False
    for rep in range(args.repeat):
        for label, tree in runs[rep % len(runs) :] + runs[: rep % len(runs)]:
            os.environ["PYTHONPATH"] = str(Path(tree).resolve()) if tree else base_path
            engine = "streamkit" if tree else label
            out.unlink(missing_ok=True)
            sample = spawn(engine, workload="W1", path=path, out=out, cold=label in cold)
            verdict = None if sample.error else check(read_ipc(out), ref)
            ok = verdict is not None and verdict.ok
            failed |= not ok
            samples[label].append((sample.wall_s, sample.cpu_s, sample.peak_rss_bytes / 2**20))
            load = os.getloadavg()[0]
            print(
                f"rep {rep} {label}: {sample.wall_s:.3f} s, cpu {sample.cpu_s:.3f} s, "
                f"peak {sample.peak_rss_bytes / 2**20:.0f} MiB, "
                f"load {load:.1f}, {'ok' if ok else sample.error or verdict}",
                file=sys.stderr,
            )
    med = {
        k: tuple(statistics.median(s[i] for s in v) for i in range(3)) for k, v in samples.items()
    }
    wall_best = min(med["duckdb"][0], med["polars"][0])
    cpu_best = min(med["duckdb"][1], med["polars"][1])
    print(f"W1, {args.rows:,} rows, {args.repeat} rounds; medians")
    print("| run | wall s | CPU s | wall / faster baseline | CPU / faster by CPU | peak MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, (wall, cpu, peak) in med.items():
        print(
            f"| {label} | {wall:.3f} | {cpu:.3f} | {wall / wall_best:.2f} | {cpu / cpu_best:.2f} "
            f"| {peak:.0f} |"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
