"""The Python functions and ``StatefulProcessor`` classes the differential tests hand to
PySpark's pandas operators (``applyInPandasWithState``, ``applyInPandas``,
``transformWithStateInPandas``) and to streamkit's.

PySpark pickles a function or class of an importable module by reference, so every Spark
Python worker imports the module that defines it. Defined here, a worker imports this
module (pandas only) instead of a test module with its test helpers, Hypothesis,
streamkit and polars (0.4 s of CPU more per worker; test_transform_chains.py starts 27
workers). Keep this module's imports light: pandas and the standard library only. The
test modules import these names from here and use them unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from collections.abc import Iterator

GAP_MS = 10_000
"""Session gap (``sessions``), timer delay (``Stamp``, ``Counter``)."""
JOIN_STATE = "n bigint, s bigint"
"""``tally``'s state, ``JoinTally``'s value state."""
JOIN_TIMEOUT_MS = 5_000
"""``tally_timed``'s timeout and ``JoinTally``'s timer: the latest ``lt`` + 5 s."""
NEVER_MS = 4_102_444_800_000  # 2100-01-01
NULL_KEY = "<null>"
"""Emitted for the null key: PySpark 4.3 (pandas 3) fails converting an output string
column holding only a null (``Cannot convert pyarrow.lib.ChunkedArray``), which a left
outer join's null keys hit too."""


# --- applyInPandasWithState (test_stateful, test_transform_chains) ----------------------


def epoch_ms(column: pd.Series) -> pd.Series:
    """Event times as epoch ms, whatever unit or time zone the engine hands over."""
    ts = pd.to_datetime(column, utc=True)
    return (ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)


def sessions(key: tuple[Any, ...], pdfs: Iterator[pd.DataFrame], state: Any) -> Iterator[Any]:
    """Session per key: emit the running session each call, the closed one on timeout."""
    if state.hasTimedOut:
        n, first, last = state.get
        state.remove()
        yield pd.DataFrame({"k": [key[0]], "n": [n], "first": [first], "last": [last],
                            "closed": [True]})  # fmt: skip
        return
    n, first, last = state.get if state.exists else (0, None, None)
    for pdf in pdfs:
        n += len(pdf)
        ms = epoch_ms(pdf["ts"]).dropna()
        if len(ms):
            lo, hi = int(ms.min()), int(ms.max())
            first = lo if first is None else min(first, lo)
            last = hi if last is None else max(last, hi)
    state.update((n, first, last))
    if last is not None:
        state.setTimeoutTimestamp(max(last + GAP_MS, state.getCurrentWatermarkMs()))
    yield pd.DataFrame({"k": [key[0]], "n": [n], "first": [first], "last": [last],
                        "closed": [False]})  # fmt: skip


def closed_sessions(key: tuple[Any, ...], pdfs: Iterator[pd.DataFrame], state: Any) -> Any:
    """``sessions`` in append mode: only the closed sessions."""
    return (f for f in sessions(key, pdfs, state) if bool(f["closed"].iloc[0]))


def capped(key: tuple[Any, ...], pdfs: Iterator[pd.DataFrame], state: Any) -> Iterator[Any]:
    """Running count; at 3 or more, emit it and remove the state (NoTimeout)."""
    n = (state.get[0] if state.exists else 0) + sum(len(p) for p in pdfs)
    if n >= 3:
        state.remove()
        yield pd.DataFrame({"k": [key[0]], "n": [n]})
    else:
        state.update((n,))


def summary(key: tuple[Any, ...], pdfs: Iterator[pd.DataFrame], state: Any) -> Iterator[Any]:
    """Rows, first and last event time of the key; ``existed`` says whether a state was
    there before (never, in a batch job)."""
    existed = state.exists
    pdf = pd.concat(list(pdfs))
    times = epoch_ms(pdf["ts"]).dropna()
    first = int(times.min()) if len(times) else None
    last = int(times.max()) if len(times) else None
    state.update((len(pdf), first, last))
    yield pd.DataFrame({"k": [key[0]], "n": [len(pdf)], "first": [first], "last": [last],
                        "closed": [existed]})  # fmt: skip


