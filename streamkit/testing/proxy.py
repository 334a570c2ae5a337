"""A TCP proxy that can cut a server off and bring it back: endpoint outages on demand.

:class:`TcpProxy` forwards every connection made to its port to a target server, in a
thread of its own (so it serves a query's thread and a test's loop alike). :meth:`cut`
aborts every open connection (the peers see a reset) and closes the listening socket
(new connections are refused), as a network outage or a dead server would;
:meth:`restore` listens on the same port again. Both return once done, so a test knows
the outage is in effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from collections.abc import Coroutine
    from types import TracebackType
    from typing import Any

_CHUNK = 64 * 1024


class TcpProxy:
    """Forwards ``listen_host:port`` to ``target_host:target_port`` until :meth:`cut`.

    ``port`` 0 picks a free port (see :attr:`port`, :attr:`url`). Counters: connections
    :attr:`accepted`, :attr:`cuts` made. Use as a context manager or call :meth:`start`
    and :meth:`stop`.
    """

    def __init__(
        self, target_host: str, target_port: int, *, listen_host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.target_host, self.target_port = target_host, target_port
        self.listen_host = listen_host
        self.port = port
        self.accepted = 0
        """Client connections accepted (and forwarded) so far."""
        self.cuts = 0
        """How many times :meth:`cut` ran."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tcp-proxy", daemon=True
        )
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    @classmethod
    def to_url(cls, url: str) -> TcpProxy:
        """A proxy in front of the server of an ``http://host:port`` URL."""
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"{url!r} has no host:port")
        return cls(parts.hostname, parts.port)

    @property
    def url(self) -> str:
        """``http://host:port`` of the proxy (after :meth:`start`)."""
        return f"http://{self.listen_host}:{self.port}"

    @property
    def is_cut(self) -> bool:
        """True between :meth:`cut` and :meth:`restore`."""
        return self._server is None

    @property
    def open_connections(self) -> int:
        """Client connections currently forwarded."""
        return len(self._open)

    def start(self) -> Self:
        """Start the proxy thread and listen (returns once connections are accepted)."""
        self._thread.start()
        self._run(self._listen())
        return self

    def cut(self) -> None:
        """Refuse new connections and abort every open one; returns once both are done."""
        self._run(self._cut())
        self.cuts += 1

    def restore(self) -> None:
        """Accept connections again, on the same port."""
        self._run(self._listen())

    def stop(self) -> None:
        """Cut everything and end the thread (idempotent)."""
        if not self._thread.is_alive():
            return
        self._run(self._cut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- in the proxy's loop --------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    async def _listen(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._serve, self.listen_host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            # wait_closed would also wait for the handlers, which the aborts below end
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self._server is None:  # accepted just before a cut
            client_w.transport.abort()
            return
        try:
            server_r, server_w = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            client_w.transport.abort()
            return
        self.accepted += 1
        self._open.update((client_w, server_w))
        try:
            await asyncio.gather(_pipe(client_r, server_w), _pipe(server_r, client_w))
        finally:
            for writer in (client_w, server_w):
                self._open.discard(writer)
                writer.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy ``reader`` to ``writer`` until EOF or an error; then half-close ``writer``."""
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
