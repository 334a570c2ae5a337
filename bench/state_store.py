"""W4: keyed state that scales with what changes. streamkit's keyed store against Spark
Structured Streaming's HDFS and RocksDB (changelog checkpointing) state stores, same run.

Query: ``group_by(window(event_time, 1 hour), user_id).agg(count, sum(value))``, update
mode, watermark 10 minutes. The first Parquet file holds every key once (it fills the
state, and is not reported); each later file is one micro-batch of ``--batch-rows`` rows
with user ids drawn uniformly from the keys, all in the same open window, so the state
holds exactly ``--keys`` groups throughout. Every (engine, keys, repeat) runs in a fresh
process. Per batch: latency (streamkit: read + partial + merge + evict + finalize + the
checkpoint protocol, offsets/state/commit; Spark: its ``triggerExecution``), CPU seconds
of the process tree, bytes written to the checkpoint folder (new or changed files, by
listing it after the batch, the same way for every engine), and the run's peak RSS.
Cells are medians over repeats of each run's median batch.

    .venv/bin/python bench/state_store.py --keys 10000 100000 1000000 5000000 --repeat 3

Engines: ``streamkit`` (the keyed store, delta checkpoints, snapshot every 10 batches),
``streamkit-regroup`` (the engine before it: whole-state regroup and snapshot per batch),
``spark-hdfs``, ``spark-rocksdb``. Data is cached in ``bench/data/w4``; the report goes
to ``bench/results/state_store_<UTC time>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "w4"
ENGINES = ("streamkit", "streamkit-regroup", "spark-hdfs", "spark-rocksdb")
HOUR_US = 1_704_067_200_000_000  # 2024-01-01T00:00Z


def new_bytes(root: Path, seen: dict[str, tuple[int, int]]) -> int:
    """Bytes of the files under ``root`` that are new or changed since the last call."""
    total = 0
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            mark = (st.st_size, st.st_mtime_ns)
            if seen.get(path) != mark:
                seen[path] = mark
                total += st.st_size
    return total


def dataset(
    keys: int, batch_rows: int, batches: int, seed: int, touch: int | None = None
) -> list[Path]:
    """The fill file and ``batches`` batch files for ``keys`` (cached); with ``touch``,
    batch rows draw their user ids from ``touch`` of the keys, spread over all of them."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    touch = None if touch is None or touch >= keys else touch
    folder = DATA / (f"k{keys}-r{batch_rows}-s{seed}" + (f"-t{touch}" if touch else ""))
    files = [folder / "fill.parquet", *(folder / f"b{i:03d}.parquet" for i in range(batches))]
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, path in enumerate(files):
        n = keys if i == 0 else batch_rows
        if i == 0:
            users = np.arange(keys, dtype=np.int64)
        elif touch:
            users = rng.integers(0, touch, n) * (keys // touch)
        else:
            users = rng.integers(0, keys, n)
        times = HOUR_US + rng.integers(0, 50 * 60 * 1_000_000, n)
        if path.exists():
            continue
        table = pa.table(
            {
                "event_time": pa.array(times, pa.timestamp("us", tz="UTC")),
                "user_id": pa.array(users, pa.int64()),
                "value": pa.array(np.round(rng.random(n) * 100, 2)),
            }
        )
        pq.write_table(table, path.with_suffix(".tmp"))
        os.replace(path.with_suffix(".tmp"), path)
    return files


def run_streamkit(files: list[Path], variant: str, snapshot_every: int) -> dict[str, Any]:
    """The measured child for streamkit (see the module docstring)."""
    import polars as pl
    import pyarrow.parquet as pq

    import streamkit as sk
    from streamkit import aggregate as K
    from streamkit.execute import aggregate_rows, aggregate_spec, compile_plan, given
    from streamkit.plan import Aggregate
    from streamkit.streaming.checkpoint import CheckpointLog
    from streamkit.streaming.checkpoint_store import LocalCheckpointStore
    from streamkit.streaming.incremental import IncrementalQuery
    from streamkit.streaming.state import KeyedStore

    empty = sk.from_arrow(pq.read_schema(files[0]).empty_table())
    frame = (
        empty.with_watermark("event_time", "10 minutes")
        .group_by(sk.window("event_time", "1 hour"), "user_id")
        .agg(sk.count().alias("n"), sk.sum("value").alias("s"))
    )
    node = frame.plan
    assert isinstance(node, Aggregate)
    spec = aggregate_spec(node)
    store, engine = KeyedStore(spec), IncrementalQuery(node, "update")
    if variant == "streamkit-regroup":  # the engine with the store it had before
        from _regroup_store import RegroupStore

        engine._store = RegroupStore(spec)
    ck = Path(tempfile.mkdtemp(prefix="w4-sk-"))
    log = CheckpointLog(LocalCheckpointStore(ck), snapshot_every=snapshot_every)
    seen: dict[str, tuple[int, int]] = {}
    out: dict[str, list[float]] = {"latency_s": [], "cpu_s": [], "bytes": []}
    top: int | None = None
    for bid, path in enumerate(files):
        t0, c0 = time.perf_counter(), time.process_time()
        rows = pl.read_parquet(path)
        log.write_offsets(bid, {"file": path.name})
        if variant == "streamkit":
            lazy = compile_plan(node.input, None, set(), given(rows))
            touched = store.merge_rows(aggregate_rows(lazy, node, spec).collect())
            high = rows["event_time"].dt.epoch("us").max()
            assert isinstance(high, int)
            top = high if top is None else max(top, high)
            store.evict(top - 600_000_000)
            K.finalize(K.sort_groups(touched, spec.state_keys), spec)
            log.write_changes(bid, store)
        else:
            engine.run(rows)
            log.write_state(bid, engine.state_frame())
        log.write_commit(bid, {"file": path.name}, {"watermark": None, "max_event": None})
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        written = new_bytes(ck, seen)
        if bid:
            out["latency_s"].append(wall)
            out["cpu_s"].append(cpu)
            out["bytes"].append(float(written))
    held = store.height if variant == "streamkit" else engine.state_rows
    return {**out, "peak_rss_bytes": _peak_rss(), "state_rows": held}


def _peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def spawn(engine: str, files: list[Path], args: argparse.Namespace) -> dict[str, Any]:
    """One run in a fresh process; ``error`` set when it failed."""
    if engine.startswith("spark"):
        cmd = [sys.executable, str(HERE / "_spark_state.py"), "--provider", engine[6:]]
        cmd += ["--partitions", str(args.spark_partitions), "--memory", args.spark_memory]
    else:
        cmd = [sys.executable, str(Path(__file__)), "--child", engine]
        cmd += ["--snapshot-every", str(args.snapshot_every)]
    cmd += ["--files", *map(str, files)]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=args.timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout:.0f} s"}
    if proc.returncode != 0 or not proc.stdout.strip():
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        return {"error": f"exit {proc.returncode}: {tail}"}
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return report


