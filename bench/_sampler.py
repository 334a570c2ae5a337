"""A tiny in-process CPU sampler (no profiler is installed in the project's virtualenv).

Every ``interval`` seconds it looks at each thread of this process: a thread whose CPU
ticks (``/proc/self/task/<tid>/stat``) moved since the last look is charged one sample at
its current Python stack, keyed by the innermost frame in project code and by the leaf.
At exit it writes the top entries to ``path``. Coarse (10 ms ticks) but enough to say
where a few seconds of CPU go.
"""

from __future__ import annotations

import atexit
import collections
import sys
import threading
import time
from pathlib import Path
from types import FrameType

OURS = ("/streamkit/", "/connectors/")


def _ticks(tid: int) -> int:
    try:
        text = Path(f"/proc/self/task/{tid}/stat").read_text()
    except OSError:
        return 0
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def _where(frame: FrameType | None) -> tuple[str, str]:
    leaf = ours = ""
    while frame is not None:
        code = frame.f_code
        name = f"{Path(code.co_filename).name}:{code.co_name}"
        leaf = leaf or name
        if not ours and any(p in code.co_filename for p in OURS):
            ours = name
        frame = frame.f_back
    return ours or "(other)", leaf


def start(path: Path, interval: float = 0.005) -> None:
    """Sample until the process exits; then write the report to ``path``."""
    by_ours: collections.Counter[str] = collections.Counter()
    by_leaf: collections.Counter[str] = collections.Counter()
    last: dict[int, int] = {}

    def loop() -> None:
        me = threading.get_ident()
        while True:
            time.sleep(interval)
            natives = {t.ident: t.native_id for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                tid = natives.get(ident)
                if ident == me or tid is None:
                    continue
                ticks = _ticks(tid)
                if ticks > last.get(tid, ticks):
                    ours, leaf = _where(frame)
                    by_ours[ours] += 1
                    by_leaf[leaf] += 1
                last[tid] = ticks

    def report() -> None:
        total = max(1, sum(by_ours.values()))
        lines = [f"{total} busy samples"]
        for title, counter in (("innermost project frame", by_ours), ("leaf", by_leaf)):
            lines.append(f"-- by {title}")
            lines += [f"{n / total:6.1%} {k}" for k, n in counter.most_common(25)]
        path.write_text("\n".join(lines) + "\n")

    threading.Thread(target=loop, daemon=True, name="sampler").start()
    atexit.register(report)


def stacks_on_sigusr1(path: Path) -> None:
    """On SIGUSR1, append every thread's stack and every pending asyncio task's to ``path``."""
    import asyncio
    import gc
    import signal
    import traceback

    def dump(signum: int, frame: FrameType | None) -> None:
        with path.open("a") as out:
            out.write(f"##### {time.strftime('%H:%M:%S')}\n")
            for ident, top in sys._current_frames().items():
                out.write(f"--- thread {ident}\n")
                traceback.print_stack(top, file=out)
            for task in [o for o in gc.get_objects() if isinstance(o, asyncio.Task)]:
                if not task.done():
                    out.write(f"=== {task.get_name()} {task.get_coro()!r}\n")
                    task.print_stack(file=out)

    signal.signal(signal.SIGUSR1, dump)
