"""``first_of_value`` (no server): a worker stopped while it waits for its first source
shard set (a graceful stop right after it started) returns None and exits cleanly; a
result or an error that comes first is the caller's."""

from __future__ import annotations

import asyncio

import pytest
from streamkit_kinesis.fleet.worker import first_of_value


async def test_a_stop_while_the_work_waits_returns_none_and_cancels_it() -> None:
    stop, never = asyncio.Event(), asyncio.Event()
    work = asyncio.ensure_future(never.wait())
    stop.set()
    assert await first_of_value(stop, work) is None
    await asyncio.sleep(0)  # the cancellation takes effect at the work's next step
    assert work.cancelled()


async def test_the_works_result_or_error_comes_back_when_it_is_first() -> None:
    async def answer() -> int:
        return 7

    async def fail() -> int:
        raise ValueError("boom")

    assert await first_of_value(asyncio.Event(), answer()) == 7
    with pytest.raises(ValueError, match="boom"):
        await first_of_value(asyncio.Event(), fail())