def summary(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Medians over repeats of each run's per-batch medians (bytes: median and mean)."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {}

    def med(key: str, fn: Any = statistics.median) -> float:
        return float(statistics.median(fn(r[key]) for r in ok))

    return {
        "p50_latency_s": med("latency_s"),
        "p50_cpu_s": med("cpu_s"),
        "p50_bytes": med("bytes"),
        "mean_bytes": med("bytes", statistics.fmean),
        "mean_latency_s": med("latency_s", statistics.fmean),
        "peak_rss_bytes": statistics.median(r["peak_rss_bytes"] for r in ok),
    }


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def markdown(results: dict[str, dict[str, Any]], args: argparse.Namespace, argv: str) -> str:
    """The results table and the issue's three target ratios."""
    lines = [
        "# W4: keyed state store",
        "",
        f"Command: `.venv/bin/python bench/state_store.py {argv}`",
        f"{args.batch_rows:,}-row batches"
        + (f" drawing from {args.touch:,} of the keys" if args.touch else "")
        + f", {args.batches} measured per run, "
        f"{args.repeat} run(s) per cell (Spark: {args.spark_repeat or args.repeat}); local[2], "
        f"{args.spark_partitions} shuffle partitions. Medians.",
        "",
        "| keys | engine | p50 batch | CPU s/batch | rows/s | bytes/batch p50 | mean | peak RSS |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, cell in results.items():
        engine, keys = key.split("|")
        s = cell["summary"]
        if not s:
            errors = "; ".join(r["error"] for r in cell["runs"])
            lines.append(f"| {int(keys):,} | {engine} | failed: {errors} | | | | | |")
            continue
        lines.append(
            f"| {int(keys):,} | {engine} | {s['p50_latency_s'] * 1000:.0f} ms "
            f"| {s['p50_cpu_s']:.3f} | {args.batch_rows / s['p50_latency_s']:,.0f} "
            f"| {_fmt_bytes(s['p50_bytes'])} | {_fmt_bytes(s['mean_bytes'])} "
            f"| {_fmt_bytes(s['peak_rss_bytes'])} |"
        )
    lines += ["", *targets(results, args.keys)]
    return "\n".join(lines) + "\n"


def targets(results: dict[str, dict[str, Any]], sizes: list[int]) -> list[str]:
    """Latency at the largest size over the smallest; bytes over Spark RocksDB's;
    throughput over each Spark store's."""

    def get(engine: str, keys: int, field: str) -> float | None:
        s = results.get(f"{engine}|{keys}", {}).get("summary") or {}
        value = s.get(field)
        return float(value) if value is not None else None

    out = ["## Targets", ""]
    small, large = min(sizes), max(sizes)
    lo, hi = get("streamkit", small, "p50_latency_s"), get("streamkit", large, "p50_latency_s")
    if lo and hi:
        out.append(
            f"- streamkit latency at {large:,} keys / at {small:,}: {hi / lo:.2f}x (target <= 1.5x)"
        )
    for keys in sizes:
        mine = get("streamkit", keys, "p50_latency_s")
        parts = []
        for spark in ("spark-hdfs", "spark-rocksdb"):
            theirs = get(spark, keys, "p50_latency_s")
            if mine and theirs:
                parts.append(f"{theirs / mine:.1f}x {spark}")
        ours_b, rocks_b = (
            get("streamkit", keys, "p50_bytes"),
            get("spark-rocksdb", keys, "p50_bytes"),
        )
        ours_m, rocks_m = (
            get("streamkit", keys, "mean_bytes"),
            get("spark-rocksdb", keys, "mean_bytes"),
        )
        if ours_b and rocks_b and ours_m and rocks_m:
            parts.append(
                f"bytes/batch {ours_b / rocks_b:.2f}x Spark RocksDB's at the median, "
                f"{ours_m / rocks_m:.2f}x on average (target <= 2x)"
            )
        if parts:
            out.append(
                f"- {keys:,} keys: throughput " + "; ".join(parts) + " (throughput target >= 5x)"
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument(
        "--engines", nargs="+", default=["streamkit", "spark-hdfs", "spark-rocksdb"]
    )
    parser.add_argument("--batch-rows", type=int, default=100_000)
    parser.add_argument(
        "--touch",
        type=int,
        help="batches draw user ids from this many of the keys (default: all of them), "
        "to compare sizes at the same keys touched per batch",
    )
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--spark-repeat", type=int, help="runs per Spark cell (default --repeat)")
    parser.add_argument("--snapshot-every", type=int, default=10)
    parser.add_argument("--spark-partitions", type=int, default=4)
    parser.add_argument("--spark-memory", default="8g")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--child", choices=["streamkit", "streamkit-regroup"])
    parser.add_argument("--files", type=Path, nargs="+")
    args = parser.parse_args()
    if args.child:
        report = run_streamkit(args.files, args.child, args.snapshot_every)
        sys.stdout.write(json.dumps(report) + "\n")
        sys.stdout.flush()
        os._exit(0)
    results: dict[str, dict[str, Any]] = {}
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for keys in args.keys:
        files = dataset(keys, args.batch_rows, args.batches, args.seed, args.touch)
        for engine in args.engines:
            spark = engine.startswith("spark") and args.spark_repeat is not None
            runs = []
            for rep in range(args.spark_repeat if spark else args.repeat):
                runs.append(spawn(engine, files, args))
                got = runs[-1]
                note = got.get("error") or f"p50 {statistics.median(got['latency_s']):.3f} s"
                print(f"keys={keys} {engine} run {rep + 1}: {note}", file=sys.stderr, flush=True)
            results[f"{engine}|{keys}"] = {"runs": runs, "summary": summary(runs)}
        write(results, args, stamp)  # after every size, so a long run keeps what it measured


def write(results: dict[str, dict[str, Any]], args: argparse.Namespace, stamp: str) -> None:
    """Print the report and write it (markdown and raw JSON) under bench/results."""
    text = markdown(results, args, " ".join(sys.argv[1:]))
    print(text, flush=True)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"state_store_{stamp}.md").write_text(text)
    (out / f"state_store_{stamp}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
