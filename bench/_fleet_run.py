"""One measured run of ``fleet_throughput.py``: the job started as one process (``streamkit
run``) or as N fleet members (``streamkit worker``), timed and CPU-measured until its Parquet
sink holds the complete result, then stopped (SIGTERM) and checked row by row.

Completion: the query runs in update mode, so the sink holds every version of each
(window, key) it changed; the last is the largest (count and a sum of positive values only
grow). The run is complete when the last versions cover as many groups as the ground truth
and their counts add up to the records put (checked every 0.25 s, each new file read once);
then the wall time and the CPU of every process tree are read; the processes run on idle for
``IDLE_WINDOW`` seconds, whose CPU gives their idle cost (polling and leases), and are
stopped. A run that does not complete within ``timeout`` seconds, or whose process exits
first, is an error.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from _proc_tree import usage

HERE = Path(__file__).resolve().parent
JOB = HERE / "_fleet_job.py"
POLL = 0.25
IDLE_WINDOW = 5.0
"""Seconds the processes are left running after completion to measure their idle CPU."""


@dataclass(frozen=True)
class Servers:
    """Where the job reads and keeps its leases, and the server PIDs whose CPU is reported."""

    kinesis_url: str
    leases_url: str
    kinesalite_pid: int
    localstack_pid: int | None


@dataclass(frozen=True)
class RunResult:
    """One run of one mode; ``error`` set means the figures are not valid."""

    mode: str
    workers: int
    rep: int
    wall_s: float
    cpu_s: float
    """User + system CPU of every streamkit process tree, start to completion."""
    startup_cpu_s: float
    """Of which interpreter start + imports (each process's CPU when ``job()`` ran)."""
    kinesalite_cpu_s: float
    localstack_cpu_s: float
    records: int
    loadavg_1m: float
    error: str | None = None
    sink_rows: int = 0
    """Rows the query wrote (every version of every group; update mode)."""
    idle_cpu_per_s: float = 0.0
    """CPU seconds per second of the streamkit processes once caught up (polling, leases)."""

    @property
    def rows_per_s(self) -> float:
        return self.records / self.wall_s

    @property
    def records_per_cpu_s(self) -> float:
        return self.records / self.cpu_s

    @property
    def records_per_cpu_s_after_startup(self) -> float:
        """Records over the CPU spent after the interpreters started and imported."""
        return self.records / (self.cpu_s - self.startup_cpu_s)


def _normalise(table: pa.Table) -> pa.Table:
    start = pc.struct_field(table["window"], "start").cast(pa.timestamp("us", "UTC"))
    return pa.table(
        {
            "start": start.cast(pa.int64()),
            "key": table["key"].cast(pa.string()),
            "n": table["n"].cast(pa.int64()),
            "total": table["total"].cast(pa.int64()),
        }
    )


def latest(table: pa.Table) -> pa.Table:
    """Each group's last version: update mode rewrites a group whenever it changes, and
    count and sum of positive values only grow, so the last version is the largest."""
    out = table.group_by(["start", "key"]).aggregate([("n", "max"), ("total", "max")])
    return out.rename_columns(["start", "key", "n", "total"])


def sink_result(out: Path) -> pa.Table | None:
    """The sink as one Parquet dataset, each group's last version: ``start`` (µs),
    ``key``, ``n``, ``total``; None if it has no file yet."""
    if not out.exists() or not any(out.glob("*.parquet")):
        return None
    return latest(_normalise(ds.dataset(str(out), format="parquet").to_table()))


class Completion:
    """Is the sink complete? (see the module docstring); reads each new file once."""

    def __init__(self, out: Path, groups: int, records: int) -> None:
        self.out, self.groups, self.records = out, groups, records
        self._seen: set[Path] = set()
        self._result: pa.Table | None = None
        self.rows_written = 0
        self.done = False

    def check(self) -> bool:
        new = set(self.out.glob("*.parquet")) - self._seen if self.out.exists() else set()
        tables = []
        for path in sorted(new):
            try:
                tables.append(_normalise(pq.read_table(path)))
            except (OSError, pa.ArrowInvalid):  # being written: read it at the next poll
                continue
            self._seen.add(path)
        if not tables:
            return self.done
        self.rows_written += sum(t.num_rows for t in tables)
        if self._result is not None:
            tables.append(self._result)
        self._result = latest(pa.concat_tables(tables))
        n = pc.sum(self._result["n"]).as_py() or 0
        self.done = self._result.num_rows >= self.groups and n >= self.records
        return self.done


def compare(got: pa.Table | None, want: pa.Table) -> list[str]:
    """Differences between the sink's rows and the ground truth (empty: equal)."""
    if got is None:
        return ["the sink holds no file"]
    order = [("start", "ascending"), ("key", "ascending")]
    g, w = got.sort_by(order), want.sort_by(order).select(got.column_names)
    if g.num_rows != w.num_rows:
        return [f"{g.num_rows} rows in the sink, {w.num_rows} in the ground truth"]
    return [
        f"column {name}: {int(pc.sum(pc.not_equal(g[name], w[name])).as_py())} rows differ"
        for name in got.column_names
        if not g[name].equals(w[name])
    ]


def _commands(mode: str, workers: int) -> list[list[str]]:
    cli = [sys.executable, "-m", "streamkit.cli"]
    if mode == "single":
        return [[*cli, "run", str(JOB)]]
    return [[*cli, "worker", str(JOB), "--worker-id", f"w{k}"] for k in range(workers)]


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM (graceful stop) every process, then SIGKILL what is left after 60 s."""
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 60
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _tail(log: Path, lines: int = 4) -> str:
    text = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    return " | ".join(text[-lines:])


def run_once(
    mode: str, workers: int, rep: int, *, stream: str, servers: Servers, truth: pa.Table,
    records: int, timeout: float,
) -> RunResult:  # fmt: skip
    """Start ``mode`` on a fresh application and checkpoint, measure, stop, verify."""
    work = Path(tempfile.mkdtemp(prefix=f"fleetbench-{mode}-"))
    app = f"fb-{mode}-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "FB_OUT": str(work), "FB_STREAM": stream, "FB_APP": app,
           "FB_KINESIS": servers.kinesis_url, "FB_LEASES": servers.leases_url}  # fmt: skip
    env.pop("STREAMKIT_FLEET", None)
    done = Completion(work / "out", truth.num_rows, records)
    server_cpu = [usage(servers.kinesalite_pid).cpu_s]
    if servers.localstack_pid is not None:
        server_cpu.append(usage(servers.localstack_pid).cpu_s)
    load = os.getloadavg()[0]
    log = work / "log.txt"
    procs: list[subprocess.Popen[bytes]] = []
    error: str | None = None
    started = time.perf_counter()
    with log.open("ab") as sink:
        for cmd in _commands(mode, workers):
            procs.append(subprocess.Popen(cmd, env=env, stdout=sink, stderr=sink,
                                          stdin=subprocess.DEVNULL))  # fmt: skip
        while True:
            if done.check():
                break
            wall = time.perf_counter() - started
            if exited := [p for p in procs if p.poll() is not None]:
                error = f"a process exited ({exited[0].returncode}) first: {_tail(log)}"
                break
            if wall > timeout:
                error = f"incomplete after {timeout:.0f} s: {_tail(log)}"
                break
            time.sleep(POLL)
        wall = time.perf_counter() - started
        cpu = sum(usage(p.pid).cpu_s for p in procs)
        kin = usage(servers.kinesalite_pid).cpu_s - server_cpu[0]
        ls = 0.0
        if servers.localstack_pid is not None:
            ls = usage(servers.localstack_pid).cpu_s - server_cpu[1]
        time.sleep(IDLE_WINDOW if error is None else 0)
        idle = (sum(usage(p.pid).cpu_s for p in procs) - cpu) / IDLE_WINDOW
        _stop(procs)
    startup = sum(json.loads(f.read_text())["cpu_s"] for f in work.glob("startup-*.json"))
    if error is None and (problems := compare(sink_result(work / "out"), truth)):
        error = "WRONG RESULT: " + "; ".join(problems)
    if error is None:
        shutil.rmtree(work, ignore_errors=True)
    else:
        error += f" (kept {work})"
    return RunResult(mode, workers, rep, wall, cpu, startup, kin, ls, records, load, error,
                     done.rows_written, idle)  # fmt: skip
