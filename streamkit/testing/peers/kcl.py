"""The Java KCL as a peer: a small KCL consumer application built with Maven, run as a process.

The application is the Maven project ``tests/peers/kcl`` of the source checkout (see its
``KclPeer.java`` for arguments and output). :func:`install_kcl` builds it once into the
server cache (``<cache>/kcl/app``: ``kcl-peer.jar`` and its runtime jars in ``lib/``),
stamp-protected like the servers; the stamp names the KCL version and a digest of the
project's sources, so editing the Java code rebuilds it. :func:`start_kcl_worker` starts one
KCL worker as a session leader and returns a :class:`KclWorker` handle, stopped by PID.

Why KCL 2.6.1: its lease protocol is the one streamkit implements: workers take, renew and
steal leases themselves with conditional writes on ``leaseCounter``, and the lease table is
the only shared state. KCL 3.x keeps the same lease items but adds a leader that assigns
leases from worker metrics, two more tables (coordinator state, worker metrics) and a
``leaseOwner`` index; its 2.x-compatible mode still runs the 3.x migration machinery on
those tables. 2.6.1 is the released 2.x line closest to what streamkit speaks (2.7.x has the
same lease code and differs in dependencies).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamkit.testing.servers._install import (
    ServerInstallError,
    default_cache_dir,
    ensure_installed,
    require_tool,
    run_step,
)
from streamkit.testing.servers._proc import ServerProcess, start_process

if TYPE_CHECKING:
    from types import TracebackType

    from streamkit.config import AwsEndpoint

KCL_VERSION = "2.6.1"
"""``software.amazon.kinesis:amazon-kinesis-client`` version the peer is built with."""

JAVA_HINT = "install a JDK >= 17 and Maven (Debian: apt-get install openjdk-17-jdk-headless maven)"

PROJECT = Path(__file__).resolve().parents[3] / "tests" / "peers" / "kcl"
"""The Maven project of the peer in the source checkout."""

JAR = "kcl-peer.jar"


def _sources_digest(project: Path) -> str:
    """A digest of the pom and every source file, so a changed peer is rebuilt."""
    digest = hashlib.sha256()
    files = [project / "pom.xml", *sorted((project / "src").rglob("*"))]
    for path in (f for f in files if f.is_file()):
        digest.update(str(path.relative_to(project)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def install_kcl(cache_dir: Path | None = None) -> Path:
    """Build the KCL peer into ``<cache>/kcl/app`` (first run ~30 s); returns the jar's path.

    Runs ``mvn -q -B package`` on ``tests/peers/kcl`` with its build directory in the cache
    (the source folder stays clean), then moves the jar and ``lib/`` into place. Idempotent.
    """
    cache = (cache_dir or default_cache_dir()).resolve()
    if not (PROJECT / "pom.xml").is_file():
        raise ServerInstallError(
            f"the KCL peer's Maven project is not at {PROJECT}; it ships with the source "
            "checkout only (run the interoperability tests from a clone)"
        )
    home = cache / "kcl"
    app = home / "app"

    def install() -> None:
        mvn = require_tool("mvn", JAVA_HINT)
        require_tool("java", JAVA_HINT)
        partial = home / "build.partial"
        shutil.rmtree(partial, ignore_errors=True)
        run_step(
            [mvn, "-q", "-B", "package", f"-Dpeer.build.dir={partial}",
             f"-Dkcl.version={KCL_VERSION}"],
            log=cache / "logs" / "install-kcl.log", cwd=PROJECT,
        )  # fmt: skip
        staged = home / "app.partial"
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(parents=True)
        (partial / JAR).replace(staged / JAR)
        (partial / "lib").replace(staged / "lib")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(app, ignore_errors=True)
        staged.replace(app)

    key = f"amazon-kinesis-client=={KCL_VERSION} sources={_sources_digest(PROJECT)}"
    ensure_installed(cache, "kcl", key, app / JAR, install)
    return app / JAR


@dataclass(eq=False)
class KclWorker:
    """One running Java KCL worker: its process and the JSON-lines files it writes.

    ``records()`` lines: ``worker``, ``t``, ``shard``, ``seq``, ``sub``, ``pk``, ``data``,
    written and flushed before any checkpoint that covers them. ``events()`` lines:
    ``event`` (``started``, ``initialize``, ``checkpoint``, ``processor_lease_lost``,
    ``shutdown_requested``, ``stopping``, ``stopped``) with ``shard`` / ``seq`` where it applies.
    """

    worker_id: str
    process: ServerProcess
    records_path: Path
    events_path: Path

    @property
    def pid(self) -> int:
        """PID of the JVM."""
        return self.process.pid

    def alive(self) -> bool:
        """Whether the JVM has not exited."""
        return self.process.alive()

    def records(self) -> list[dict[str, Any]]:
        """Records processed so far (a line torn by SIGKILL is ignored)."""
        return _json_lines(self.records_path)

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Lifecycle events so far, optionally of one kind."""
        return [e for e in _json_lines(self.events_path) if kind is None or e["event"] == kind]

    def kill(self) -> None:
        """SIGKILL the JVM by PID and reap it: no shutdown hook, no lease release."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self.process.popen.wait()

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM (graceful KCL shutdown: each shard's ``shutdownRequested`` checkpoints);
        wait up to ``timeout`` s for the exit code, then stop it by force."""
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.stop()
        code = self.process.popen.returncode
        assert code is not None
        return code

    def stop(self) -> None:
        """End the worker (SIGTERM, then SIGKILL after a grace period); idempotent."""
        self.process.stop(grace=30.0)

    def log_tail(self, lines: int = 60) -> str:
        """The end of the JVM's log (KCL's lease decisions are logged at INFO)."""
        return self.process.log_tail(lines)

    def __enter__(self) -> KclWorker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_kcl_worker(
    endpoint: AwsEndpoint,
    stream: str,
    app_name: str,
    worker_id: str,
    out_dir: Path,
    *,
    cache_dir: Path | None = None,
    failover_time: float = 10.0,
    idle_time: float = 1.5,
    shard_sync_interval: float = 60.0,
    parent_poll_interval: float = 10.0,
    checkpoint_every: int = 1,
    checkpoint_interval: float = 0.0,
    max_steal: int = 1,
    heap: str = "256m",
) -> KclWorker:
    """Start a Java KCL worker of application ``app_name`` (lease table ``app_name``) on
    ``stream`` at ``endpoint`` (a local endpoint: LocalStack); returns at once.

    Times are seconds (KCL's defaults; tests pass short ones). The worker checkpoints at
    the end of a batch once ``checkpoint_every`` records are unsaved or
    ``checkpoint_interval`` s passed (0: no timer). Logs go to ``out_dir``; the JVM heap is
    capped at ``heap``. The caller stops it (``stop()``, or use it as a context manager).
    """
    if endpoint.url is None:
        raise ValueError("the KCL peer needs an endpoint URL (LocalStack), not real AWS")
    jar = install_kcl(cache_dir)
    java = require_tool("java", JAVA_HINT)
    out_dir.mkdir(parents=True, exist_ok=True)
    records, events = out_dir / f"{worker_id}.records.jsonl", out_dir / f"{worker_id}.events.jsonl"
    kwargs = endpoint.client_kwargs()
    key = kwargs.get("aws_access_key_id") or "test"
    secret = kwargs.get("aws_secret_access_key") or "test"
    options = {
        "endpoint": endpoint.url, "region": endpoint.region, "access-key": key,
        "secret-key": secret, "stream": stream, "app": app_name, "worker-id": worker_id,
        "out": records, "events": events, "failover-ms": _ms(failover_time),
        "idle-ms": _ms(idle_time), "shard-sync-ms": _ms(shard_sync_interval),
        "parent-poll-ms": _ms(parent_poll_interval), "checkpoint-every": checkpoint_every,
        "checkpoint-interval-ms": _ms(checkpoint_interval), "max-steal": max_steal,
    }  # fmt: skip
    cmd = [java, f"-Xmx{heap}", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-jar", str(jar)]
    for name, value in options.items():
        cmd += [f"--{name}", str(value)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAVA_TOOL", "_JAVA"))}
    proc = start_process(
        f"kcl-{worker_id}", cmd, log_path=out_dir / f"{worker_id}.kcl.log", env=env
    )
    return KclWorker(worker_id, proc, records, events)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _json_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out: list[dict[str, Any]] = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # the last line of a killed writer
    return out
