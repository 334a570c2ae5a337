"""Ctrl-C / SIGTERM as a stop request (:mod:`streamkit.cli.stop_signals`), with real
signals raised in this process's main thread, and the entry point's claim of an inherited
ignored SIGINT."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import pytest

from streamkit.cli import claim_sigint
from streamkit.cli.stop_signals import StopRequest, stop_on_signals


@pytest.fixture(autouse=True)
def _keep_handlers() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def test_the_first_signal_requests_a_stop_and_a_second_sigint_forces_one() -> None:
    before = signal.getsignal(signal.SIGINT)
    with stop_on_signals() as stop:
        assert not stop.is_set()
        signal.raise_signal(signal.SIGINT)  # no exception: recorded only
        assert stop.is_set()
        assert (stop.exit_code, stop.word) == (130, "interrupted")
        signal.raise_signal(signal.SIGTERM)  # changes nothing
        assert (stop.exit_code, stop.word) == (130, "interrupted")
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


def test_sigterm_first_means_exit_143() -> None:
    with stop_on_signals() as stop:
        signal.raise_signal(signal.SIGTERM)
        assert (stop.is_set(), stop.exit_code, stop.word) == (True, 143, "terminated")


def test_an_inherited_ignored_sigint_still_requests_the_stop_and_is_restored() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with stop_on_signals() as stop:
        signal.raise_signal(signal.SIGINT)
        assert stop.is_set()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_claim_sigint_takes_back_only_an_ignored_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    claim_sigint()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    def own(signum: int, frame: Any) -> None:
        pass

    signal.signal(signal.SIGINT, own)
    claim_sigint()
    assert signal.getsignal(signal.SIGINT) is own


def test_wait_returns_at_the_deadline_or_as_soon_as_a_stop_is_requested() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    stop = StopRequest()
    assert stop.wait(1.0, clock=lambda: now[0], sleep=sleep) is False
    assert now[0] == pytest.approx(1.0)

    def sleep_then_signal(seconds: float) -> None:
        now[0] += seconds
        if now[0] >= 1.3:
            stop.handle(signal.SIGINT, None)

    assert stop.wait(10.0, clock=lambda: now[0], sleep=sleep_then_signal) is True
    assert now[0] == pytest.approx(1.3)
