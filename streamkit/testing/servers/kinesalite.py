"""kinesalite: a fast in-memory Kinesis for volume, soak and benchmark runs.

Lacks ChildShards, UpdateShardCount, SubscribeToShard and ShardFilter (see SERVERS.md), so
correctness tests of those run on LocalStack. Streams leave CREATING/DELETING/UPDATING after
``transition_ms`` (0 by default: at once).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from streamkit.config import AwsEndpoint

from ._install import NODE_HINT, default_cache_dir, install_npm, require_tool
from ._server import AwsServer, Launch, launch

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

# kinesalite's own CLI listens on every interface; this binds 127.0.0.1 only.
_LAUNCHER = """\
const [modulePath, port, optionsJson] = process.argv.slice(1);
const server = require(modulePath)(JSON.parse(optionsJson));
server.listen(Number(port), "127.0.0.1", () => console.log("kinesalite listening on " + port));
"""


def _ready(endpoint: AwsEndpoint) -> Callable[[], bool]:
    clients: list[Any] = []

    def check() -> bool:
        if not clients:
            clients.append(endpoint.client("kinesis", connect_timeout=1, read_timeout=5))
        clients[0].list_streams()
        return True

    return check


@contextmanager
def start_kinesalite(
    cache_dir: Path | None = None,
    *,
    timeout: float = 30.0,
    transition_ms: int = 0,
    shard_limit: int = 1000,
) -> Iterator[AwsServer]:
    """Run an in-memory kinesalite on a free port of 127.0.0.1 during the ``with`` block.

    Installs npm ``kinesalite`` into ``cache_dir`` (default :func:`default_cache_dir`) on
    first use; needs ``node`` on PATH. Stopped by PID on exit.
    """
    cache = (cache_dir or default_cache_dir()).resolve()
    module = install_npm(cache) / "kinesalite"
    node = require_tool("node", NODE_HINT)
    options = json.dumps(
        {
            "createStreamMs": transition_ms,
            "deleteStreamMs": transition_ms,
            "updateStreamMs": transition_ms,
            "shardLimit": shard_limit,
        }
    )

    def plan(port: int, run_dir: Path) -> Launch:
        endpoint = AwsEndpoint.local(f"http://127.0.0.1:{port}")
        cmd = [node, "-e", _LAUNCHER, str(module), str(port), options]
        return Launch(cmd=cmd, env=None, ready=_ready(endpoint))

    proc, port, run_dir = launch("kinesalite", cache, plan, timeout=timeout)
    url = f"http://127.0.0.1:{port}"
    server = AwsServer(
        name="kinesalite",
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
