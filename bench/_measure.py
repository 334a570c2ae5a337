"""One measurement = one fresh Python process.

Run as a script, this is the measured child: it imports the engine (untimed; with the
modules it would import on first use, ``_engines.LAZY_IMPORTS``), does the engine's
untimed setup and a full garbage collection (the same for every engine), then times
read + compute + materialise to Arrow, then reads its own peak RSS (``VmHWM``; nothing
subtracted) and prints one JSON line. With ``--import-only`` it stops after the imports,
which gives the interpreter + import baseline RSS. The result table is written (after
the measurement) to ``--out`` for the parent to verify.

``spawn`` is the parent side: it starts the child and parses its line.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Sample:
    """What one child reported; ``error`` set means it failed and the rest is meaningless.

    ``cpu_s`` is user + system CPU time of all the child's threads in the timed
    region: less sensitive than wall time to other load on a shared machine.
    """

    wall_s: float
    cpu_s: float
    peak_rss_bytes: int
    error: str | None = None


def _peak_rss_bytes() -> int:
    """This process's peak resident set size (Linux ``VmHWM``).

    Not ``getrusage().ru_maxrss``: Linux carries that across fork + exec, so a child
    reports at least its parent's RSS at spawn time (the parent here holds the
    reference data), which is not this process's memory.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def spawn(
    engine: str,
    *,
    workload: str | None = None,
    path: Path | None = None,
    out: Path | None = None,
    timeout_s: float = 1800.0,
    cold: bool = False,
) -> Sample:
    """Measure in a fresh interpreter; without ``workload`` only imports are measured.
    ``cold``: as the bench did before 2026-12-06 (no lazy imports, no collection before
    the timed region), to show what those two steps move out of it."""
    cmd = [sys.executable, str(HERE / "_measure.py"), "--engine", engine]
    if cold:
        cmd.append("--cold")
    if workload is None:
        cmd.append("--import-only")
    else:
        cmd += ["--workload", workload, "--path", str(path), "--out", str(out)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return Sample(float("nan"), float("nan"), 0, f"timed out after {timeout_s:.0f} s")
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        return Sample(float("nan"), float("nan"), 0, f"exit {proc.returncode}: {tail}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return Sample(float(report["wall_s"]), float(report["cpu_s"]), int(report["peak_rss_bytes"]))


def _child(args: argparse.Namespace) -> dict[str, float | int]:
    import _engines

    _engines.import_engine(args.engine, lazy=not args.cold)
    if args.import_only:
        return {"wall_s": 0.0, "cpu_s": 0.0, "peak_rss_bytes": _peak_rss_bytes()}
    run = _engines.prepare(args.engine, _engines.WORKLOADS[args.workload], args.path)
    if not args.cold:
        gc.collect()  # the imports' garbage: else a full collection may fall in the run
    start, cpu_start = time.perf_counter(), time.process_time()
    table = run()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    peak = _peak_rss_bytes()

    import _verify

    _verify.write_ipc(table, args.out)
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_bytes": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description="one benchmark measurement (child process)")
    parser.add_argument("--engine", required=True)
    parser.add_argument("--import-only", action="store_true")
    parser.add_argument("--cold", action="store_true", help="see spawn")
    parser.add_argument("--workload")
    parser.add_argument("--path", type=Path)
    parser.add_argument("--out", type=Path)
    report = _child(parser.parse_args())
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: not measured, and some engines are slow at it


if __name__ == "__main__":
    main()
