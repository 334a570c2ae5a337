"""Run ``python -m streamkit.cli`` as a real child process for the fleet CLI tests, and read
its output line by line while it runs."""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

STUB_JOB = Path(__file__).with_name("fleet_stub_job.py")


class Proc:
    """``streamkit ARGS`` with stdout and stderr collected as lines (threads read them)."""

    def __init__(self, *args: str, env: dict[str, str] | None = None,
                 drop: tuple[str, ...] = ()) -> None:  # fmt: skip
        base = {k: v for k, v in os.environ.items() if k not in drop}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamkit.cli", *args], stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=base | {"COLUMNS": "200"} | (env or {}),
        )  # fmt: skip
        self.out: list[str] = []
        self.err: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        pairs = ((self.proc.stdout, self.out), (self.proc.stderr, self.err))
        self._threads = [threading.Thread(target=self._read, args=pair, daemon=True)
                         for pair in pairs]  # fmt: skip
        for t in self._threads:
            t.start()

    def _read(self, source: object, into: list[str]) -> None:
        assert hasattr(source, "readline")
        for line in iter(source.readline, ""):
            into.append(line.rstrip("\n"))
            self._lines.put(line)

    def wait_for(self, text: str, count: int = 1, timeout: float = 60) -> None:
        """Until ``count`` output lines contain ``text``."""
        deadline = time.monotonic() + timeout
        while sum(text in line for line in self.out + self.err) < count:
            left = deadline - time.monotonic()
            if left <= 0 or (self.proc.poll() is not None and self._lines.empty()):
                raise AssertionError(f"no {count}x {text!r} in:\n{self.text}")
            with contextlib.suppress(queue.Empty):
                self._lines.get(timeout=min(left, 0.5))

    def finish(self, timeout: float = 60) -> int:
        """The exit code (killed, and the test failed, if it takes longer)."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"still running after {timeout} s:\n{self.text}") from None
        for t in self._threads:
            t.join(10)
        return code

    @property
    def text(self) -> str:
        return "\n".join(["-- stdout", *self.out, "-- stderr", *self.err])
