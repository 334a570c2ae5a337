"""A SIGTERM stops a fleet member even when the kernel delivers it to one of the member's
threads instead of the main thread (seen once in a loaded run: a worker ran on after its
SIGTERM, its event loop never asked to stop). Python runs the handler only in the main
thread, which must therefore not sleep in an untimed wait.

Run in a child process (it installs SIGTERM/SIGINT handlers): a member whose run waits for
request_stop; the signal is sent with ``pthread_kill`` to the member's own thread.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
    """
    import asyncio, signal, threading
    from streamkit.fleet.member import FleetMember, _stop_on_signals

    class Run:
        def __init__(self):
            self.stop = asyncio.Event()
        async def run(self):
            await self.stop.wait()
        def request_stop(self):
            self.stop.set()

    member = FleetMember(Run(), "t")
    _stop_on_signals(member)
    member.start()
    while member._loop is None:
        pass
    target = member._thread.ident
    threading.Timer(0.5, lambda: signal.pthread_kill(target, signal.SIGTERM)).start()
    member.await_termination()
    print("stopped", flush=True)
    """
)


def test_sigterm_delivered_to_a_member_thread_stops_it() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "stopped"
