"""W3 soak: a feeder adds NDJSON files at a fixed rate while a streamkit query (a fresh
child process, processing-time trigger, foreach_batch sink) consumes them; the parent
samples the child's resident set (``VmRSS``) every second.

Key cardinality stays bounded: every file covers the next 10 minutes of event time, so
the query only ever holds the (1-hour window, action) groups of the last hour or two.
The feeder writes file ``i`` as a template file (``i mod templates``, generated once)
shifted forward in event time, and deletes the file ``keep_files`` behind the newest.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _stream_gen import (
    ROWS_PER_FILE,
    SPAN_US,
    file_name,
    file_table,
    shifted,
    write_table,
)
from gen_events import DATA_DIR

HERE = Path(__file__).resolve().parent


@dataclass
class Feeder:
    """Writes files into ``directory`` at ``rate`` rows/s from a background thread."""

    directory: Path
    seed: int
    rate: float
    very_late: float
    keep_files: int = 100
    templates: int = 20
    written: int = 0
    late_writes: int = 0
    """Files the feeder wrote more than 1 s behind its schedule (it could not keep up)."""

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._tables = [file_table(self.seed, i, self.very_late) for i in range(self.templates)]
        self._thread = threading.Thread(target=self._run, name="feeder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        started = time.monotonic()
        period = ROWS_PER_FILE / self.rate
        i = 0
        while not self._stop.is_set():
            wait = started + i * period - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                return
            self.late_writes += wait < -1.0
            cycle, k = divmod(i, self.templates)
            table = shifted(self._tables[k], cycle * self.templates * SPAN_US)
            write_table(self.directory, i, table)
            (self.directory / file_name(i - self.keep_files)).unlink(missing_ok=True)
            i += 1
            self.written = i


def vm_rss(pid: int) -> int | None:
    """Current resident set of ``pid`` in bytes (None once it has exited)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:
        return None
    return None


def slope_mb_per_min(samples: list[tuple[float, int]], warmup_s: float) -> float:
    """Least-squares slope of RSS over time after ``warmup_s``, in MB per minute."""
    points = [(t, rss) for t, rss in samples if t >= warmup_s]
    if len(points) < 3:
        return float("nan")
    t = np.array([p[0] for p in points])
    rss = np.array([p[1] for p in points], dtype=np.float64) / 2**20
    return float(np.polyfit(t / 60.0, rss, 1)[0])


def run_soak(
    seconds: float, rate: float, seed: int, very_late: float, retention: str
) -> dict[str, Any]:
    """One soak run; returns RSS samples, the slope, and the child's per-batch progress."""
    directory = DATA_DIR / f"soak_{int(time.time())}"
    directory.mkdir(parents=True)
    feeder = Feeder(directory, seed, rate, very_late)
    cmd = [sys.executable, str(HERE / "_stream_run.py"), "--engine", "streamkit"]
    cmd += ["--dir", str(directory), "--soak", str(seconds), "--retention", retention]
    samples: list[tuple[float, int]] = []
    out_path, err_path = directory.with_suffix(".out"), directory.with_suffix(".err")
    try:
        feeder.start()
        started = time.monotonic()
        # the report goes to a file: a pipe nobody reads until the end would block the child
        with out_path.open("w") as out, err_path.open("w") as err:
            child = subprocess.Popen(cmd, stdout=out, stderr=err)
            while child.poll() is None:
                rss = vm_rss(child.pid)
                if rss is not None:
                    samples.append((time.monotonic() - started, rss))
                time.sleep(1.0)
        output, errors = out_path.read_text(), err_path.read_text()
    finally:
        feeder.stop()
        shutil.rmtree(directory, ignore_errors=True)
        out_path.unlink(missing_ok=True)
        err_path.unlink(missing_ok=True)
    if child.returncode != 0:
        tail = " | ".join(errors.strip().splitlines()[-3:])
        raise RuntimeError(f"soak child exited {child.returncode}: {tail}")
    report: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    warmup = min(60.0, seconds / 5)
    report.update(
        seconds=seconds,
        rate=rate,
        retention=retention,
        files_written=feeder.written,
        feeder_late_writes=feeder.late_writes,
        rss_samples=samples,
        warmup_s=warmup,
        slope_mb_per_min=slope_mb_per_min(samples, warmup),
        arrow_pool_slope_mb_per_min=slope_mb_per_min(report["arrow_pool_samples"], warmup),
    )
    return report
