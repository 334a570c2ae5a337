"""A crash-test job run as a subprocess, its stdout lines collected as they come."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Self


@dataclass
class JobProcess:
    """One run of :attr:`SCRIPT` (set by subclasses) as a subprocess, with its stdout
    lines; stderr is appended to a log file."""

    SCRIPT: ClassVar[Path]
    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, args: list[str], log: Path) -> Self:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(cls.SCRIPT), *args,
            stdout=asyncio.subprocess.PIPE, stderr=log.open("ab"),
        )  # fmt: skip
        job = cls(proc)
        job.reader = asyncio.create_task(job._read())
        return job

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode().strip())

    async def kill(self, timeout: float = 30.0) -> None:
        """SIGKILL (by this process's own pid) and reap it."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        await self.finish(timeout)

    async def finish(self, timeout: float) -> int:
        """Wait for the exit and the last stdout line; the exit code."""
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        if self.reader is not None:
            await self.reader
        return code