def _apply_tally(key: Any, pdfs: Iterator[pd.DataFrame], state: Any, timed: bool) -> Any:
    """Rows seen and the sum of ``v`` per key, one row per call with the watermark the
    function sees; ``timed``: a timeout at the key's latest event time (``at``, else
    ``ts``) + 5 s emits the totals and forgets the key."""
    k = key[0] if isinstance(key[0], str) else NULL_KEY
    wm = state.getCurrentWatermarkMs()
    if state.hasTimedOut:
        n, s = state.get
        state.remove()
        yield pd.DataFrame({"k": [k], "kind": ["timeout"], "n": [n], "s": [s], "wm": [wm]})
        return
    n, s = state.get if state.exists else (0, 0)
    latest = None
    for pdf in pdfs:
        n += len(pdf)
        s += int(pdf["v"].fillna(0).sum())
        times = epoch_ms(pdf["at" if "at" in pdf.columns else "ts"]).dropna()
        if len(times):
            latest = max(int(times.max()), latest or 0)
    state.update((n, s))
    if timed and latest is not None:
        state.setTimeoutTimestamp(max(latest + 5_000, wm + 1))
    yield pd.DataFrame({"k": [k], "kind": ["data"], "n": [n], "s": [s], "wm": [wm]})


def apply_tally(key: Any, pdfs: Iterator[pd.DataFrame], state: Any) -> Any:
    """``NoTimeout``."""
    return _apply_tally(key, pdfs, state, timed=False)


def apply_tally_timed(key: Any, pdfs: Iterator[pd.DataFrame], state: Any) -> Any:
    """``EventTimeTimeout``."""
    return _apply_tally(key, pdfs, state, timed=True)


# --- transformWithStateInPandas (test_transform_chains, test_transform_state) -----------


class Stamp:
    """Each row as (k, at=ts, v); per key an event-time timer at its latest time + 10 s
    that emits (k, at=timer, rows seen) and forgets the key (``timers=False``: none)."""

    timers = True

    def init(self, handle: Any) -> None:
        self.handle = handle
        self.rows = handle.getValueState("rows", "n bigint")

    def handleInputRows(self, key: Any, rows: Iterator[pd.DataFrame], timerValues: Any) -> Any:
        n = self.rows.get()[0] if self.rows.exists() else 0
        for pdf in rows:
            n += len(pdf)
            times = epoch_ms(pdf["ts"])
            yield pd.DataFrame({
                "k": pdf["k"].astype(object), "at": pd.to_datetime(pdf["ts"], utc=True),
                "v": pdf["v"],
            })  # fmt: skip
            if self.timers and times.notna().any():
                for at in list(self.handle.listTimers()):
                    self.handle.deleteTimer(at)
                self.handle.registerTimer(int(times.max()) + GAP_MS)
        self.rows.update((n,))

    def handleExpiredTimer(self, key: Any, timerValues: Any, expiredTimerInfo: Any) -> Any:
        at = expiredTimerInfo.getExpiryTimeInMs()
        # PySpark 4.3 hands a null grouping key to handleExpiredTimer as Row(k='NaN')
        k = key[0] if isinstance(key[0], str) and key[0] != "NaN" else None
        yield pd.DataFrame({
            "k": [k], "at": [pd.Timestamp(at, unit="ms", tz="UTC")],
            "v": [self.rows.get()[0] if self.rows.exists() else None],
        }).astype({"k": object})  # fmt: skip
        self.rows.clear()

    def close(self) -> None:
        pass


class Echo(Stamp):
    timers = False


