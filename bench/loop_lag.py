"""Event-loop responsiveness while W3 runs: the async handle against its baselines.

Usage:
    nice .venv/bin/python bench/loop_lag.py --files 20 --repeat 3

A 10 ms ticker task (``await asyncio.sleep(0.01)`` in a loop) records how late each tick
wakes. Three modes, each in a fresh process per measurement, interleaved in a rotating
order:

- ``idle``: the ticker alone, for as long as the median ``async`` run took (the floor);
- ``sync``: the ticker while W3 runs through the synchronous handle (its own thread and
  loop; the caller waits with ``asyncio.to_thread(q.await_termination)``);
- ``async``: the ticker while W3 runs as ``await writer.start_async()`` on the same loop.

W3 is ``bench/streaming.py``'s query (NDJSON files of 100,000 rows, one file per trigger,
watermark, count / sum / avg per (1-hour window, action), update mode, memory sink,
``available_now``). Reported per mode, median over ``--repeat``: worst lag, p99 and p50
lag (ms), wall and process CPU seconds; and the ratios async / sync and async / idle.
Prints markdown; writes bench/results/loop_lag_<UTC time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MODES = ("idle", "sync", "async")
TICK = 0.01


async def ticker(lags: list[float], stop: asyncio.Event) -> None:
    """Sleep TICK at a time; record how much later than asked each wake-up came."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        asked = loop.time()
        await asyncio.sleep(TICK)
        lags.append(loop.time() - asked - TICK)


def w3_writer(files: int, seed: int) -> Any:
    """W3's writer over the cached files, with a memory sink and ``available_now``."""
    from _stream_gen import SCHEMA, VERY_LATE, stream_dir
    from _stream_run import MAX_FILE_AGE, w3_aggregate

    import streamkit as sk

    directory = stream_dir(files, seed, VERY_LATE)
    df = sk.read_stream.files(str(directory), format="json", schema=SCHEMA,
                              max_files_per_trigger=1, max_file_age=MAX_FILE_AGE)  # fmt: skip
    writer = w3_aggregate(df).write_stream.output_mode("update")
    return writer.trigger(available_now=True).memory(f"w3_{time.monotonic_ns()}")


async def measure(mode: str, files: int, seed: int, idle_seconds: float) -> dict[str, Any]:
    """One measurement of ``mode`` in this process (imports and query building untimed)."""
    writer = w3_writer(files, seed)
    lags: list[float] = []
    stop = asyncio.Event()
    wall, cpu = time.perf_counter(), time.process_time()
    ticking = asyncio.create_task(ticker(lags, stop))
    if mode == "idle":
        await asyncio.sleep(idle_seconds)
    elif mode == "sync":
        query = writer.start()
        await asyncio.to_thread(query.await_termination)
    else:
        async with writer.start_async() as q:
            await q.await_termination()
    stop.set()
    await ticking
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    ordered = sorted(lags)
    return {
        "mode": mode, "ticks": len(lags), "wall_s": wall, "cpu_s": cpu,
        "max_ms": ordered[-1] * 1e3, "p99_ms": ordered[int(0.99 * (len(ordered) - 1))] * 1e3,
        "p50_ms": statistics.median(ordered) * 1e3,
    }  # fmt: skip


def spawn(mode: str, args: argparse.Namespace, idle_seconds: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", mode, "--files", str(args.files),
           "--seed", str(args.seed), "--idle-seconds", str(idle_seconds)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=True)
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def median_of(runs: list[dict[str, Any]], mode: str, key: str) -> float:
    return float(statistics.median(float(r[key]) for r in runs if r["mode"] == mode))


def table(runs: list[dict[str, Any]]) -> str:
    keys = ("max_ms", "p99_ms", "p50_ms", "wall_s", "cpu_s")
    lines = ["| mode | worst lag ms | p99 ms | p50 ms | wall s | CPU s |", "|---" * 6 + "|"]
    for mode in MODES:
        cells = [f"{median_of(runs, mode, k):.1f}" for k in keys]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    for base in ("sync", "idle"):
        worst = median_of(runs, "async", "max_ms") / median_of(runs, base, "max_ms")
        p99 = median_of(runs, "async", "p99_ms") / median_of(runs, base, "p99_ms")
        lines.append(f"async / {base}: worst lag x{worst:.2f}, p99 x{p99:.2f}")
    return "\n".join(lines[:5]) + "\n\n" + "\n".join(lines[5:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", choices=MODES)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    args = parser.parse_args()
    if args.child:
        report = asyncio.run(measure(args.child, args.files, args.seed, args.idle_seconds))
        print(json.dumps(report))
        return
    runs: list[dict[str, Any]] = []
    idle_seconds = args.idle_seconds
    for round_ in range(args.repeat):
        order = [*MODES[1:]][round_ % 2 :] + [*MODES[1:]][: round_ % 2] + ["idle"]
        for mode in order:
            runs.append(spawn(mode, args, idle_seconds))
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
            if mode == "async":
                idle_seconds = median_of(runs, "async", "wall_s")
    print(table(runs))
    out = HERE / "results" / f"loop_lag_{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
