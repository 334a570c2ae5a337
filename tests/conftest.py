"""Session fixtures that start real servers on free loopback ports.

Fixture names are stable; other tests depend on them:
- ``moto_endpoint``: an AwsEndpoint on moto's threaded server (Kinesis, DynamoDB, S3).
- ``localstack_endpoint``: an AwsEndpoint on LocalStack (host mode) or STREAMKIT_AWS_ENDPOINT.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from streamkit.config import AwsEndpoint


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[AwsEndpoint]:
    """moto's in-process threaded server; a second, pure-Python peer for basic tests."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield AwsEndpoint.local(f"http://127.0.0.1:{port}")
    finally:
        server.stop()
