"""A live web UI of the process's streaming queries: ``sk.ui.serve(8080)`` (or
``start(ui_port=8080)``, ``STREAMKIT_UI_PORT=8080``, ``streamkit run --ui-port 8080``,
``streamkit ui job.py``) serves one page per query at ``http://host:port/``.

Each page polls its query's JSON once a second and draws input rate against processing
rate, batch duration by phase, watermark against the newest event time, per-shard lag and
owner (and, for Kinesis, every worker in the lease table), dead letters with reasons and a
sample, late rows, and the checkpoint and commit positions. A fleet worker (``streamkit
worker --ui-port``) serves ``/fleet``: every worker of the fleet, each one's figures fetched
from its own endpoint (:mod:`streamkit.ui.fleet`). The charts are the package's own script
(``static/charts.js``): nothing is fetched from the network.

Needs aiohttp (``pip install 'streamkit[ui]'``, else
:class:`~streamkit.errors.MissingDependencyError`). One listener per process, created on
first use; queries that started before it show their last 100 batches.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from streamkit.config import port_or_env

if TYPE_CHECKING:
    from streamkit.ui.history import UiListener
    from streamkit.ui.server import UiServer

PORT_VARIABLE = "STREAMKIT_UI_PORT"
"""Environment variable: when set, every query start serves the UI on that port."""

_lock = threading.Lock()
_listener: list[UiListener] = []
_servers: dict[int, UiServer] = {}


def listener() -> UiListener:
    """The process's UI listener, created and added to ``sk.streams`` on first use."""
    with _lock:
        if not _listener:
            from streamkit.streaming.listeners import streams
            from streamkit.ui.history import UiListener

            made = UiListener()
            streams.add_listener(made)
            _listener.append(made)
        return _listener[0]


def serve(port: int = 0, host: str = "127.0.0.1") -> UiServer:
    """Serve the UI on ``host:port`` (0: a free port; ``host="0.0.0.0"`` for every
    interface) from a daemon thread; returns the server (``.url``, ``.port``, ``.stop()``).
    Idempotent per port."""
    from streamkit._deps import require

    require("aiohttp", "ui")
    ui = listener()
    with _lock:
        if port and port in _servers:
            return _servers[port]
        from streamkit.ui.server import UiServer

        server = UiServer(ui, port, host).start()
        _servers[server.port] = server
        return server


def serve_if_asked(port: int | None) -> UiServer | None:
    """Serve on ``port``, else on ``$STREAMKIT_UI_PORT`` when set; None when neither."""
    port = port_or_env(port, PORT_VARIABLE)
    return None if port is None else serve(port)


def serving() -> list[UiServer]:
    """The servers :func:`serve` started and not stopped (oldest first)."""
    with _lock:
        return list(_servers.values())


def stop_serving() -> None:
    """Stop every server :func:`serve` started (the listener keeps its history)."""
    with _lock:
        servers = list(_servers.values())
        _servers.clear()
    for server in servers:
        server.stop()


__all__ = ["PORT_VARIABLE", "listener", "serve", "serve_if_asked", "serving", "stop_serving"]
