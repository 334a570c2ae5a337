"""When the coordinator's cycles run: a fixed delay for taking, a fixed rate for renewing."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


async def run_every(
    interval: float | Callable[[], float],
    step: Callable[[], Awaitable[object]],
    on_error: Callable[[Exception], bool],
    *,
    fixed_rate: bool = False,
) -> None:
    """Run ``step`` every ``interval`` until ``on_error`` returns False for an error.

    With a fixed delay (the take cycle) the first step runs at once and each next one
    ``interval`` after the previous ended; with ``fixed_rate`` (renewals) steps are due at
    fixed times from one ``interval`` after the start, so a slow step never pushes the
    next one back (one that overran its slot runs at once, and the schedule goes on from
    there). ``on_error`` sees every exception of a step: True keeps the loop going.
    A callable ``interval`` is asked again after every step (a fixed delay that the step
    may shorten, e.g. the take loop after an announcing take).
    """
    loop = asyncio.get_running_loop()

    def every() -> float:
        return interval() if callable(interval) else interval

    due = loop.time() + (every() if fixed_rate else 0.0)
    while True:
        if fixed_rate:
            await asyncio.sleep(max(0.0, due - loop.time()))
        try:
            await step()
        except Exception as e:
            if not on_error(e):
                return
        if fixed_rate:
            due = max(due + every(), loop.time())
        else:
            await asyncio.sleep(every())
