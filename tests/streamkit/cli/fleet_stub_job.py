"""A job file for the ``streamkit worker`` / ``run --workers`` tests (not collected).
``job()`` prints the fleet variables it sees, then acts as
``$STUB_PLAN`` says for its worker (``k=action`` items, k = the last ``-k`` of the worker
id; ``*`` any): ``exit:N`` (sys.exit), ``kill:SIG`` (the process signals itself), ``run``
(default: a started query that reports one batch and runs until stopped, printing
``stop called`` when it is), ``stopfail:N`` (the same, but its process exits N when
stopped), ``bare`` (a handle as the fleet member's: no progress, and it installs its own
SIGINT / SIGTERM handlers, which only ask it to stop)."""

from __future__ import annotations

import os
import signal
import sys
from datetime import UTC, datetime
from typing import Any

from streamkit.streaming.progress import PhaseDurations, QueryProgress


def _action() -> str:
    wid = os.environ.get("STREAMKIT_WORKER_ID", "")
    plan = dict(x.split("=", 1) for x in os.environ.get("STUB_PLAN", "").split(",") if x)
    return plan.get(wid.rsplit("-", 1)[-1], plan.get("*", "run"))


class StubQuery:
    """A started query: one batch of 3 rows, active until ``stop()``."""

    name = "stub"

    def __init__(self, exit_on_stop: int | None = None) -> None:
        self.stopped, self.exit_on_stop = False, exit_on_stop
        when = datetime(2026, 1, 1, tzinfo=UTC)
        self.recent_progress = [QueryProgress(0, when, 3, 3.0, 3.0, PhaseDurations(), None,
                                              0, 0, 0, 3)]  # fmt: skip
        self.last_progress = self.recent_progress[-1]

    @property
    def is_active(self) -> bool:
        return not self.stopped

    def process_all_available(self, timeout: float = 60.0) -> None:
        pass

    def stop(self) -> None:
        print("stop called", flush=True)
        self.stopped = True
        if self.exit_on_stop is not None:
            os._exit(self.exit_on_stop)

    def await_termination(self, timeout: float | None = None) -> bool:
        return True


class BareQuery:
    """A started handle without progress that takes SIGINT and SIGTERM for itself."""

    name = "bare"

    def __init__(self) -> None:
        self.stopped = False

        def handler(signum: int, frame: object) -> None:
            print(f"handle got signal {signum}", flush=True)
            self.stopped = True

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, handler)

    @property
    def is_active(self) -> bool:
        return not self.stopped

    def stop(self) -> None:
        print("stop called", flush=True)
        self.stopped = True

    def await_termination(self, timeout: float | None = None) -> bool:
        return True


def job() -> Any:
    fleet, wid = os.environ.get("STREAMKIT_FLEET"), os.environ.get("STREAMKIT_WORKER_ID")
    print(f"env STREAMKIT_FLEET={fleet} STREAMKIT_WORKER_ID={wid} pid={os.getpid()}",
          flush=True)  # fmt: skip
    kind, _, arg = _action().partition(":")
    if kind == "exit":
        print(f"exiting {arg}", file=sys.stderr, flush=True)
        sys.exit(int(arg))
    if kind == "kill":
        os.kill(os.getpid(), signal.Signals[arg])
    if kind == "bare":
        return BareQuery()
    return StubQuery(int(arg) if kind == "stopfail" else None)
