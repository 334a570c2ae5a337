"""PeriodicStep: errors are retried or reported, stop never cuts a step in half."""

from __future__ import annotations

import asyncio
import itertools

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


async def test_fixed_rate_does_not_push_the_next_step_back_by_the_step_time() -> None:
    """Steps of 0.9 s every 1 s: at a fixed rate the next starts ~0.1 s after one ends (a
    fixed delay would wait the whole 1 s); 0.6 s of margin for a loaded machine."""
    loop = asyncio.get_running_loop()
    spans: list[tuple[float, float]] = []

    async def step() -> None:
        start = loop.time()
        await asyncio.sleep(0.9)
        spans.append((start, loop.time()))

    def fail(error: BaseException) -> None:
        raise AssertionError(error)

    periodic = PeriodicStep("renew", 1.0, step, on_error=fail, is_transient=transient,
                            run_first_at_once=False, fixed_rate=True)  # fmt: skip
    periodic.start()
    while len(spans) < 4:
        await asyncio.sleep(0.05)
    await periodic.stop()
    idle = [nxt[0] - prev[1] for prev, nxt in itertools.pairwise(spans)]
    assert max(idle) < 0.7, f"idle gaps between steps {idle}: the rate is not fixed"
