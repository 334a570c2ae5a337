"""PeriodicStep: errors are retried or reported, stop never cuts a step in half."""

from __future__ import annotations

import asyncio
import itertools
import selectors

import pytest
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
    (task,) = [t for t in asyncio.all_tasks() if t.get_name() == "t"]
    # The loop must end by itself on the third (non-transient) error: no stop() is asked
    # for until then; the deadline only bounds a hung test.
    await asyncio.wait_for(asyncio.shield(task), 60)
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
    ran = asyncio.Event()

    async def step() -> None:
        calls.append(clock())
        ran.set()

    loop = PeriodicStep(
        "t", 60.0, step, on_error=lambda e: None, is_transient=transient, run_first_at_once=False
    )
    loop.start()
    await asyncio.sleep(0.02)
    assert calls == []
    loop.wake()
    await asyncio.wait_for(ran.wait(), 30)  # well inside the 60 s interval: the wake ran it
    assert len(calls) == 1
    await loop.stop()


class _JumpingSelector(selectors.DefaultSelector):
    """Never blocks: a wait for a timer moves :attr:`now` to it instead (a virtual clock)."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            return super().select(None)
        ready = super().select(0)
        if not ready:
            self.now += timeout
        return ready


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on a virtual clock: time passes only while the loop waits, so load
    on the machine can delay nothing (the clock is injected, not the wall clock)."""

    def __init__(self) -> None:
        self._virtual = _JumpingSelector()
        super().__init__(self._virtual)

    def time(self) -> float:
        return self._virtual.now


def test_fixed_rate_does_not_push_the_next_step_back_by_the_step_time() -> None:
    """Steps of 0.9 s every 1 s (virtual time): at a fixed rate each starts on its 1 s
    slot, 0.1 s after the previous one ended (a fixed delay would wait the whole 1 s)."""
    spans: list[tuple[float, float]] = []

    async def run() -> None:
        loop = asyncio.get_running_loop()

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

    loop = VirtualTimeLoop()
    try:
        loop.run_until_complete(run())
    finally:
        loop.close()
    assert [start for start, _ in spans] == pytest.approx([1.0, 2.0, 3.0, 4.0])
    idle = [nxt[0] - prev[1] for prev, nxt in itertools.pairwise(spans)]
    assert idle == pytest.approx([0.1, 0.1, 0.1]), f"idle gaps {idle}: the rate is not fixed"
