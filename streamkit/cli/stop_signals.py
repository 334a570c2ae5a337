"""Ctrl-C (SIGINT) and SIGTERM as an orderly stop request of a long-running command.

Inside :func:`stop_on_signals` (entered in the main thread) the command owns both signals,
whatever disposition the process inherited: a background job of a non-interactive shell
(CI scripts, ``cmd &`` in a script) starts with SIGINT *ignored*, and Python then never
turns it into ``KeyboardInterrupt``, so without this a ``kill -INT`` is lost. The first
signal only records itself in the :class:`StopRequest`: no exception is raised in whatever
the main thread is running (a half-done start-up step, a library call), so the command
stops at its next check, in order. A second SIGINT raises ``KeyboardInterrupt`` (a forced
stop, for a stop that takes too long). On leaving, the previous handlers are restored.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

from streamkit.cli._common import EXIT_INTERRUPTED, EXIT_TERMINATED

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class StopRequest:
    """The first stop signal received (None while none came); set by :meth:`handle`."""

    signum: int | None = None

    def is_set(self) -> bool:
        """True once SIGINT or SIGTERM arrived."""
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        """130 after SIGINT, 143 after SIGTERM (the CLI's exit codes)."""
        return EXIT_TERMINATED if self.signum == signal.SIGTERM else EXIT_INTERRUPTED

    @property
    def word(self) -> str:
        """``interrupted`` (SIGINT) or ``terminated`` (SIGTERM)."""
        return "terminated" if self.signum == signal.SIGTERM else "interrupted"

    def handle(self, signum: int, frame: FrameType | None) -> None:
        """The signal handler: the first signal is recorded; a later SIGINT raises
        ``KeyboardInterrupt``; a later SIGTERM changes nothing."""
        if self.signum is None:
            self.signum = signum
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt

    def wait(
        self,
        seconds: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> bool:
        """Wait up to ``seconds``; True as soon as a stop is requested (within 0.1 s)."""
        deadline = clock() + seconds
        while not self.is_set():
            left = deadline - clock()
            if left <= 0:
                return False
            sleep(min(left, 0.1))
        return True


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """While inside, SIGINT and SIGTERM set the yielded request (see the module doc).
    Outside the main thread (the CLI driven from a test thread) nothing is installed."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {s: signal.signal(s, request.handle) for s in STOP_SIGNALS}
    try:
        yield request
    finally:
        for s, handler in previous.items():
            if handler is not None:  # None: installed outside Python, cannot be restored
                signal.signal(s, handler)
