"""Apache Kafka itself: a single-node KRaft broker (broker and controller in one JVM).

The broker's jars (``org.apache.kafka:kafka_2.13`` and its runtime dependencies) come from
Maven Central through ``mvn dependency:copy-dependencies`` on a small generated POM, into
``<cache>/kafka/jars``. Each start formats a fresh log directory (``kafka-storage format``
with a random cluster id) in the run's private folder, so brokers never share data; the
JVM heap is capped at 512 MiB. Needs a JDK >= 17 and Maven on PATH.
"""

from __future__ import annotations

import base64
import os
import shutil
import uuid
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ._install import default_cache_dir, ensure_installed, require_tool, run_step
from ._proc import free_port, log_tag, port_open
from ._server import KafkaServer, Launch, launch

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

KAFKA_VERSION = "4.1.1"
"""The Apache Kafka release the suite runs (KRaft only, as every 4.x)."""

JAVA_HINT = "install a JDK >= 17 and Maven (Debian: apt-get install openjdk-17-jdk-headless maven)"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>streamkit.testing</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId><artifactId>slf4j-simple</artifactId><version>1.7.36</version>
    </dependency>
  </dependencies>
</project>
"""

_PROPERTIES = """process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={logs}
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=5
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=5
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
"""


def install_kafka(cache: Path) -> Path:
    """Fetch the broker's jars with Maven into ``<cache>/kafka/jars``; returns that folder."""
    home = cache / "kafka"
    jars = home / "jars"

    def install() -> None:
        mvn = require_tool("mvn", JAVA_HINT)
        require_tool("java", JAVA_HINT)
        home.mkdir(parents=True, exist_ok=True)
        (home / "pom.xml").write_text(_POM.format(version=KAFKA_VERSION))
        partial = home / "jars.partial"
        shutil.rmtree(partial, ignore_errors=True)
        run_step(
            [mvn, "-q", "-B", "dependency:copy-dependencies", "-DincludeScope=runtime",
             f"-DoutputDirectory={partial}"],
            log=cache / "logs" / "install-kafka.log", cwd=home,
        )  # fmt: skip
        shutil.rmtree(jars, ignore_errors=True)
        partial.replace(jars)

    marker = jars / f"kafka_2.13-{KAFKA_VERSION}.jar"
    ensure_installed(cache, "kafka", f"kafka_2.13=={KAFKA_VERSION}", marker, install)
    return jars


def _cluster_id() -> str:
    """A random Kafka cluster id: 16 bytes, URL-safe base64 without padding, never starting
    with ``-`` (the storage tool would read it as an option: 1 start in 64 failed; Kafka's
    own ``Uuid.randomUuid`` draws again in that case too)."""
    while True:
        cluster = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster.startswith("-"):
            return cluster


def _java(jars: Path, *args: str, heap: str = "512m") -> list[str]:
    java = require_tool("java", JAVA_HINT)
    return [java, f"-Xmx{heap}", "-XX:+UseSerialGC", "-cp", f"{jars}/*", *args]


@contextmanager
def start_kafka(cache_dir: Path | None = None, *, timeout: float = 90.0) -> Iterator[KafkaServer]:
    """Run an Apache Kafka broker (KRaft, one node) on free ports of 127.0.0.1 in the block.

    Installs into ``cache_dir`` (default :func:`default_cache_dir`) on first use; formats a
    fresh log directory per start; stopped by PID on exit. Idempotent producers and
    transactions work (replication factors are 1).
    """
    cache = (cache_dir or default_cache_dir()).resolve()
    jars = install_kafka(cache)
    log = cache / "logs" / f"kafka-format{log_tag()}.log"

    def plan(port: int, run_dir: Path) -> Launch:
        props = run_dir / "server.properties"
        props.write_text(
            _PROPERTIES.format(port=port, controller=free_port(), logs=run_dir / "data")
        )
        fmt = ["kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(props)]
        run_step(_java(jars, *fmt, heap="256m"), log=log)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "JAVA_TOOL"))}
        cmd = _java(jars, "kafka.Kafka", str(props))
        return Launch(cmd=cmd, env=env, ready=lambda: port_open("127.0.0.1", port))

    proc, port, run_dir = launch("kafka", cache, plan, timeout=timeout)
    server = KafkaServer.on_loopback("kafka", proc, port, run_dir, cache)
    try:
        yield server
    finally:
        server.stop()
