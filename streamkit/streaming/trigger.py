"""When micro-batches run: every interval, once, or until the input available now is read."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from streamkit.durations import parse_duration_ns
from streamkit.errors import PlanError


@dataclass(frozen=True)
class Trigger:
    """A trigger policy. Build with the class methods."""

    kind: Literal["processing_time", "once", "available_now"]
    interval: float = 0.0
    """Seconds between batch starts (processing_time only)."""

    @classmethod
    def processing_time(cls, interval: str | timedelta | float) -> Trigger:
        """A batch every ``interval`` (e.g. ``"1 second"``) while there is new data."""
        seconds = (
            interval if isinstance(interval, int | float) else parse_duration_ns(interval) / 1e9
        )
        if seconds < 0:
            raise PlanError(f"trigger interval must be >= 0, got {interval!r}")
        return cls("processing_time", float(seconds))

    @classmethod
    def once(cls) -> Trigger:
        """One batch with whatever is available now, then stop."""
        return cls("once")

    @classmethod
    def available_now(cls) -> Trigger:
        """Batches until every partition is read to where it ended at start; then stop."""
        return cls("available_now")

    @property
    def stops_by_itself(self) -> bool:
        """True for ``once`` and ``available_now``."""
        return self.kind != "processing_time"


def make_trigger(
    processing_time: str | timedelta | float | None = None,
    *,
    once: bool = False,
    available_now: bool = False,
) -> Trigger:
    """The trigger chosen by exactly one keyword (PySpark's ``trigger(...)`` options)."""
    chosen = [processing_time is not None, once, available_now]
    if sum(chosen) != 1:
        raise PlanError(
            "choose exactly one trigger: processing_time='1 second', once=True or "
            "available_now=True"
        )
    if processing_time is not None:
        return Trigger.processing_time(processing_time)
    return Trigger.once() if once else Trigger.available_now()
