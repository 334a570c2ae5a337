"""Benchmark streamkit's query engine against DuckDB and Polars on windowed aggregation.

Usage:
    .venv/bin/python bench/query_engine.py --rows 1000000 5000000 20000000 --repeat 3

Every measurement runs in a fresh Python process (see _measure.py); engines are
interleaved in a rotating order per repetition; every result is checked against
an exact numpy reference (see _verify.py). Prints a markdown report and writes it,
with the raw samples as JSON, to bench/results/. Exit status 1 if any result was
wrong or any run failed. See bench/README.md for how to read the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from _engines import ENGINES, WORKLOADS, streamkit_missing, thread_count
from _measure import Sample, spawn
from _report import DataInfo, Run, cells, markdown, summary_records
from _verify import cached_reference, check, read_ipc, self_check
from gen_events import DATA_DIR, ensure_parquet, generate

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def choose_engines(requested: list[str]) -> list[str]:
    """Requested engines, minus streamkit (with a notice) while its API is missing."""
    reason = streamkit_missing() if "streamkit" in requested else None
    if reason is None:
        return requested
    log(f"NOTE: skipping streamkit ({reason}); measuring {', '.join(requested[:-1])} only")
    return [e for e in requested if e != "streamkit"]


def prepare_input(rows: int, seed: int, workloads: list[str]) -> DataInfo:
    """Generate (or reuse) the file, compute the references, and warm the page cache."""
    path = ensure_parquet(rows, seed)
    table = pq.read_table(path)
    for name in workloads:
        cached_reference(path, WORKLOADS[name], table)
    info = DataInfo(rows, str(path), path.stat().st_size, table.nbytes)
    del table
    with path.open("rb") as f:  # every engine then reads from the page cache alike
        while f.read(1 << 24):
            pass
    return info


def measure_imports(engines: list[str], repeat: int) -> dict[str, list[Sample]]:
    samples: dict[str, list[Sample]] = {e: [] for e in engines}
    for _ in range(repeat):
        for engine in engines:
            samples[engine].append(spawn(engine))
    return samples


def measure_cell(
    workload: str, info: DataInfo, engines: list[str], repeat: int, scratch: Path
) -> list[Run]:
    """``repeat`` rounds; round r starts at engine r (rotating), each run verified."""
    path = Path(info.path)
    ref = cached_reference(path, WORKLOADS[workload])
    runs = []
    for rep in range(repeat):
        for engine in engines[rep % len(engines) :] + engines[: rep % len(engines)]:
            out = scratch / f"{workload}_{info.rows}_{engine}.arrow"
            out.unlink(missing_ok=True)
            load = os.getloadavg()[0]
            sample = spawn(engine, workload=workload, path=path, out=out)
            verdict = None if sample.error else check(read_ipc(out), ref)
            runs.append(Run(workload, info.rows, engine, rep, sample, verdict, load))
            status = sample.error or ("ok" if verdict and verdict.ok else f"WRONG {verdict}")
            log(
                f"{workload} rows={info.rows} {engine} rep={rep}: {sample.wall_s:.3f} s "
                f"(cpu {sample.cpu_s:.3f} s, load {load:.1f}), "
                f"peak {sample.peak_rss_bytes / 1e6:,.0f} MB, {status}"
            )
            if sample.error or not (verdict and verdict.ok):
                log(f"!!! MISMATCH/ERROR: {workload} rows={info.rows} {engine}: {status}")
    return runs


def environment() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for dist in ("duckdb", "polars", "pyarrow", "numpy", "streamkit"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "python": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()}",
        "cores": thread_count(),
        "loadavg_start": os.getloadavg(),
        "versions": versions,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _jsonable(value: object) -> object:
    """Strict-JSON copy: NaN (failed runs) becomes null, tuples become lists."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workloads", nargs="+", choices=sorted(WORKLOADS), default=["W1", "W2"])
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for workload in WORKLOADS.values():  # the reference itself, against a per-row loop
        self_check(generate(2_000, args.seed), workload)
    engines = choose_engines(args.engines)
    env = environment()
    scratch = RESULTS_DIR / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    log(f"engines {engines}, {env['cores']} cores, data in {DATA_DIR}")
    imports = measure_imports(engines, args.repeat)
    data: dict[int, DataInfo] = {}
    runs: list[Run] = []
    for rows in args.rows:
        data[rows] = prepare_input(rows, args.seed, args.workloads)
        for workload in args.workloads:
            runs += measure_cell(workload, data[rows], engines, args.repeat, scratch)
    env["loadavg_end"] = os.getloadavg()
    meta = (
        f"{env['started']}: {env['machine']}, {env['cores']} cores, Python {env['python']}, "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
        + f"; repeat={args.repeat}, seed={args.seed}; load average {env['loadavg_start'][0]:.1f}"
        f" at start, {env['loadavg_end'][0]:.1f} at end"
    )
    report = markdown(runs, data, imports, meta)
    print(report)
    stem = RESULTS_DIR / f"query_engine_{env['started'].replace(':', '')}"
    stem.with_suffix(".md").write_text(report)
    raw = {
        "environment": env,
        "args": vars(args),
        "data": [dataclasses.asdict(d) for d in data.values()],
        "imports": {e: [dataclasses.asdict(s) for s in ss] for e, ss in imports.items()},
        "summary": summary_records(cells(runs), data),
        "runs": [dataclasses.asdict(r) for r in runs],
    }
    stem.with_suffix(".json").write_text(json.dumps(_jsonable(raw), indent=1, default=str))
    log(f"wrote {stem}.md and {stem}.json")
    return 1 if any(c.failures for c in cells(runs)) else 0


if __name__ == "__main__":
    sys.exit(main())
