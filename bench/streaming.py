"""W3: streamkit's streaming engine against a hand-written pyarrow loop, on NDJSON files.

Usage:
    .venv/bin/python bench/streaming.py --files 40 --repeat 3 [--soak-seconds 300]
        [--kinesis-records 200000] [--profile]

``--files`` NDJSON files of 100,000 rows each (``_stream_gen.py``, seeded, cached in
bench/data/) are read as a stream, one file per trigger, by both readers of
``_stream_run.py``, each in a fresh process per measurement, interleaved with a rotating
order; ``with_watermark("event_time", "10 minutes")``, count / sum / avg per (1-hour
window, action), update mode. Every result is checked against an exact numpy reference
that applies Spark's late-row rule per file (``expected``); a wrong result is reported
and makes the exit status 1. Optional: a soak (``_stream_soak.py``), the same query fed
from Kinesis (``_stream_kinesis.py``), and an in-process profile of the engine's call
sites (``_stream_profile.py``). Prints markdown; writes bench/results/streaming_<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from _engines import WORKLOADS
from _stream_gen import ROWS_PER_FILE, VERY_LATE, file_table, stream_dir
from _stream_run import RETENTIONS, problems
from _verify import read_ipc, reference
from query_engine import _jsonable, environment

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
DELAY_US = 600_000_000
HOUR_US = 3_600_000_000
READERS = ("loop", "streamkit")
TARGET_RATIO, TARGET_P50_MS = 1.0, 100.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def expected(files: int, seed: int, very_late: float) -> tuple[pa.Table, int]:
    """Exact final aggregates and the number of late rows under Spark's rules (README,
    "Streaming semantics"), from the generator's Arrow tables (not from the JSON), file
    ``i`` being batch ``i``: the watermark after a batch is the largest event time so far,
    in whole milliseconds, minus 10 minutes (never decreasing); batch ``i`` drops the rows
    whose 1-hour window ends at or before the watermark in force in batch ``i - 1`` (the
    one after batch ``i - 2``), and keeps every other row."""
    kept, late, top = [], 0, None
    after: list[int] = []  # the watermark after each batch
    for index in range(files):
        table = file_table(seed, index, very_late)
        ts = table["event_time"].cast(pa.int64()).to_numpy()
        if index >= 2:
            keep = ts // HOUR_US * HOUR_US + HOUR_US > after[index - 2]
            late += int((~keep).sum())
            kept.append(table.filter(pa.array(keep)))
        else:
            kept.append(table)
        top = int(ts.max()) if top is None else max(top, int(ts.max()))
        mark = top // 1000 * 1000 - DELAY_US
        after.append(mark if not after else max(after[-1], mark))
    ref = reference(pa.concat_tables(kept), WORKLOADS["W1"])
    return ref.select(["start", "action", "n", "sum", "avg"]), late


def spawn(reader: str, directory: Path, out: Path, extra: list[str]) -> dict[str, Any]:
    """One measurement in a fresh process; ``{"error": ...}`` if it failed."""
    cmd = [sys.executable, str(HERE / "_stream_run.py"), "--engine", reader]
    cmd += ["--dir", str(directory), "--out", str(out), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    if proc.returncode != 0:
        return {"error": " | ".join(proc.stderr.strip().splitlines()[-3:])}
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return report


def measure(args: argparse.Namespace, directory: Path, ref: pa.Table, late: int) -> list[Any]:
    """``--repeat`` rounds over the readers in a rotating order; each run verified."""
    scratch = RESULTS_DIR / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    for rep in range(args.repeat):
        order = READERS[rep % 2 :] + READERS[: rep % 2]
        for reader in order:
            out = scratch / f"w3_{reader}.arrow"
            extra = ["--sink", args.sink, "--retention", args.retention]
            run = spawn(reader, directory, out, extra)
            run.update(reader=reader, rep=rep, load=os.getloadavg()[0])
            if "error" not in run:
                run["problems"] = problems(read_ipc(out), ref)
                if run["late_rows"] != late:
                    run["problems"].append(f"{run['late_rows']} late rows, expected {late}")
            runs.append(run)
            log(f"  rep {rep} {reader:<9} {_line(run, args.files)}")
    return runs


def _line(run: dict[str, Any], files: int) -> str:
    if "error" in run:
        return f"ERROR {run['error']}"
    verdict = "ok" if not run["problems"] else "!!! MISMATCH " + "; ".join(run["problems"])
    rate = files * ROWS_PER_FILE / run["wall_s"]
    p50 = statistics.median(run["batch_s"]) * 1000
    return f"{run['wall_s']:.2f} s, {rate:,.0f} rows/s, p50 batch {p50:.1f} ms, {verdict}"


def summarise(runs: list[dict[str, Any]], files: int) -> dict[str, dict[str, float]]:
    """Per reader: medians over the good runs."""
    summary: dict[str, dict[str, float]] = {}
    for reader in READERS:
        mine = [r for r in runs if r["reader"] == reader]
        good = [r for r in mine if not r.get("error") and not r["problems"]]
        if not good:
            continue
        med = statistics.median
        summary[reader] = {
            "runs": len(good),
            "of": len(mine),
            "wall_s": med(r["wall_s"] for r in good),
            "min_wall_s": min(r["wall_s"] for r in good),
            "cpu_s": med(r["cpu_s"] for r in good),
            "rows_per_s": med(files * ROWS_PER_FILE / r["wall_s"] for r in good),
            "p50_ms": med(med(r["batch_s"]) * 1000 for r in good),
            "p95_ms": med(float(np.quantile(r["batch_s"], 0.95)) * 1000 for r in good),
            "p50_period_ms": med(med(r["period_s"]) * 1000 for r in good if r["period_s"]),
            "peak_rss_mb": med(r["peak_rss_bytes"] / 2**20 for r in good),
        }
        summary[reader]["phases_ms"] = {  # type: ignore[assignment]
            k: med(med(r["phases_s"][k]) * 1000 for r in good) for k in good[0]["phases_s"]
        }
    return summary


def markdown(summary: dict[str, dict[str, Any]], files: int) -> list[str]:
    lines = [
        f"W3, {files} files x {ROWS_PER_FILE:,} rows, medians of fresh processes (exact: "
        "the result and late-row count equal the reference's; only those runs are summed):",
        "",
        "| reader | exact runs | median s | min s | median CPU s | rows/s | p50 batch ms "
        "| p95 batch ms | p50 period ms | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for reader, s in summary.items():
        lines.append(
            f"| {reader} | {s['runs']} of {s['of']} | {s['wall_s']:.3f} | {s['min_wall_s']:.3f} | "
            f"{s['cpu_s']:.3f} | {s['rows_per_s']:,.0f} | {s['p50_ms']:.1f} | {s['p95_ms']:.1f}"
            f" | {s['p50_period_ms']:.1f} | {s['peak_rss_mb']:,.0f} |"
        )
    for reader, s in summary.items():
        phases = ", ".join(f"{k} {v:.1f}" for k, v in s["phases_ms"].items())
        lines.append(f"\n{reader} median ms per batch by phase: {phases}")
    if set(READERS) <= set(summary):
        loop, sk = summary["loop"], summary["streamkit"]
        ratio = sk["rows_per_s"] / loop["rows_per_s"]
        cpu_ratio = loop["cpu_s"] / sk["cpu_s"]
        fast, quick = ratio >= TARGET_RATIO, sk["p50_ms"] <= TARGET_P50_MS
        lines.append(
            f"\nstreamkit / loop rows/s: **{ratio:.2f}x** (target >= {TARGET_RATIO}: "
            f"{'meets' if fast else 'misses'}), by CPU time {cpu_ratio:.2f}x; streamkit p50 "
            f"batch {sk['p50_ms']:.1f} ms (target <= {TARGET_P50_MS:.0f}: "
            f"{'meets' if quick else 'misses'})"
        )
    return lines


def soak_lines(report: dict[str, Any]) -> list[str]:
    batches = report["batches"]
    rows = sum(b[2] for b in batches)
    per_minute = [
        statistics.median(b[3] for b in batches if m * 60 <= b[1] < (m + 1) * 60) * 1000
        for m in range(int(report["seconds"] // 60))
        if any(m * 60 <= b[1] < (m + 1) * 60 for b in batches)
    ]
    rss = [s[1] / 2**20 for s in report["rss_samples"] if s[0] >= report["warmup_s"]]
    return [
        f"Soak: {report['seconds']:.0f} s at {report['rate']:,.0f} rows/s offered, retention "
        f"{report['retention']}: {len(batches)} batches, {rows:,} rows, state rows max "
        f"{max(b[4] for b in batches)}, late rows kept {report['late_rows_kept']:,}, "
        f"dead letters {report['dead_letters']}, feeder late writes "
        f"{report['feeder_late_writes']}",
        f"RSS after warm-up ({report['warmup_s']:.0f} s): min {min(rss):.0f} MB, max "
        f"{max(rss):.0f} MB, last {rss[-1]:.0f} MB; slope **{report['slope_mb_per_min']:+.2f} "
        f"MB/min**; peak (VmHWM) {report['peak_rss_bytes'] / 2**20:.0f} MB; Arrow pool slope "
        f"{report['arrow_pool_slope_mb_per_min']:+.2f} MB/min",
        "p50 batch ms per minute: " + ", ".join(f"{v:.1f}" for v in per_minute),
        f"held at the end: {report['retained']}",
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--very-late", type=float, default=VERY_LATE)
    parser.add_argument("--sink", choices=("memory", "foreach"), default="memory")
    parser.add_argument("--soak-seconds", type=float, default=0.0)
    parser.add_argument("--soak-rate", type=float, default=300_000.0, help="rows/s offered")
    parser.add_argument("--retention", choices=RETENTIONS, default="none")
    parser.add_argument("--soak-retention", choices=RETENTIONS, default="none")
    parser.add_argument("--kinesis-records", type=int, default=0, help="0: skip Kinesis")
    parser.add_argument("--kinesis-repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.files < 2:
        parser.error("--repeat must be >= 1 and --files >= 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = environment()
    directory = stream_dir(args.files, args.seed, args.very_late)
    ref, late = expected(args.files, args.seed, args.very_late)
    log(f"{args.files} files in {directory}; reference: {ref.num_rows} groups, {late} late rows")
    runs = measure(args, directory, ref, late)
    summary = summarise(runs, args.files)
    lines = markdown(summary, args.files)
    raw: dict[str, Any] = {"environment": env, "args": vars(args), "runs": runs}
    if args.profile:
        run = spawn("streamkit", directory, RESULTS_DIR / "scratch" / "w3_prof.arrow",
                    ["--sink", args.sink, "--profile"])  # fmt: skip
        raw["profile"] = run.get("profile_ms_per_batch", run)
        lines += ["", "streamkit call sites, inclusive wall ms per batch (calls per batch):"]
        if "profile_ms_per_batch" in run:
            lines += [f"- {k}: {v[0]:.2f} ({v[1]:.1f})" for k, v in raw["profile"].items()]
        else:
            lines += [f"- the profiled run failed: {run}"]
    if args.soak_seconds > 0:
        from _stream_soak import run_soak

        log(f"soak: {args.soak_seconds:.0f} s at {args.soak_rate:,.0f} rows/s ...")
        try:
            raw["soak"] = run_soak(
                args.soak_seconds, args.soak_rate, args.seed, args.very_late, args.soak_retention
            )
            lines += ["", *soak_lines(raw["soak"])]
        except Exception as exc:  # reported; the other parts' figures are still written
            raw["soak_error"] = repr(exc)
            lines += ["", f"Soak: !!! ERROR {exc!r}"]
    if args.kinesis_records > 0:
        from _stream_kinesis import run_kinesis

        log(f"kinesis: {args.kinesis_records:,} records ...")
        try:
            raw["kinesis"] = run_kinesis(
                args.kinesis_records, args.seed, args.very_late, args.kinesis_repeat
            )
            lines += ["", raw["kinesis"]["line"]]
        except Exception as exc:
            raw["kinesis_error"] = repr(exc)
            lines += ["", f"Kinesis: !!! ERROR {exc!r}"]
    env["loadavg_end"] = os.getloadavg()
    lines.insert(0, f"Run of {env['started']}, load {env['loadavg_start'][0]:.1f} at start, "
                 f"{env['loadavg_end'][0]:.1f} at end; {env['versions']}\n")  # fmt: skip
    print("\n".join(lines))
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"streaming_{env['started'].replace(':', '')}.json"
    raw["summary"] = summary
    path.write_text(json.dumps(_jsonable(raw), indent=1, default=str))
    log(f"wrote {path}")
    failed = any(r.get("error") or r.get("problems") for r in runs)
    failed |= any(r["problems"] for r in raw.get("kinesis", {}).get("runs", []))
    failed |= "soak_error" in raw or "kinesis_error" in raw
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
