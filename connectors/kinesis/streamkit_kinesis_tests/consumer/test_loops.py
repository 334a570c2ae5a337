"""PeriodicStep: errors are retried or reported, stop never cuts a step in half."""

from __future__ import annotations

import asyncio

from streamkit_kinesis.consumer.loops import PeriodicStep
from streamkit_kinesis.leases import LeaseStoreUnavailableError


def transient(error: BaseException) -> bool:
    return isinstance(error, LeaseStoreUnavailableError)


async def test_transient_errors_are_retried_other_errors_reported_once() -> None:
    calls: list[int] = []
    reported: list[BaseException] = []

    async def step() -> None:
        calls.append(len(calls))
        if len(calls) <= 2:
            raise LeaseStoreUnavailableError("throttled")
        raise ValueError("broken")

    loop = PeriodicStep("t", 0.001, step, on_error=reported.append, is_transient=transient)
    loop.start()
    await asyncio.sleep(0.1)
    await loop.stop()
    assert len(calls) == 3  # two transient failures retried, then stopped on the third
    assert loop.transient_errors == 2
    assert [type(e) for e in reported] == [ValueError]


async def test_stop_waits_for_the_step_in_progress() -> None:
    finished: list[bool] = []
    started = asyncio.Event()

    async def step() -> None:
        started.set()
        await asyncio.sleep(0.05)
        finished.append(True)

    loop = PeriodicStep("t", 10.0, step, on_error=lambda e: None, is_transient=transient)
    loop.start()
    await started.wait()
    await loop.stop()
    assert finished == [True]


async def test_wake_runs_the_next_step_at_once_and_first_step_can_wait() -> None:
    calls: list[float] = []
    clock = asyncio.get_running_loop().time

    async def step() -> None:
        calls.append(clock())

    loop = PeriodicStep(
        "t", 60.0, step, on_error=lambda e: None, is_transient=transient, run_first_at_once=False
    )
    loop.start()
    await asyncio.sleep(0.02)
    assert calls == []
    loop.wake()
    await asyncio.sleep(0.02)
    assert len(calls) == 1
    await loop.stop()