class Behind(Stamp):
    """Emits each row an hour before its event time: behind the watermark."""

    timers = False

    def handleInputRows(self, key: Any, rows: Iterator[pd.DataFrame], timerValues: Any) -> Any:
        for pdf in rows:
            at = pd.to_datetime(pdf["ts"], utc=True) - pd.Timedelta(hours=1)
            yield pd.DataFrame({"k": pdf["k"].astype(object), "at": at, "v": pdf["v"]})


class Tally:
    """Above another operator: per key, rows seen so far (emitted each batch with the
    watermark handed over) and, under ``EventTime``, a timer at the key's latest ``at`` +
    5 s that emits the total and forgets the key."""

    def init(self, handle: Any) -> None:
        self.handle = handle
        self.rows = handle.getValueState("rows", "n bigint")

    def handleInputRows(self, key: Any, rows: Iterator[pd.DataFrame], timerValues: Any) -> Any:
        n = self.rows.get()[0] if self.rows.exists() else 0
        latest = None
        for pdf in rows:
            n += len(pdf)
            times = epoch_ms(pdf["at"]).dropna()
            if len(times):
                latest = max(int(times.max()), latest or 0)
        self.rows.update((n,))
        wm = timerValues.getCurrentWatermarkInMs()
        if latest is not None and wm >= 0:
            for at in list(self.handle.listTimers()):
                self.handle.deleteTimer(at)
            self.handle.registerTimer(latest + 5_000)
        yield pd.DataFrame({"k": [key[0]], "kind": ["data"], "n": [n], "wm": [wm]}).astype(
            {"k": object}
        )

    def handleExpiredTimer(self, key: Any, timerValues: Any, expiredTimerInfo: Any) -> Any:
        k = key[0] if isinstance(key[0], str) and key[0] != "NaN" else None
        n = self.rows.get()[0] if self.rows.exists() else None
        wm = timerValues.getCurrentWatermarkInMs()
        yield pd.DataFrame({"k": [k], "kind": ["fire"], "n": [n], "wm": [wm]}).astype({"k": object})
        self.rows.clear()

    def close(self) -> None:
        pass


class Counter:
    """Rows per key with an event-time timer that emits and clears (module docstring)."""

    def init(self, handle: Any) -> None:
        self.handle = handle
        self.count = handle.getValueState("count", "n bigint")
        self.times = handle.getListState("times", "t bigint")
        self.users = handle.getMapState("users", "u bigint", "c bigint")

    def handleInputRows(self, key: Any, rows: Iterator[pd.DataFrame], timerValues: Any) -> Any:
        n = self.count.get()[0] if self.count.exists() else 0
        for pdf in rows:
            n += len(pdf)
            ms = sorted(int(t) for t in epoch_ms(pdf["ts"]).dropna())
            if ms:
                self.times.appendList([(t,) for t in ms])
            for u in pdf["u"].dropna().astype("int64"):
                old = self.users.getValue((int(u),))
                self.users.updateValue((int(u),), ((old[0] if old else 0) + 1,))
        self.count.update((n,))
        times = [t for (t,) in self.times.get()]
        if times:
            for at in list(self.handle.listTimers()):
                self.handle.deleteTimer(at)
            self.handle.registerTimer(max(times) + GAP_MS)
        yield self._row(key, "data", None, timerValues)

    def handleExpiredTimer(self, key: Any, timerValues: Any, expiredTimerInfo: Any) -> Any:
        yield self._row(key, "fire", expiredTimerInfo.getExpiryTimeInMs(), timerValues)
        self.count.clear()
        self.times.clear()
        self.users.clear()

    def _row(self, key: Any, kind: str, at: int | None, values: Any) -> pd.DataFrame:
        n = self.count.get()[0] if self.count.exists() else None
        times = [t for (t,) in self.times.get()]
        counts = [c for (c,) in self.users.values()]
        # PySpark 4.3 hands a null grouping key to handleInputRows as (nan,) and to
        # handleExpiredTimer as Row(k='NaN'); streamkit hands (None,) to both
        k = key[0] if isinstance(key[0], str) and key[0] != "NaN" else None
        return pd.DataFrame({
            "k": [k], "kind": [kind], "n": [n], "times": [len(times)],
            "tmax": [max(times) if times else None], "users": [len(counts)],
            "ucount": [sum(counts)], "at": [at], "wm": [values.getCurrentWatermarkInMs()],
        }).astype({"k": object, "kind": object})  # fmt: skip

    def close(self) -> None:
        pass


