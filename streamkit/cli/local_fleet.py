"""``streamkit run job.py --workers N``: a local fleet for development.

Starts N ``streamkit worker`` child processes of the same job (this interpreter,
``-m streamkit.cli``), worker ids ``<hostname>-<pid of run>-<k>``, and:

- prints their output line by line as it comes, each line prefixed ``[worker-k]`` (stdout
  to stdout, stderr to stderr; lines are never torn or mixed);
- passes SIGINT, SIGTERM and SIGHUP to every worker still running (the workers run in their
  own session, so a Ctrl-C at the terminal reaches them once, through this process; on
  Linux a worker also gets SIGTERM if this process dies);
- waits for all of them and returns the exit code of the first worker to fail (in the
  order they ended), 0 if none did; a worker ended by a signal is reported by the
  signal's name and counts as 128 + its number (the shell's convention).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from streamkit.cli._common import err_console, settings

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1


def worker_options(
    available_now: bool, until_idle: float | None, timeout: float | None, force: bool
) -> list[str]:
    """The ``streamkit worker`` options that repeat ``run``'s."""
    out = ["--available-now"] if available_now else []
    out += ["--until-idle", repr(until_idle)] if until_idle is not None else []
    out += ["--timeout", repr(timeout)] if timeout is not None else []
    return out + (["--force"] if force else [])


def exit_code(returncode: int) -> int:
    """A child's ``returncode`` as a shell would report it (signal N -> 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


def describe_end(returncode: int) -> str:
    """``exit 0``, ``exit 3`` or ``killed by SIGKILL``."""
    if returncode >= 0:
        return f"exit {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"killed by {name}"


def _die_with_parent() -> None:  # pragma: no cover (runs in the child, before exec)
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


@dataclass
class Worker:
    """One child process and the threads copying its output."""

    label: str
    worker_id: str
    proc: subprocess.Popen[bytes]
    pumps: list[threading.Thread] = field(default_factory=list)


class _Output:
    """Whole lines from every worker onto this process's stdout / stderr, one at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def pump(self, label: str, source: IO[bytes], target: IO[str]) -> None:
        for raw in iter(source.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            with self._lock:
                target.write(f"[{label}] {line}\n")
                target.flush()
        source.close()


def _spawn(job_file: Path, worker_id: str, options: list[str]) -> subprocess.Popen[bytes]:
    root = ["--debug"] if settings.debug else []
    argv = [sys.executable, "-m", "streamkit.cli", *root, "worker", str(job_file),
            "--worker-id", worker_id, *options]  # fmt: skip
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=env, start_new_session=True, preexec_fn=_die_with_parent,  # noqa: PLW1509
    )  # fmt: skip


def start_workers(job_file: Path, n: int, options: list[str]) -> list[Worker]:
    """Start ``n`` workers (all forked before any output thread starts)."""
    base = f"{socket.gethostname()}-{os.getpid()}"
    workers = []
    for k in range(1, n + 1):
        wid = f"{base}-{k}"
        workers.append(Worker(f"worker-{k}", wid, _spawn(job_file, wid, options)))
    out = _Output()
    for w in workers:
        assert w.proc.stdout is not None
        assert w.proc.stderr is not None
        for src, dst in ((w.proc.stdout, sys.stdout), (w.proc.stderr, sys.stderr)):
            t = threading.Thread(target=out.pump, args=(w.label, src, dst), daemon=True)
            t.start()
            w.pumps.append(t)
    return workers


def _forward(workers: list[Worker]) -> dict[int, Any]:
    """Install handlers passing the FORWARDED signals on; returns the previous ones."""

    def handler(signum: int, frame: object) -> None:
        for w in workers:
            if w.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(signum)

    return {s: signal.signal(s, handler) for s in FORWARDED}


def wait_all(workers: list[Worker]) -> int:
    """Wait for every worker; report each end; the first failing one's code, else 0."""
    ended: queue.Queue[Worker] = queue.Queue()

    def waiter(w: Worker) -> None:
        w.proc.wait()
        for t in w.pumps:
            t.join()  # its last lines are out before its end is reported
        ended.put(w)

    for w in workers:
        threading.Thread(target=waiter, args=(w,), daemon=True).start()
    first_failure = 0
    for _ in workers:
        while True:
            try:
                w = ended.get(timeout=0.2)  # short waits: signal handlers run in between
                break
            except queue.Empty:
                continue
        code = w.proc.returncode
        err_console.print(f"{w.label} ({w.worker_id}, pid {w.proc.pid}): {describe_end(code)}",
                          markup=False, soft_wrap=True)  # fmt: skip
        if code != 0 and first_failure == 0:
            first_failure = exit_code(code)
    return first_failure


def run_fleet(job_file: Path, n: int, options: list[str]) -> int:
    """Run ``n`` workers of ``job_file`` until all ended; the exit code (see module doc)."""
    workers = start_workers(job_file, n, options)
    previous = _forward(workers)
    try:
        listing = ", ".join(f"{w.label} = {w.worker_id} (pid {w.proc.pid})" for w in workers)
        err_console.print(f"local fleet of {n} workers: {listing}", markup=False, soft_wrap=True)
        return wait_all(workers)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
