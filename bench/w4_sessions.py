"""W4 for session windows: the session store against the whole-state regroup, same run.

Query: ``group_by(session_window(event_time, 5 minutes), user_id).agg(count, sum(value))``,
append mode (Spark refuses update mode for sessions), watermark 10 minutes, run by the
engine (``IncrementalQuery``) batch by batch with the checkpoint protocol (offsets, state as
delta or snapshot, commit) on a local folder. The first Parquet file (not reported) opens a
session for each of ``--keys`` users, plus ``keys / 100`` extra users per measured batch
whose sessions end so that exactly those close in that batch; each later file is one
micro-batch of ``--batch-rows`` rows with user ids drawn uniformly from the ``--keys``
users, 10 s of event time apart, so their sessions grow and never close. So the state
holds ``keys`` to ``1.01 * keys`` sessions and every batch evicts ``keys / 100``.

Engines, each run in a fresh process: ``session`` (the session store: deltas, snapshot
every ``--snapshot-every`` batches) and ``regroup`` (the store before it, kept in
``bench/_regroup_store.py``: concatenate the state with the batch and regroup it all, a
snapshot every batch). Per batch: wall latency of read + engine + checkpoint, CPU s, the
time in the store's merge and evict, bytes written to the checkpoint folder (new or
changed files), and the run's peak RSS. Cells are medians over repeats of each run's
median batch.

    nice .venv/bin/python bench/w4_sessions.py --keys 10000 100000 1000000 --repeat 2

Data is cached in ``bench/data/w4s``; the report goes to ``bench/results/w4_sessions_<UTC
time>.md`` and ``.json``.
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

import polars as pl

from streamkit.streaming.state import StateStore

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "w4s"
ENGINES = ("session", "regroup")
T0_US = 1_704_067_200_000_000  # 2024-01-01T00:00Z
S_US = 1_000_000
STEP_S = 10


def dataset(keys: int, batch_rows: int, batches: int, seed: int) -> list[Path]:
    """The fill file and ``batches`` batch files (cached; see the module docstring)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = DATA / f"k{keys}-r{batch_rows}-b{batches}-s{seed}"
    files = [folder / "fill.parquet", *(folder / f"b{i:03d}.parquet" for i in range(batches))]
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    closing = keys // 100
    for i, path in enumerate(files):
        if i == 0:  # a session per user, and the sessions that close in batch g + 1
            users = np.arange(keys + closing * batches, dtype=np.int64)
            times = T0_US + rng.integers(0, 60 * S_US, users.size)
            group = (users[keys:] - keys) // max(closing, 1)
            times[keys:] = T0_US + (-845 + STEP_S * group) * S_US  # end: T0 - 545 s + 10 s g
        else:
            users = rng.integers(0, keys, batch_rows)
            lo = T0_US + (60 + STEP_S * (i - 1)) * S_US
            times = lo + rng.integers(0, STEP_S * S_US, batch_rows)
        values = np.round(rng.random(users.size) * 100, 2)
        if path.exists():
            continue
        table = pa.table(
            {
                "event_time": pa.array(times, pa.timestamp("us", tz="UTC")),
                "user_id": pa.array(users, pa.int64()),
                "value": pa.array(values),
            }
        )
        pq.write_table(table, path.with_suffix(".tmp"))
        os.replace(path.with_suffix(".tmp"), path)
    return files


class Timed:
    """A state store that records the seconds spent in its merge and evict."""

    def __init__(self, inner: StateStore) -> None:
        self.inner = inner
        self.merge_s: list[float] = []
        self.evict_s: list[float] = []
        self.evict_cpu_s: list[float] = []
        self.evicted: list[int] = []

    def merge(self, fresh: pl.DataFrame) -> pl.DataFrame:
        t0 = time.perf_counter()
        out = self.inner.merge(fresh)
        self.merge_s.append(time.perf_counter() - t0)
        return out

    def evict(self, watermark: int) -> pl.DataFrame:
        t0, c0 = time.perf_counter(), time.process_time()
        out = self.inner.evict(watermark)
        self.evict_s.append(time.perf_counter() - t0)
        self.evict_cpu_s.append(time.process_time() - c0)
        self.evicted.append(out.height)
        return out

    def rows(self) -> pl.DataFrame:
        return self.inner.rows()

    @property
    def height(self) -> int:
        return self.inner.height

    def take_changes(self) -> pl.DataFrame | None:
        return self.inner.take_changes()

    @property
    def change_keys(self) -> list[str]:
        return self.inner.change_keys

    def load(self, state: pl.DataFrame | None) -> None:
        self.inner.load(state)


