"""The Java KPL as a peer: a program that puts user records through the real Kinesis
Producer Library (aggregation on), built with Maven and run as a process.

The program is the Maven project ``tests/peers/kpl`` of the source checkout (see its
``KplPeer.java``). :func:`install_kpl` builds it once into the server cache
(``<cache>/kpl/app``: ``kpl-peer.jar`` and its runtime jars in ``lib/``), stamp-protected
like the servers; the stamp names the KPL version and a digest of the project's sources.
:func:`run_kpl_producer` runs it to completion and returns what it was told to put.

Why KPL 0.15.12: the newest release Maven Central serves (1.x is not published there). Its
jar ships the native ``kinesis_producer`` daemon (linux-x86_64, glibc only), which the Java
side extracts to the temp folder and talks to over pipes. The daemon speaks HTTPS only, so
it is pointed at LocalStack's port (which also answers TLS) with certificate checks off; it
asks STS for the stream ARN, so LocalStack runs STS too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from streamkit.testing.peers.kcl import JAVA_HINT, _sources_digest
from streamkit.testing.servers._install import (
    ServerInstallError,
    default_cache_dir,
    ensure_installed,
    require_tool,
    run_step,
)

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint

KPL_VERSION = "0.15.12"
"""``com.amazonaws:amazon-kinesis-producer`` version the peer is built with."""

PROJECT = Path(__file__).resolve().parents[3] / "tests" / "peers" / "kpl"
"""The Maven project of the peer in the source checkout."""

JAR = "kpl-peer.jar"


def install_kpl(cache_dir: Path | None = None) -> Path:
    """Build the KPL peer into ``<cache>/kpl/app`` (first run ~1 min: the KPL jar is ~60 MB);
    returns the jar's path. Idempotent; the source folder stays clean."""
    cache = (cache_dir or default_cache_dir()).resolve()
    if not (PROJECT / "pom.xml").is_file():
        raise ServerInstallError(
            f"the KPL peer's Maven project is not at {PROJECT}; it ships with the source "
            "checkout only (run the interoperability tests from a clone)"
        )
    home = cache / "kpl"
    app = home / "app"

    def install() -> None:
        mvn = require_tool("mvn", JAVA_HINT)
        require_tool("java", JAVA_HINT)
        partial = home / "build.partial"
        shutil.rmtree(partial, ignore_errors=True)
        run_step(
            [mvn, "-q", "-B", "package", f"-Dpeer.build.dir={partial}",
             f"-Dkpl.version={KPL_VERSION}"],
            log=cache / "logs" / "install-kpl.log", cwd=PROJECT,
        )  # fmt: skip
        staged = home / "app.partial"
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(parents=True)
        (partial / JAR).replace(staged / JAR)
        (partial / "lib").replace(staged / "lib")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(app, ignore_errors=True)
        staged.replace(app)

    key = f"amazon-kinesis-producer=={KPL_VERSION} sources={_sources_digest(PROJECT)}"
    ensure_installed(cache, "kpl", key, app / JAR, install)
    return app / JAR


@dataclass(frozen=True)
class PutRecord:
    """One user record the KPL was told to put, and what it reported."""

    index: int
    """Position in put order."""
    partition_key: str
    """Partition key given."""
    explicit_hash_key: str | None
    """Explicit hash key given (decimal), if any."""
    data: bytes
    """Payload given."""
    shard_id: str
    """Shard the KPL reported."""
    sequence_number: str
    """Sequence number of the Kinesis record that carries it (shared inside an aggregate)."""


def run_kpl_producer(
    endpoint: AwsEndpoint,
    stream: str,
    out_dir: Path,
    *,
    records: int,
    keys: int,
    start: int = 0,
    size: int = 60,
    ehk_every: int = 0,
    aggregation_max_count: int = 50,
    warmup: float = 5.0,
    timeout: float = 600.0,
    cache_dir: Path | None = None,
) -> list[PutRecord]:
    """Put ``records`` user records into ``stream`` through the Java KPL and return them in
    put order (the program's own account: ground truth for a reader).

    Records are numbered ``start, start + 1, ...``; record ``i`` has partition key
    ``pk-<i % keys>`` and data, the JSON object ``{"i": i, "pk": pk, "pad": "xx..."}`` of
    ``size`` bytes (at least); every ``ehk_every``-th one (0: none) carries an explicit
    hash key.
    Raises :class:`RuntimeError` with the log's end if a put failed or the JVM did not exit
    0 within ``timeout`` s.
    """
    url = urlsplit(endpoint.url or "")
    if not url.hostname or not url.port:
        raise ValueError("the KPL peer needs a local endpoint URL with a port (LocalStack)")
    jar = install_kpl(cache_dir)
    java = require_tool("java", JAVA_HINT)
    out_dir.mkdir(parents=True, exist_ok=True)
    out, log = out_dir / f"kpl-{stream}-{start}.jsonl", out_dir / f"kpl-{stream}-{start}.log"
    kwargs = endpoint.client_kwargs()
    options = {
        "host": url.hostname, "port": url.port, "region": endpoint.region,
        "access-key": kwargs.get("aws_access_key_id") or "test",
        "secret-key": kwargs.get("aws_secret_access_key") or "test", "stream": stream,
        "records": records, "start": start, "keys": keys, "size": size, "ehk-every": ehk_every,
        "aggregation-max-count": aggregation_max_count, "warmup-ms": round(warmup * 1000),
        "out": out,
    }  # fmt: skip
    cmd = [java, "-Xmx256m", "-XX:+UseSerialGC", "-jar", str(jar)]
    for name, value in options.items():
        cmd += [f"--{name}", str(value)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAVA_TOOL", "_JAVA"))}
    env["AWS_JAVA_V1_DISABLE_DEPRECATION_ANNOUNCEMENT"] = "true"
    with log.open("wb") as sink:
        try:
            code = subprocess.run(
                cmd, stdout=sink, stderr=subprocess.STDOUT, env=env, timeout=timeout, check=False
            ).returncode
        except subprocess.TimeoutExpired:
            code = None
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(f"the KPL peer exited with {code}; end of {log}:\n{tail}")
    return [_put_record(json.loads(line)) for line in out.read_text().splitlines()]


def _put_record(row: dict[str, object]) -> PutRecord:
    ehk = row["ehk"]
    return PutRecord(
        int(str(row["i"])), str(row["pk"]), None if ehk is None else str(ehk),
        str(row["data"]).encode(), str(row["shard"]), str(row["seq"]),
    )  # fmt: skip