# Strings leave as object columns: PySpark 4.3 cannot convert several pandas 3 "str"
# (Arrow-backed) frames of one batch (it meets a ChunkedArray).


class Ledger:
    """Per key, a list of (rows, sum of v) per batch (the last 3 kept through ``put``) and
    a map user -> rows (the smallest user dropped past 4); emits the totals each batch."""

    def init(self, handle: Any) -> None:
        self.batches = handle.getListState("batches", "rows bigint, total bigint")
        self.users = handle.getMapState("users", "u bigint", "c bigint")

    def handleInputRows(self, key: Any, rows: Iterator[pd.DataFrame], timerValues: Any) -> Any:
        assert timerValues.getCurrentWatermarkInMs() == -1
        pdf = pd.concat(list(rows))
        self.batches.appendValue((len(pdf), int(pdf["v"].fillna(0).sum())))
        kept = list(self.batches.get())
        if len(kept) > 3:
            self.batches.put(kept[-3:])
        for u in pdf["u"].dropna().astype("int64"):
            old = self.users.getValue((int(u),))
            self.users.updateValue((int(u),), ((old[0] if old else 0) + 1,))
        users = sorted(k for (k,) in list(self.users.keys()))
        if len(users) > 4:
            self.users.removeKey((users[0],))
        kept = list(self.batches.get())
        yield pd.DataFrame({
            "k": [key[0]], "batches": [len(kept)], "rows": [sum(r for r, _ in kept)],
            "total": [sum(t for _, t in kept)], "users": [len(list(self.users.iterator()))],
            "has0": [self.users.containsKey((0,))],
        }).astype({"k": object})  # fmt: skip

    def close(self) -> None:
        pass


def _key(key: Any) -> Any:
    """PySpark 4.3 hands a null string key as (nan,) (see ``Counter._row``)."""
    return key[0] if isinstance(key[0], str) and key[0] != "NaN" else None


class Seeded:
    """Per key a count seeded with the sum of the initial ``n``, the initial frame's
    columns, its notes (a list) and its row count (a map entry); each batch adds the
    key's rows to the count and emits all of it."""

    def init(self, handle: Any) -> None:
        self.count = handle.getValueState("count", "n bigint")
        self.cols = handle.getValueState("cols", "c string")
        self.notes = handle.getListState("notes", "note string")
        self.seeds = handle.getMapState("seeds", "s bigint", "c bigint")

    def handleInitialState(self, key: Any, initialState: pd.DataFrame, timerValues: Any) -> None:
        self.count.update((int(initialState["n"].sum()),))
        self.cols.update((",".join(str(c) for c in initialState.columns),))
        self.notes.appendList([(str(n),) for n in sorted(initialState["note"])])
        self.seeds.updateValue((0,), (len(initialState),))

    def handleInputRows(self, key: Any, rows: Iterator[pd.DataFrame], timerValues: Any) -> Any:
        n = (self.count.get() or (0,))[0] + sum(len(p) for p in rows)
        self.count.update((n,))
        yield pd.DataFrame({
            "k": [_key(key)], "n": [n], "cols": [(self.cols.get() or (None,))[0]],
            "notes": [",".join(s for (s,) in self.notes.get())],
            "seeds": [(self.seeds.getValue((0,)) or (None,))[0]],
        }).astype({"k": object, "cols": object, "notes": object})  # fmt: skip

    def close(self) -> None:
        pass