def run_child(files: list[Path], engine: str, snapshot_every: int) -> dict[str, Any]:
    """The measured child (see the module docstring)."""
    import pyarrow.parquet as pq
    from _regroup_store import RegroupStore
    from state_store import _peak_rss, new_bytes

    import streamkit as sk
    from streamkit.execute import aggregate_spec
    from streamkit.plan import Aggregate
    from streamkit.streaming.checkpoint import CheckpointLog
    from streamkit.streaming.checkpoint_store import LocalCheckpointStore
    from streamkit.streaming.incremental import IncrementalQuery
    from streamkit.streaming.state import SessionStore

    empty = sk.from_arrow(pq.read_schema(files[0]).empty_table())
    frame = (
        empty.with_watermark("event_time", "10 minutes")
        .group_by(sk.session_window("event_time", "5 minutes"), "user_id")
        .agg(sk.count().alias("n"), sk.sum("value").alias("s"))
    )
    node = frame.plan
    assert isinstance(node, Aggregate)
    spec = aggregate_spec(node)
    query = IncrementalQuery(node, "append")
    timed = Timed(SessionStore(spec) if engine == "session" else RegroupStore(spec))
    query._store = timed  # the store under test, in the engine's own path
    ck = Path(tempfile.mkdtemp(prefix="w4s-"))
    log = CheckpointLog(LocalCheckpointStore(ck), snapshot_every=snapshot_every)
    seen: dict[str, tuple[int, int]] = {}
    out: dict[str, list[float]] = {"latency_s": [], "cpu_s": [], "bytes": [], "emitted": []}
    for bid, path in enumerate(files):
        t0, c0 = time.perf_counter(), time.process_time()
        rows = pl.read_parquet(path)
        log.write_offsets(bid, {"file": path.name})
        result = query.run(rows)
        query.checkpoint_state(log, bid)
        log.write_commit(bid, {"file": path.name}, {"watermark": query.watermark})
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        written = new_bytes(ck, seen)
        if bid:
            out["latency_s"].append(wall)
            out["cpu_s"].append(cpu)
            out["bytes"].append(float(written))
            out["emitted"].append(float(result.output.height))
    return {
        **out,
        "merge_s": timed.merge_s[1:],
        "evict_s": timed.evict_s[1:],
        "evict_cpu_s": timed.evict_cpu_s[1:],
        "evicted": timed.evicted[1:],
        "peak_rss_bytes": _peak_rss(),
        "state_rows": query.state_rows,
    }


def spawn(engine: str, files: list[Path], args: argparse.Namespace) -> dict[str, Any]:
    """One run in a fresh process; ``error`` set when it failed."""
    cmd = [sys.executable, str(Path(__file__)), "--child", engine]
    cmd += ["--snapshot-every", str(args.snapshot_every), "--files", *map(str, files)]
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=args.timeout, check=False, env=env
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout:.0f} s"}
    if proc.returncode != 0 or not proc.stdout.strip():
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        return {"error": f"exit {proc.returncode}: {tail}"}
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return report


