"""SIGTERM / SIGINT start a graceful stop of a consumer (Unix event loops)."""

from __future__ import annotations

import asyncio
import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from .worker import KinesisConsumer


def install_signal_handlers(
    consumer: KinesisConsumer, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)
) -> Callable[[], None]:
    """Make ``signals`` call :meth:`KinesisConsumer.request_stop` (graceful shutdown: the
    in-flight batches finish, processors checkpoint, leases are released).

    Call from the running event loop. Returns a function that removes the handlers.
    """
    loop = asyncio.get_running_loop()
    for sig in signals:
        loop.add_signal_handler(sig, consumer.request_stop)

    def remove() -> None:
        for sig in signals:
            loop.remove_signal_handler(sig)

    return remove
