"""The UI's HTTP server (aiohttp) on its own thread and event loop, so serving a page never
runs on a query's loop.

Routes: ``/`` (the queries), ``/query/<id or name>`` (one query's live page), ``/fleet``
(every worker of the fleet this process belongs to), ``/static/*`` (the page's script and
style, package data), ``/api/queries``, ``/api/queries/<key>`` and ``/api/fleet`` (the JSON
the pages poll once a second), ``/api/worker`` (a fleet worker's own figures, which the
fleet pages of the other workers fetch).
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
from importlib import resources
from typing import Any

from streamkit._deps import require
from streamkit.ui.fleet import fleet_json, worker_json
from streamkit.ui.history import UiListener
from streamkit.ui.snapshot import queries_json, query_json

STATIC = ("ui.js", "charts.js", "ui.css", "fleet.js")
_dumps = functools.partial(json.dumps, default=str)
"""Values JSON has no type for (a late row's Decimal, date, ...) are shown as text."""
PAGES = ("index.html", "query.html", "fleet.html")
FLEET_TIMEOUT = 10.0
"""Seconds the fleet JSON may take (it asks every worker's endpoint)."""


def _asset(name: str) -> bytes:
    return resources.files("streamkit.ui").joinpath("static", name).read_bytes()


class UiServer:
    """Serves the UI of ``listener``'s queries on ``host:port`` (0: a free port) until
    :meth:`stop`. :meth:`start` returns once the port is bound."""

    def __init__(self, listener: UiListener, port: int = 0, host: str = "127.0.0.1") -> None:
        self.listener, self.host, self.port = listener, host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: Any = None
        self._thread: threading.Thread | None = None
        self._assets = {name: _asset(name) for name in (*STATIC, *PAGES)}

    @property
    def url(self) -> str:
        """``http://host:port/``."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> UiServer:
        """Bind and serve from a daemon thread; raises what binding raised."""
        web = require("aiohttp.web", "ui")
        ready: list[BaseException | None] = []
        bound = threading.Event()

        async def serve() -> None:
            app = web.Application()
            app.router.add_get("/", self._index)
            app.router.add_get("/query/{key}", self._page("query.html"))
            app.router.add_get("/static/{name}", self._static)
            app.router.add_get("/api/queries", self._queries)
            app.router.add_get("/api/queries/{key}", self._query)
            app.router.add_get("/fleet", self._page("fleet.html"))
            app.router.add_get("/api/fleet", self._fleet)
            app.router.add_get("/api/worker", self._worker)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.host, self.port)
            await site.start()
            self.port = self._runner.addresses[0][1]

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(serve())
            except BaseException as exc:  # reported to start()
                ready.append(exc)
                bound.set()
                return
            ready.append(None)
            bound.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="streamkit-ui", daemon=True)
        self._thread.start()
        bound.wait()
        if ready[0] is not None:
            raise ready[0]
        return self

    def stop(self) -> None:
        """Stop serving (the page's open requests are cut)."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)

    # -- handlers --------------------------------------------------------------------------
    def _page(self, name: str) -> Any:
        web = require("aiohttp.web", "ui")
        body = self._assets[name]

        async def handler(_request: Any) -> Any:
            return web.Response(body=body, content_type="text/html", charset="utf-8")

        return handler

    async def _index(self, request: Any) -> Any:
        """The queries; a fleet worker, which runs no query of its own, shows its fleet."""
        web = require("aiohttp.web", "ui")
        if fleet_json() is not None and not self.listener.records():
            raise web.HTTPFound("/fleet")
        return await self._page("index.html")(request)

    async def _static(self, request: Any) -> Any:
        web = require("aiohttp.web", "ui")
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        kind = "text/css" if name.endswith(".css") else "application/javascript"
        return web.Response(body=self._assets[name], content_type=kind, charset="utf-8")

    async def _queries(self, _request: Any) -> Any:
        web = require("aiohttp.web", "ui")
        return web.json_response(queries_json(self.listener), dumps=_dumps)

    async def _query(self, request: Any) -> Any:
        web = require("aiohttp.web", "ui")
        record = self.listener.get(request.match_info["key"])
        if record is None:
            raise web.HTTPNotFound(text="no such query (it may have ended long ago)")
        return web.json_response(await query_json(self.listener, record), dumps=_dumps)

    async def _fleet(self, _request: Any) -> Any:
        return await self._provided(fleet_json(), "this process is not a fleet worker")

    async def _worker(self, _request: Any) -> Any:
        return await self._provided(worker_json(), "this process is not a fleet worker")

    async def _provided(self, provider: Any, missing: str) -> Any:
        web = require("aiohttp.web", "ui")
        if provider is None:
            raise web.HTTPNotFound(text=missing)
        try:
            body = await asyncio.wait_for(provider(), FLEET_TIMEOUT)
        except Exception as exc:  # the page shows it; the UI keeps serving
            return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=503)
        return web.json_response(body, dumps=_dumps)
