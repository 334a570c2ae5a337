"""A plain-Python reference for the final results: the windowed aggregation of
:mod:`tests.differential.queries` over a list of rows, written from the definitions
(Spark's window assignment, sessions merged when the next row is at or before the
session's end), independent of both engines. ``acd`` is left out (approximate)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from tests.differential.inputs import Row, micros
from tests.differential.queries import OutRow, Query


def windows_of(query: Query, t: int) -> list[tuple[int, int]]:
    """The ``[start, end)`` windows (seconds) a row at ``t`` belongs to, for time windows."""
    slide = query.slide or query.size
    first = t - t % slide
    starts = range(first, t - query.size, -slide)
    return [(s, s + query.size) for s in starts]


def sessions(gap: int, times: list[int]) -> list[tuple[int, int, list[int]]]:
    """Sessions over ``times`` (one key): ``(start, end, member indexes)``; a row joins the
    current session when it is at or before the session's end (``t <= last + gap``)."""
    out: list[tuple[int, int, list[int]]] = []
    for i in sorted(range(len(times)), key=lambda j: times[j]):
        t = times[i]
        if out and t <= out[-1][1]:
            start, end, members = out[-1]
            out[-1] = (start, max(end, t + gap), [*members, i])
        else:
            out.append((t, t + gap, [i]))
    return out


def groups(query: Query, rows: list[Row]) -> dict[tuple[Any, ...], list[Row]]:
    """Rows per ``(window start, window end, k)``; rows with a null event time belong to no
    window."""
    out: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    timed = [r for r in rows if r[0] is not None]
    if query.window != "session":
        for row in timed:
            for start, end in windows_of(query, row[0]):  # type: ignore[arg-type]
                out[(start, end, row[1])].append(row)
        return out
    by_key: dict[str | None, list[Row]] = defaultdict(list)
    for row in timed:
        by_key[row[1]].append(row)
    for key, members in by_key.items():
        times = [r[0] for r in members]
        for start, end, idx in sessions(query.size, times):  # type: ignore[arg-type]
            out[(start, end, key)] = [members[i] for i in idx]
    return out


def aggregate(rows: list[Row]) -> tuple[Any, ...]:
    """``(n, nv, s, mean, lo, hi, cd)`` of one group."""
    values = [r[2] for r in rows if r[2] is not None]
    users = {r[3] for r in rows if r[3] is not None}
    total = sum(values) if values else None
    mean = round(total / len(values), 9) if total is not None else None
    low, high = (min(values), max(values)) if values else (None, None)
    return (len(rows), len(values), total, mean, low, high, len(users))


def expected(query: Query, rows: list[Row]) -> list[OutRow]:
    """The final result table (without ``acd``), sorted like the engines' outputs."""
    from tests.differential.engines import order

    table = [
        (micros(start), micros(end), key, *aggregate(members))
        for (start, end, key), members in groups(query, rows).items()
    ]
    return sorted(table, key=order)
