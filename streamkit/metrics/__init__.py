"""Metrics of the process's streaming queries: ``sk.metrics.serve(port)`` exposes them at
``http://host:port/metrics`` in Prometheus' text format.

Importing this package needs nothing optional; serving needs ``prometheus_client``
(``pip install 'streamkit[metrics]'``, else :class:`~streamkit.errors.MissingDependencyError`).
One registry per process: the query listener's ``streamkit_*`` series plus any collector
a connector adds with :func:`register_collector` (the Kinesis connector's leases and calls).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from streamkit.config import port_or_env

if TYPE_CHECKING:
    from streamkit.metrics.prometheus import PrometheusListener

PORT_VARIABLE = "STREAMKIT_METRICS_PORT"
"""Environment variable: when set, every query start serves the metrics on that port."""

_lock = threading.Lock()
_made: list[PrometheusListener] = []
"""The process's listener once created (at most one element)."""
_servers: dict[int, Any] = {}
_pending: list[Any] = []


def listener() -> PrometheusListener:
    """The process's Prometheus listener, created and added to ``sk.streams`` on first use
    (with the collectors registered so far)."""
    with _lock:
        if not _made:
            from streamkit.metrics.prometheus import PrometheusListener
            from streamkit.streaming.listeners import streams

            made = PrometheusListener()
            for collector in _pending:
                made.registry.register(collector)
            _pending.clear()
            streams.add_listener(made)
            _made.append(made)
        return _made[0]


def register_collector(collector: Any) -> None:
    """Add a ``prometheus_client`` collector to the served registry (now, or when the
    listener is created). Needs no ``prometheus_client`` until then."""
    with _lock:
        if not _made:
            _pending.append(collector)
            return
    _made[0].registry.register(collector)


def serve(port: int = 0, addr: str = "0.0.0.0") -> int:
    """Serve ``/metrics`` on ``addr:port`` (0: a free port) from a daemon thread; returns the
    port. Idempotent per port: serving one already served returns at once."""
    registry = listener().registry
    with _lock:
        if port and port in _servers:
            return port
        from streamkit.metrics.prometheus import _prom

        server, _thread = _prom().start_http_server(port, addr=addr, registry=registry)
        bound: int = server.server_port
        _servers[bound] = server
        return bound


def serve_if_asked(port: int | None) -> int | None:
    """Serve on ``port``, else on ``$STREAMKIT_METRICS_PORT`` when set; None when neither."""
    port = port_or_env(port, PORT_VARIABLE)
    return None if port is None else serve(port)


def stop_serving() -> None:
    """Close every endpoint :func:`serve` opened (the metrics are kept)."""
    with _lock:
        servers = list(_servers.values())
        _servers.clear()
    for server in servers:
        server.shutdown()
        server.server_close()


__all__ = ["PORT_VARIABLE", "listener", "register_collector", "serve", "serve_if_asked",
           "stop_serving"]  # fmt: skip