class Fading:
    """Per key, all with the TTL: ``last`` (the batch's largest v), ``vals`` (one element
    appended per row) and ``users`` (rows per u, one entry each). Emits what the key held
    before the batch's updates (get, exists, iteration) and the list's length after."""

    def __init__(self, ttl: int) -> None:
        self.ttl = ttl

    def init(self, handle: Any) -> None:
        self.last = handle.getValueState("last", "v bigint", ttlDurationMs=self.ttl)
        self.vals = handle.getListState("vals", "v bigint", self.ttl)
        self.users = handle.getMapState("users", "u bigint", "c bigint", ttlDurationMs=self.ttl)

    def handleInputRows(self, key: Any, rows: Iterator[pd.DataFrame], timerValues: Any) -> Any:
        pdf = pd.concat(list(rows))
        vals = [v for (v,) in self.vals.get()]
        users = ",".join(f"{u}:{c}" for (u,), (c,) in sorted(self.users.iterator()))
        alive = "".join("01"[s.exists()] for s in (self.last, self.vals, self.users))
        last = (self.last.get() or (None,))[0]
        self.last.update((int(pdf["v"].fillna(0).max()),))
        for v in pdf["v"].fillna(0):
            self.vals.appendValue((int(v),))
        for u in pdf["u"].dropna().astype("int64"):
            old = self.users.getValue((int(u),))
            self.users.updateValue((int(u),), ((old[0] if old else 0) + 1,))
        yield pd.DataFrame({
            "k": [_key(key)], "last": [last], "vals": [len(vals)], "vsum": [sum(vals)],
            "users": [users], "alive": [alive], "after": [len(list(self.vals.get()))],
        }).astype({"k": object, "users": object, "alive": object})  # fmt: skip

    def close(self) -> None:
        pass


# --- after a stream-stream join (test_joins_stream_function) -----------------------------


def _join_count(pdfs: Iterator[pd.DataFrame], n: int, s: int) -> tuple[int, int, int | None]:
    """Rows, sum of ``rv`` (nulls as 0) and the latest ``lt`` (or ``t``, its rename above
    the join) in ms after ``pdfs``."""
    latest = None
    for pdf in pdfs:
        n += len(pdf)
        s += int(pdf["rv"].fillna(0).sum())
        times = epoch_ms(pdf["lt" if "lt" in pdf.columns else "t"]).dropna()
        if len(times):
            latest = max(int(times.max()), latest or 0)
    return n, s, latest


def _join_key(key: Any) -> str:
    """The grouping key as emitted (PySpark 4.3 hands a null key to
    ``handleExpiredTimer`` as ``'NaN'``)."""
    return key[0] if isinstance(key[0], str) and key[0] != "NaN" else NULL_KEY


def _join_tally(key: Any, pdfs: Iterator[pd.DataFrame], state: Any, timed: bool) -> Any:
    wm = state.getCurrentWatermarkMs()
    if state.hasTimedOut:
        n, s = state.get
        state.remove()
        yield pd.DataFrame(
            {"k": [_join_key(key)], "kind": ["timeout"], "n": [n], "s": [s], "wm": [wm]}
        )
        return
    n, s, latest = _join_count(pdfs, *(state.get if state.exists else (0, 0)))
    state.update((n, s))
    if timed and latest is not None:
        state.setTimeoutTimestamp(max(latest + JOIN_TIMEOUT_MS, wm + 1))
    yield pd.DataFrame({"k": [_join_key(key)], "kind": ["data"], "n": [n], "s": [s], "wm": [wm]})


def tally(key: Any, pdfs: Iterator[pd.DataFrame], state: Any) -> Any:
    """``NoTimeout``: one row per call."""
    return _join_tally(key, pdfs, state, timed=False)


def tally_timed(key: Any, pdfs: Iterator[pd.DataFrame], state: Any) -> Any:
    """``EventTimeTimeout``: one row per call, and one when the key times out."""
    return _join_tally(key, pdfs, state, timed=True)


