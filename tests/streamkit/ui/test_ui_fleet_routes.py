"""The fleet routes of the UI server (no fleet needed): ``/api/fleet`` and ``/api/worker``
serve what the connector registered, 404 without it, 503 with the error when it fails;
``/`` of a fleet worker (no query of its own) leads to ``/fleet``. And the worker
report's records/s meter over a known clock."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from streamkit.ui.fleet import set_fleet
from streamkit.ui.history import UiListener
from streamkit.ui.server import UiServer

pytest.importorskip("aiohttp")


@pytest.fixture
def server() -> Iterator[UiServer]:
    s = UiServer(UiListener(), 0).start()
    try:
        yield s
    finally:
        set_fleet(None)
        s.stop()


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, (reply.geturl(), reply.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_routes_without_a_fleet(server: UiServer) -> None:
    assert get(server.url + "api/fleet")[0] == 404
    assert get(server.url + "api/worker")[0] == 404
    status, (final, _) = get(server.url)
    assert (status, final) == (200, server.url)


def test_routes_serve_the_registered_fleet(server: UiServer) -> None:
    async def fleet() -> dict[str, Any]:
        return {"app": "a", "workers": []}

    async def worker() -> dict[str, Any]:
        raise RuntimeError("lease table gone")

    set_fleet(fleet, worker)
    status, (_, body) = get(server.url + "api/fleet")
    assert (status, json.loads(body)) == (200, {"app": "a", "workers": []})
    status, body = get(server.url + "api/worker")
    assert status == 503
    assert json.loads(body) == {"error": "RuntimeError: lease table gone"}
    status, (final, page) = get(server.url)
    assert (status, final) == (200, server.url + "fleet")
    assert b'src="/static/fleet.js"' in page
    assert get(server.url + "static/fleet.js")[0] == 200


def test_rate_meter_over_its_window() -> None:
    from streamkit_kinesis.fleet.endpoint import RATE_WINDOW, RateMeter

    now = [100.0]
    meter = RateMeter(lambda: now[0])
    assert meter.rate(0) is None
    now[0] += 2
    assert meter.rate(50) == 25.0
    now[0] += RATE_WINDOW + 1  # the window keeps the newest sample older than it
    assert meter.rate(50) == 0.0
    now[0] += 1
    assert meter.rate(60) == pytest.approx(10 / (RATE_WINDOW + 2))
