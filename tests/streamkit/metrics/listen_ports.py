"""A port for a server a child process will open later (a worker's ``/metrics``).

``bind(0)`` hands out a port from the kernel's ephemeral range, which every outgoing
connection on the machine draws from too (the workers' own boto clients among them), so
the port can be taken in the seconds before the child binds it. These ports come from
below that range, chosen at random among those free now.
"""

from __future__ import annotations

import random
import socket

LOW, HIGH = 20_000, 32_000
"""Below Linux's default ephemeral range (32768-60999)."""


def listen_port() -> int:
    """A port in ``[LOW, HIGH)`` that is free on 127.0.0.1 now."""
    for _ in range(200):
        port = random.randrange(LOW, HIGH)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in [{LOW}, {HIGH}) after 200 tries")