class JoinTally:
    """``tally_timed`` as a processor: an event-time timer in place of the timeout."""

    def init(self, handle: Any) -> None:
        self.handle = handle
        self.seen = handle.getValueState("seen", JOIN_STATE)

    def handleInputRows(self, key: Any, rows: Iterator[pd.DataFrame], timerValues: Any) -> Any:
        wm = timerValues.getCurrentWatermarkInMs()
        n, s, latest = _join_count(rows, *(self.seen.get() if self.seen.exists() else (0, 0)))
        self.seen.update((n, s))
        if latest is not None:
            for at in list(self.handle.listTimers()):
                self.handle.deleteTimer(at)
            self.handle.registerTimer(max(latest + JOIN_TIMEOUT_MS, wm + 1))
        yield pd.DataFrame(
            {"k": [_join_key(key)], "kind": ["data"], "n": [n], "s": [s], "wm": [wm]}
        )

    def handleExpiredTimer(self, key: Any, timerValues: Any, expiredTimerInfo: Any) -> Any:
        wm = timerValues.getCurrentWatermarkInMs()
        n, s = self.seen.get() if self.seen.exists() else (None, None)
        self.seen.clear()
        yield pd.DataFrame(
            {"k": [_join_key(key)], "kind": ["timer"], "n": [n], "s": [s], "wm": [wm]}
        )

    def close(self) -> None:
        pass


# --- ProcessingTime timers (test_transform_processing_time) ------------------------------


class Wall:
    """test_transform_processing_time (see its docstring)."""

    def init(self, handle: Any) -> None:
        self.handle = handle
        self.rows = handle.getValueState("rows", "n bigint")

    def handleInputRows(self, key: Any, rows: Iterator[pd.DataFrame], timerValues: Any) -> Any:
        n = self.rows.get()[0] if self.rows.exists() else 0
        latest = None
        for pdf in rows:
            n += len(pdf)
            times = epoch_ms(pdf["ts"]).dropna()
            if len(times):
                latest = max(int(times.max()), latest or 0)
        self.rows.update((n,))
        if latest is not None:
            self.handle.registerTimer(latest)
        if key[0] == "b":
            self.handle.registerTimer(NEVER_MS)
        timers = len(list(self.handle.listTimers()))
        yield pd.DataFrame({"kind": ["data"], "k": [key[0]], "at": [None], "n": [n],
                            "timers": [timers]}).astype({"at": "Int64"})  # fmt: skip

    def handleExpiredTimer(self, key: Any, timerValues: Any, expiredTimerInfo: Any) -> Any:
        at = expiredTimerInfo.getExpiryTimeInMs()
        assert timerValues.getCurrentProcessingTimeInMs() >= at
        if at % 1000 == 0:
            self.handle.registerTimer(at + 1)
        n = self.rows.get()[0] if self.rows.exists() else None
        yield pd.DataFrame({"kind": ["fire"], "k": [str(key[0])], "at": [at], "n": [n],
                            "timers": [None]}).astype({"timers": "Int64"})  # fmt: skip

    def close(self) -> None:
        pass


# --- the watermark column renamed or computed after with_watermark (test_watermark_lineage)


def rows_per_key(key: Any, pdfs: Iterator[pd.DataFrame], state: Any) -> Any:
    """(k, rows of this batch) when the key has rows (``applyInPandasWithState``)."""
    n = sum(len(p) for p in pdfs)
    if n:
        yield pd.DataFrame({"k": [key[0]], "n": [n]})


class RowsPerKey:
    """(k, rows of this batch) when the key has rows (``transformWithStateInPandas``)."""

    def init(self, handle: Any) -> None:
        pass

    def handleInputRows(self, key: Any, rows: Iterator[pd.DataFrame], timerValues: Any) -> Any:
        yield from rows_per_key(key, rows, None)

    def close(self) -> None:
        pass
