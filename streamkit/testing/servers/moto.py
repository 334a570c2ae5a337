"""moto's server in-process: the embedded AWS endpoint of ``streamkit demo`` and the tests.

Kinesis, DynamoDB and S3 over the real wire protocol on a free loopback port, in a thread of
this process; nothing to install but the ``moto[server]`` wheel (``streamkit[demo]``).
"""

from __future__ import annotations

import importlib.util
import logging
from contextlib import contextmanager
from typing import TYPE_CHECKING

from streamkit.config import AwsEndpoint
from streamkit.errors import MissingDependencyError

from ._proc import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator


def moto_installed() -> bool:
    """True when moto's server can be imported."""
    return importlib.util.find_spec("moto") is not None and (
        importlib.util.find_spec("moto.server") is not None
    )


@contextmanager
def start_moto() -> Iterator[AwsEndpoint]:
    """moto's threaded server on a free ``127.0.0.1`` port; stopped when the block exits.

    Raises :class:`~streamkit.errors.MissingDependencyError` (install ``streamkit[demo]``)
    when moto's server is not installed.
    """
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as e:
        raise MissingDependencyError("moto[server]", "demo") from e
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log on the screen
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield AwsEndpoint.local(f"http://127.0.0.1:{port}")
    finally:
        server.stop()
