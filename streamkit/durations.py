"""Duration parsing: ``"10 seconds"``, ``"0.5 seconds"``, ``"1 hour"``, or a ``timedelta``."""

from __future__ import annotations

import re
from datetime import timedelta
from fractions import Fraction

from streamkit.errors import DurationError

_NS_PER_UNIT: dict[str, int] = {
    "nanosecond": 1,
    "microsecond": 1_000,
    "millisecond": 1_000_000,
    "second": 1_000_000_000,
    "minute": 60 * 1_000_000_000,
    "hour": 3600 * 1_000_000_000,
    "day": 86400 * 1_000_000_000,
    "week": 7 * 86400 * 1_000_000_000,
}
_ALIASES: dict[str, str] = {
    "ns": "nanosecond",
    "us": "microsecond",
    "ms": "millisecond",
    "s": "second",
    "sec": "second",
    "secs": "second",
    "m": "minute",
    "min": "minute",
    "mins": "minute",
    "h": "hour",
    "d": "day",
    "w": "week",
}
_PART = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]+)\s*")

ACCEPTED_FORMS = (
    "a number and a unit, e.g. '10 seconds', '0.5 seconds', '1 hour', '15 minutes', "
    "'500 ms', '1 day 2 hours'; units: nanosecond(s)/ns, microsecond(s)/us, millisecond(s)/ms, "
    "second(s)/s/sec, minute(s)/m/min, hour(s)/h, day(s)/d, week(s)/w; or a datetime.timedelta"
)

TIME_UNIT_NS: dict[str, int] = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
"""Nanoseconds per tick of each Arrow / Polars timestamp unit."""


def _unit(word: str) -> int | None:
    name = _ALIASES.get(word, word)
    if name not in _NS_PER_UNIT and name.endswith("s"):
        name = name[:-1]
    return _NS_PER_UNIT.get(name)


def parse_duration_ns(value: str | timedelta) -> int:
    """The duration in integer nanoseconds; raises :class:`DurationError` listing accepted forms.

    Durations must be positive. Numbers may be fractional (``"0.5 seconds"``,
    ``"1.5 hours"``), computed exactly; the total must be a whole number of nanoseconds.
    """
    if isinstance(value, timedelta):
        ns = (value.days * 86400 + value.seconds) * 1_000_000_000 + value.microseconds * 1_000
    elif isinstance(value, str):
        ns = _parse_text(value)
    else:
        raise DurationError(
            f"duration must be a string or timedelta, got {type(value).__name__}; "
            f"use {ACCEPTED_FORMS}"
        )
    if ns <= 0:
        raise DurationError(f"duration {value!r} must be positive")
    return ns


def _parse_text(value: str) -> int:
    text = value.strip().lower()
    if not text:
        raise DurationError(f"empty duration; use {ACCEPTED_FORMS}")
    pos, total = 0, Fraction(0)
    while pos < len(text):
        m = _PART.match(text, pos)
        per = _unit(m.group(2)) if m else None
        if m is None or per is None:
            raise DurationError(f"cannot parse duration {value!r}; use {ACCEPTED_FORMS}")
        total += Fraction(m.group(1)) * per
        pos = m.end()
    if total.denominator != 1:
        raise DurationError(
            f"duration {value!r} is not a whole number of nanoseconds; use fewer decimals"
        )
    return int(total)


def to_ticks(ns: int, unit: str, what: str) -> int:
    """``ns`` expressed in ticks of a timestamp ``unit``; raises if it is not a whole number."""
    per = TIME_UNIT_NS[unit]
    if ns % per:
        raise DurationError(
            f"{what} of {ns} ns is not a whole number of the column's unit ({unit}); "
            f"use a coarser duration or cast the column to a finer unit"
        )
    return ns // per


def format_duration(ns: int) -> str:
    """A short human form, e.g. ``1 hour``, ``15 minutes``, ``1500 milliseconds``."""
    for name in ("week", "day", "hour", "minute", "second", "millisecond", "microsecond"):
        per = _NS_PER_UNIT[name]
        if ns % per == 0:
            n = ns // per
            return f"{n} {name}{'s' if n != 1 else ''}"
    return f"{ns} nanoseconds"
