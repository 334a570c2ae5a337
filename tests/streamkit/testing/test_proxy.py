"""TcpProxy against a real TCP echo server: forwards, cuts (reset + refused), restores."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from streamkit.testing.proxy import TcpProxy


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def roundtrip(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
        return got


def test_forwards_both_ways(echo_port: int) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB, several chunks
    with TcpProxy("127.0.0.1", echo_port) as proxy:
        assert roundtrip(proxy.port, payload) == payload
        assert roundtrip(proxy.port, b"again") == b"again"
        assert proxy.accepted == 2
        assert proxy.url == f"http://127.0.0.1:{proxy.port}"


def test_cut_resets_open_connections_and_refuses_new_ones_until_restored(echo_port: int) -> None:
    with TcpProxy("127.0.0.1", echo_port) as proxy:
        open_conn = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        open_conn.sendall(b"before")
        assert open_conn.recv(100) == b"before"
        proxy.cut()
        states = [proxy.is_cut]
        assert proxy.open_connections == 0
        # the open connection is dead: reset, or EOF, never an answer
        try:
            open_conn.sendall(b"after")
            assert open_conn.recv(100) == b""
        except ConnectionResetError:
            pass
        open_conn.close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        port = proxy.port
        proxy.restore()
        states.append(proxy.is_cut)
        assert states == [True, False]
        assert proxy.port == port
        assert roundtrip(proxy.port, b"back") == b"back"
        assert proxy.cuts == 1


def test_to_url_and_stop_is_idempotent(echo_port: int) -> None:
    proxy = TcpProxy.to_url(f"http://127.0.0.1:{echo_port}").start()
    assert roundtrip(proxy.port, b"x") == b"x"
    proxy.stop()
    proxy.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    with pytest.raises(ValueError, match="host:port"):
        TcpProxy.to_url("http://nohost")
