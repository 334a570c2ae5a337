"""Processes for test servers: free loopback ports, start in a new session, wait, stop by PID.

A server is started as the leader of a new session (``start_new_session=True``) so a signal to
its process group never reaches the test process. Servers that fork helpers into sessions of
their own (LocalStack starts DynamoDB Local and kinesis-local that way) are still stopped: every
descendant seen while the server ran is remembered by PID and start time, and any that outlive
the leader are signalled one by one, so a recycled PID is never hit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from streamkit.errors import StreamkitError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence


class ServerStartError(StreamkitError):
    """A test server did not install or become ready; the message includes its log tail."""


_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))\n"  # PR_SET_PDEATHSIG
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(70)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)
"""Exec wrapper: the server gets SIGTERM if the test process dies without stopping it."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (the caller binds it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether a TCP connection to ``host:port`` is accepted."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class _ProcId:
    """A process identity that survives PID reuse: PID plus kernel start time."""

    pid: int
    start: int


def _stat(pid: int) -> tuple[int, int, int] | None:
    """``(ppid, session id, start time)`` of ``pid`` from /proc, or ``None`` if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie is already dead; only its parent can reap it
        return None
    return int(fields[1]), int(fields[3]), int(fields[19])


def _identity(pid: int) -> _ProcId | None:
    info = _stat(pid)
    return None if info is None else _ProcId(pid, info[2])


def _descendants(leader: int) -> set[_ProcId]:
    """Processes below ``leader`` in the process tree, or in its session."""
    children: dict[int, list[int]] = {}
    found: set[_ProcId] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        info = _stat(int(entry.name))
        if info is None:
            continue
        children.setdefault(info[0], []).append(int(entry.name))
        if info[1] == leader and int(entry.name) != leader:
            found.add(_ProcId(int(entry.name), info[2]))
    todo = list(children.get(leader, []))
    while todo:
        pid = todo.pop()
        ident = _identity(pid)
        if ident is not None:
            found.add(ident)
        todo.extend(children.get(pid, []))
    return found


def _alive(proc: _ProcId) -> bool:
    return _identity(proc.pid) == proc


def log_tag() -> str:
    """``-gwN`` inside a pytest-xdist worker, else empty: keeps parallel workers' logs apart."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return f"-{worker}" if worker else ""


def owner_token() -> str:
    """Identity of this process (PID and start time) for :func:`owner_alive`."""
    ident = _identity(os.getpid())
    return f"{os.getpid()} {ident.start if ident else 0}"


def owner_alive(token: str) -> bool:
    """Whether the process that wrote ``token`` (see :func:`owner_token`) still runs."""
    pid, _, start = token.partition(" ")
    if not (pid.isdigit() and start.isdigit()):
        return False
    return _alive(_ProcId(int(pid), int(start)))


def _signal(proc: _ProcId, sig: signal.Signals) -> None:
    if _alive(proc):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(proc.pid, sig)


@dataclass(eq=False)
class ServerProcess:
    """A started server process; ``stop()`` ends it and everything it started."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    _seen: set[_ProcId] = field(default_factory=set, repr=False)

    @property
    def pid(self) -> int:
        """PID of the server (the leader of its own session)."""
        return self.popen.pid

    def alive(self) -> bool:
        """Whether the server process has not exited."""
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server's combined stdout/stderr log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def remember_children(self) -> None:
        """Record the current descendants so ``stop()`` can end them even after reparenting."""
        if self.alive():
            self._seen |= _descendants(self.pid)

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM the process group, wait ``grace`` s, then SIGKILL; then end any leftovers.

        Idempotent. Returns once the leader is reaped and no recorded descendant is alive.
        """
        if self.alive():
            self.remember_children()
            self._killpg(signal.SIGTERM)
            deadline = time.monotonic() + grace
            while self.alive() and time.monotonic() < deadline:
                self.remember_children()
                time.sleep(0.1)
            if self.alive():
                self._killpg(signal.SIGKILL)
        self.popen.wait()
        self._end_leftovers()

    def _killpg(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def _end_leftovers(self) -> None:
        left = {p for p in self._seen if _alive(p)}
        for proc in left:
            _signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        while any(_alive(p) for p in left) and time.monotonic() < deadline:
            time.sleep(0.1)
        for proc in left:
            _signal(proc, signal.SIGKILL)


def start_process(
    name: str,
    cmd: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ServerProcess:
    """Start ``cmd`` as a session leader, output appended to ``log_path``.

    On Linux, when called from the main thread, the server also gets SIGTERM if the test
    process dies without stopping it (``PR_SET_PDEATHSIG``).
    """
    argv = list(cmd)
    if sys.platform == "linux" and threading.current_thread() is threading.main_thread():
        argv = [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *argv]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    return ServerProcess(name=name, popen=popen, log_path=log_path)


def wait_ready(
    proc: ServerProcess,
    ready: Callable[[], bool],
    *,
    timeout: float,
    interval: float = 0.2,
) -> None:
    """Poll ``ready()`` until it returns true; raise :class:`ServerStartError` on exit or timeout.

    Exceptions from ``ready()`` count as "not yet". The server is left running on failure;
    the caller stops it.
    """
    deadline = time.monotonic() + timeout
    while True:
        if not proc.alive():
            raise ServerStartError(
                f"{proc.name} exited with code {proc.popen.returncode} before it was ready; "
                f"log {proc.log_path}:\n{proc.log_tail()}"
            )
        with contextlib.suppress(Exception):
            if ready():
                proc.remember_children()
                return
        if time.monotonic() >= deadline:
            raise ServerStartError(
                f"{proc.name} was not ready after {timeout:.0f} s; "
                f"log {proc.log_path}:\n{proc.log_tail()}"
            )
        time.sleep(interval)
