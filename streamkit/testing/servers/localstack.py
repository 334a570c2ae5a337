"""LocalStack (Kinesis, DynamoDB, S3) in host mode, without Docker and without internet.

Installs on first use (see :mod:`._localstack_install`), then each start gets a private
``FILESYSTEM_ROOT`` whose static library folder is the shared, prepared one. The server is
ready once its health endpoint answers and a first Kinesis, DynamoDB and S3 call succeeded
(those load the services and start kinesis-local and DynamoDB Local), so tests never pay the
lazy-loading time inside their own timeouts.
"""

from __future__ import annotations

import os
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from streamkit.config import AwsEndpoint

from ._install import default_cache_dir
from ._localstack_install import LocalStackInstall, install_localstack
from ._server import AwsServer, Launch, launch

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from pathlib import Path

SERVICES = "kinesis,dynamodb,s3,sts,cloudwatch"
"""sts: the Java KPL peer asks GetCallerIdentity for the stream ARN before it puts a record;
cloudwatch: the metrics publisher's tests (it loads on first use, well under a second)."""


def localstack_env(
    install: LocalStackInstall, port: int, root: Path, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Environment of a host-mode LocalStack on ``127.0.0.1:port`` with ``root`` as its
    private FILESYSTEM_ROOT; ``extra`` (e.g. ``{"KINESIS_LATENCY": "0"}``) wins."""
    static_libs = root / "usr" / "lib" / "localstack"
    static_libs.parent.mkdir(parents=True, exist_ok=True)
    if not static_libs.exists():
        static_libs.symlink_to(install.lib, target_is_directory=True)
    env = dict(os.environ)
    env.update(
        OVERRIDE_IN_DOCKER="0",
        FILESYSTEM_ROOT=str(root),
        GATEWAY_LISTEN=f"127.0.0.1:{port}",
        LOCALSTACK_HOST=f"127.0.0.1:{port}",  # host:port in URLs LocalStack hands out
        SERVICES=SERVICES,
        SKIP_SSL_CERT_DOWNLOAD="1",
        LOCALSTACK_TELEMETRY_DISABLED="1",
        DISABLE_EVENTS="1",
        DNS_ADDRESS="0",  # no DNS server: it needs privileges and is not used here
        KINESIS_PERSISTENCE="0",  # no snapshot of every stream to disk each 5 s
        PYTHONUNBUFFERED="1",
    )
    env.update(extra or {})
    return env


_WARM_UP = {"kinesis": "list_streams", "dynamodb": "list_tables", "s3": "list_buckets"}
"""One cheap call per service: loads the provider and starts kinesis-local / DynamoDB Local."""


def _ready(url: str, endpoint: AwsEndpoint) -> Callable[[], bool]:
    clients: dict[str, Any] = {}

    def warm(service: str) -> None:
        if service not in clients:
            cfg: dict[str, Any] = {"retries": {"max_attempts": 1}, "read_timeout": 60}
            clients[service] = endpoint.client(service, connect_timeout=2, **cfg)
        getattr(clients[service], _WARM_UP[service])()

    def check() -> bool:
        with urllib.request.urlopen(f"{url}/_localstack/health", timeout=2) as resp:
            if resp.status != 200:
                return False
        with ThreadPoolExecutor(len(_WARM_UP)) as pool:  # the services load concurrently
            for done in [pool.submit(warm, service) for service in _WARM_UP]:
                done.result()
        return True

    return check


@contextmanager
def start_localstack(
    cache_dir: Path | None = None,
    *,
    timeout: float = 120.0,
    env: Mapping[str, str] | None = None,
) -> Iterator[AwsServer]:
    """Run LocalStack on a free port of 127.0.0.1 for the duration of the ``with`` block.

    Installs into ``cache_dir`` (default :func:`default_cache_dir`) on first use. ``timeout``
    bounds the start, not the install. ``env`` adds LocalStack settings. On exit the server,
    its kinesis-local and DynamoDB Local children are stopped by PID.
    """
    cache = (cache_dir or default_cache_dir()).resolve()
    install = install_localstack(cache)

    def plan(port: int, run_dir: Path) -> Launch:
        url = f"http://127.0.0.1:{port}"
        cmd = [str(install.python), "-m", "localstack.runtime.main"]
        run_env = localstack_env(install, port, run_dir / "root", env)
        return Launch(cmd=cmd, env=run_env, ready=_ready(url, AwsEndpoint.local(url)))

    proc, port, run_dir = launch("localstack", cache, plan, timeout=timeout)
    url = f"http://127.0.0.1:{port}"
    server = AwsServer(
        name="localstack",
        url=url,
        port=port,
        process=proc,
        run_dir=run_dir,
        logs_dir=cache / "logs",
        endpoint=AwsEndpoint.local(url),
    )
    try:
        yield server
    finally:
        server.stop()
