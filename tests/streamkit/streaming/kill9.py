"""What the kill -9 tests of stateful queries share: a sink that announces each batch it
acknowledged, and a runner that SIGKILLs the job script after a given batch.

The job is a test file run as a script; it prints ``acked N`` after batch N reached its
sink (the Parquet sink, exactly-once by batch id) and ``done`` at the end.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

import pyarrow as pa

from streamkit.streaming.contracts import Guarantee
from streamkit.streaming.sinks import ParquetSink

ROOT = Path(__file__).resolve().parents[3]
"""The repository root (where the ``tests`` package lives)."""


class Announcing:
    """The Parquet sink, printing ``acked N`` after each batch (the test's cue to kill)."""

    guarantee: ClassVar[Guarantee] = Guarantee.EXACTLY_ONCE

    def __init__(self, sink: ParquetSink) -> None:
        self.sink = sink

    async def add_batch(self, batch_id: int, table: pa.Table) -> None:
        await self.sink.add_batch(batch_id, table)
        print(f"acked {batch_id}", flush=True)
        time.sleep(0.05)  # leave the killer a window inside the batch's commit

    async def close(self) -> None:
        await self.sink.close()


def run_job(
    script: Path, args: list[str], log: Path, kill_after: int | None, pause: float
) -> int | None:
    """Run ``script`` with ``args``; with ``kill_after``, SIGKILL it ``pause`` s after it
    acked a batch with id at least ``kill_after`` (and expect that death), else expect a
    clean exit. Returns the last batch id acked."""
    cmd = [sys.executable, str(script), *args]
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}  # the script imports this module
    with log.open("ab") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    watchdog = threading.Timer(300, proc.kill)
    watchdog.start()
    last: int | None = None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("acked "):
                last = int(line.split()[1])
                if kill_after is not None and last >= kill_after:
                    time.sleep(pause)
                    os.kill(proc.pid, signal.SIGKILL)
                    break
        code = proc.wait(timeout=120)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    want = -signal.SIGKILL if kill_after is not None else 0
    assert code == want, f"exit {code}; stderr in {log}: {log.read_text()[-2000:]}"
    return last


def kill_then_finish(script: Path, args: list[str], log: Path, seed: int, kills: int = 4) -> None:
    """SIGKILL the job ``kills`` times, each after at least one more acked batch than the
    last, at a random point (``seed``) within the following few batches, then run it to a
    clean end."""
    rng, done = random.Random(seed), -1
    for _ in range(kills):
        point = done + 1 + rng.randint(0, 4)
        last = run_job(script, args, log, kill_after=point, pause=rng.random() / 5)
        assert last is not None, f"the job acked no batch before it was killed; see {log}"
        done = last
    run_job(script, args, log, kill_after=None, pause=0)
