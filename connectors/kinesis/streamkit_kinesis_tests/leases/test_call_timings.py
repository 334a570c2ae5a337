"""CallTimings: the KCL's per-call Time / Success, on an injected clock (no server)."""

from __future__ import annotations

import pytest
from streamkit_kinesis.leases.metrics import CallTimings
from streamkit_kinesis.testing.leases import FakeClock


def test_nothing_is_kept_until_enabled() -> None:
    timings = CallTimings(FakeClock())
    with timings.timed("TakeLeases", "TakeLease", "w1"):
        pass
    timings.record("ProcessTask", "UpdateLease", "s1", 3.0, True)
    assert timings.drain() == []


def test_durations_outcomes_and_drain() -> None:
    clock = FakeClock()
    timings = CallTimings(clock)
    timings.enabled = True
    with timings.timed("TakeLeases", "TakeLease", "w1"):
        clock.advance(0.0124)  # 12.4 ms -> 12

    def lose() -> None:
        with timings.timed("TakeLeases", "TakeLease", "w1"):
            clock.advance(0.0126)  # 12.6 ms -> 13
            raise ValueError("lost the race")

    with pytest.raises(ValueError, match="lost"):
        lose()
    with timings.timed("TakeLeases", "TakeLease", "w1") as call:
        clock.advance(0.012)
        call.failed()
    with timings.timed("RenewAllLeases", "", "w1"):
        clock.advance(0.5)
    stats = {(s.operation, s.name, s.key): s for s in timings.drain()}
    take = stats["TakeLeases", "TakeLease", "w1"]
    assert dict(take.millis) == {12: 2, 13: 1}
    assert take.calls == 3
    assert take.successes == 1
    renew = stats["RenewAllLeases", "", "w1"]
    assert (dict(renew.millis), renew.calls, renew.successes) == ({500: 1}, 1, 1)
    assert timings.drain() == []  # forgotten once drained