def summary(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Medians over repeats of each run's per-batch medians."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {}

    def med(key: str) -> float:
        return float(statistics.median(statistics.median(r[key]) for r in ok))

    fields = ("latency_s", "cpu_s", "merge_s", "evict_s", "evict_cpu_s", "bytes", "evicted")
    out = {f"p50_{k}": med(k) for k in fields}
    out["mean_bytes"] = float(statistics.median(statistics.fmean(r["bytes"]) for r in ok))
    out["peak_rss_bytes"] = float(statistics.median(r["peak_rss_bytes"] for r in ok))
    out["state_rows"] = float(statistics.median(r["state_rows"] for r in ok))
    return out


def _mb(n: float) -> str:
    return f"{n / 2**20:.2f} MB" if n >= 2**20 else f"{n / 1024:.0f} KB"


def markdown(results: dict[str, dict[str, Any]], args: argparse.Namespace, argv: str) -> str:
    """The results table and the latency ratio of the largest to the smallest size."""
    lines = [
        "# W4 sessions: session store vs whole-state regroup",
        "",
        f"Command: `nice .venv/bin/python bench/w4_sessions.py {argv}`",
        f"{args.batch_rows:,}-row batches, {args.batches} measured per run, {args.repeat} "
        f"run(s) per cell, snapshot every {args.snapshot_every} (session). Medians.",
        "",
        "| keys | store | p50 batch | CPU s/batch | merge ms | evict ms | evict CPU ms "
        "| evicted/batch | bytes/batch p50 | mean | peak RSS |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, cell in results.items():
        engine, keys = key.split("|")
        s = cell["summary"]
        if not s:
            errors = "; ".join(r["error"] for r in cell["runs"])
            lines.append(f"| {int(keys):,} | {engine} | failed: {errors} | | | | | | | | |")
            continue
        lines.append(
            f"| {int(keys):,} | {engine} | {s['p50_latency_s'] * 1000:.0f} ms "
            f"| {s['p50_cpu_s']:.3f} | {s['p50_merge_s'] * 1000:.0f} "
            f"| {s['p50_evict_s'] * 1000:.1f} | {s['p50_evict_cpu_s'] * 1000:.1f} "
            f"| {s['p50_evicted']:,.0f} "
            f"| {_mb(s['p50_bytes'])} | {_mb(s['mean_bytes'])} | {_mb(s['peak_rss_bytes'])} |"
        )
    lines += ["", *ratios(results, args.keys)]
    return "\n".join(lines) + "\n"


def ratios(results: dict[str, dict[str, Any]], sizes: list[int]) -> list[str]:
    """Latency at each size over the smallest, per store; session over regroup."""

    def get(engine: str, keys: int, field: str) -> float | None:
        s = results.get(f"{engine}|{keys}", {}).get("summary") or {}
        value = s.get(field)
        return float(value) if value is not None else None

    out = []
    small = min(sizes)
    for engine in ENGINES:
        for field, what in (("p50_latency_s", "latency"), ("p50_cpu_s", "CPU")):
            base = get(engine, small, field)
            for keys in sorted(sizes):
                mine = get(engine, keys, field)
                if base and mine and keys != small:
                    target = " (target <= 1.5x)" if engine == "session" else ""
                    out.append(
                        f"- {engine}: p50 batch {what} at {keys:,} keys / at {small:,}: "
                        f"{mine / base:.2f}x{target}"
                    )
    for keys in sorted(sizes):
        ours, theirs = get("session", keys, "p50_latency_s"), get("regroup", keys, "p50_latency_s")
        ob, tb = get("session", keys, "p50_bytes"), get("regroup", keys, "p50_bytes")
        if ours and theirs and ob and tb:
            out.append(
                f"- {keys:,} keys: session store {theirs / ours:.1f}x faster per batch, "
                f"{tb / ob:.0f}x fewer bytes written than the regroup"
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--batch-rows", type=int, default=100_000)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--snapshot-every", type=int, default=10)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--child", choices=ENGINES)
    parser.add_argument("--files", type=Path, nargs="+")
    args = parser.parse_args()
    if args.child:
        report = run_child(args.files, args.child, args.snapshot_every)
        sys.stdout.write(json.dumps(report) + "\n")
        sys.stdout.flush()
        os._exit(0)
    results: dict[str, dict[str, Any]] = {}
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for keys in args.keys:
        files = dataset(keys, args.batch_rows, args.batches, args.seed)
        for rep in range(args.repeat):
            order = args.engines[rep % 2 :] + args.engines[: rep % 2]
            for engine in order:
                got = spawn(engine, files, args)
                results.setdefault(f"{engine}|{keys}", {"runs": []})["runs"].append(got)
                note = got.get("error") or f"p50 {statistics.median(got['latency_s']):.3f} s"
                print(f"keys={keys} {engine} run {rep + 1}: {note}", file=sys.stderr, flush=True)
        for engine in args.engines:
            cell = results[f"{engine}|{keys}"]
            cell["summary"] = summary(cell["runs"])
        write(results, args, stamp)  # after every size, so a long run keeps what it measured


def write(results: dict[str, dict[str, Any]], args: argparse.Namespace, stamp: str) -> None:
    """Print the report and write it (markdown and raw JSON) under bench/results."""
    text = markdown(results, args, " ".join(sys.argv[1:]))
    print(text, flush=True)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"w4_sessions_{stamp}.md").write_text(text)
    (out / f"w4_sessions_{stamp}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
