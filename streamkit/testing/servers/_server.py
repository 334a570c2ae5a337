"""Handles of running test servers and the start-with-retry loop they share."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ._proc import (
    ServerProcess,
    ServerStartError,
    free_port,
    log_tag,
    owner_alive,
    owner_token,
    start_process,
    wait_ready,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from streamkit.config import AwsEndpoint


@dataclass(eq=False, kw_only=True)
class RunningServer:
    """A server process started by the test helpers, listening on 127.0.0.1.

    ``stop()`` ends the server and every process it started, then deletes its private run
    folder; the log survives as ``<cache>/logs/<name>-last.log`` (``<name>-gwN-last.log``
    in pytest-xdist worker N). Idempotent.
    """

    name: str
    """Which server: ``localstack``, ``kinesalite`` or ``tansu``."""
    url: str
    """Where it listens, e.g. ``http://127.0.0.1:40123`` (``tcp://`` for Kafka)."""
    port: int
    """Its TCP port on 127.0.0.1."""
    process: ServerProcess = field(repr=False)
    """The process handle (PID, log, stop)."""
    run_dir: Path = field(repr=False)
    """Private folder of this run (data, log); deleted by ``stop()``."""
    logs_dir: Path = field(repr=False)
    """Where the log is kept after ``stop()``."""

    @property
    def pid(self) -> int:
        """PID of the server process (leader of its own session)."""
        return self.process.pid

    @property
    def log_path(self) -> Path:
        """The server's combined stdout/stderr while it runs."""
        return self.process.log_path

    def running(self) -> bool:
        """Whether the server process has not exited."""
        return self.process.alive()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and everything it started; idempotent."""
        self.process.stop()
        if self.run_dir.exists():
            self.logs_dir.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                shutil.move(self.log_path, self.logs_dir / f"{self.name}{log_tag()}-last.log")
            shutil.rmtree(self.run_dir, ignore_errors=True)


@dataclass(eq=False, kw_only=True)
class AwsServer(RunningServer):
    """An AWS-compatible server (LocalStack, kinesalite)."""

    endpoint: AwsEndpoint
    """Endpoint with dummy ``test`` credentials; use it for every boto3 client."""


@dataclass(eq=False, kw_only=True)
class KafkaServer(RunningServer):
    """A Kafka-protocol broker (Apache Kafka, Tansu)."""

    bootstrap: str
    """``bootstrap_servers`` value, e.g. ``127.0.0.1:40123``."""

    @classmethod
    def on_loopback(
        cls, name: str, process: ServerProcess, port: int, run_dir: Path, cache: Path
    ) -> KafkaServer:
        """The handle of broker ``name`` listening on ``127.0.0.1:port``."""
        return cls(name=name, url=f"tcp://127.0.0.1:{port}", port=port, process=process,
                   run_dir=run_dir, logs_dir=cache / "logs",
                   bootstrap=f"127.0.0.1:{port}")  # fmt: skip


@dataclass(frozen=True)
class Launch:
    """What to start on a given port: the command, its environment, readiness check."""

    cmd: Sequence[str]
    env: dict[str, str] | None
    ready: Callable[[], bool]


def launch(
    name: str,
    cache: Path,
    plan: Callable[[int, Path], Launch],
    *,
    timeout: float,
    attempts: int = 3,
) -> tuple[ServerProcess, int, Path]:
    """Start ``plan(port, run_dir)`` on a free port and wait until it is ready.

    A server that exits before it is ready (most often: another process took the port
    between picking and binding it) is retried on a fresh port up to ``attempts`` times.
    Returns the process, its port and its private run folder.
    """
    runs = cache / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    _prune_stale_runs(runs)
    error: ServerStartError | None = None
    for _ in range(attempts):
        port = free_port()
        run_dir = Path(tempfile.mkdtemp(prefix=f"{name}-{port}-", dir=runs))
        (run_dir / "owner").write_text(owner_token())
        spec = plan(port, run_dir)
        proc = start_process(name, spec.cmd, log_path=run_dir / "server.log", env=spec.env)
        try:
            wait_ready(proc, spec.ready, timeout=timeout)
        except BaseException as exc:
            exited = not proc.alive()
            proc.stop()
            _keep_log(proc, cache / "logs", name)
            shutil.rmtree(run_dir, ignore_errors=True)
            if not (exited and isinstance(exc, ServerStartError)):
                raise
            error = exc
            continue
        return proc, port, run_dir
    assert error is not None
    raise error


def _prune_stale_runs(runs: Path) -> None:
    """Delete run folders left by test processes that died without stopping their server."""
    for run_dir in runs.iterdir():
        try:
            token = (run_dir / "owner").read_text()
        except OSError:
            continue
        if not owner_alive(token):
            shutil.rmtree(run_dir, ignore_errors=True)


def _keep_log(proc: ServerProcess, logs: Path, name: str) -> None:
    logs.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        shutil.move(proc.log_path, logs / f"{name}{log_tag()}-failed.log")
