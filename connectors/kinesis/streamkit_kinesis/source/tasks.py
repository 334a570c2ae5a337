"""An asyncio helper of the stream source."""

from __future__ import annotations

import asyncio
from typing import Any


async def first_of(*aws: Any) -> None:
    """Wait for the first of ``aws`` to finish; re-raise its error; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
