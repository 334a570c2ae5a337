"""The state of ``transform_with_state_in_pandas``: per grouping key, the processor's
state variables (a value, a list or a map each) and its timers.

In memory, a dict by key tuple holds each key's variables (value: a tuple; list: a list
of tuples; map: a dict of tuples) and its set of timers
(:mod:`~streamkit.streaming.state.processor_timers`). Reads and writes act in place:
a value update, a list append and a map entry update or removal cost O(what they write),
never a copy of the list or map (:attr:`ProcessorStore.written` counts the items
written, for the tests). Timers also sit in a heap with lazy deletion (an entry counts
while its key still holds that timer), so finding the timers due costs O(timers due +
stale entries popped), never a scan of every key.

Variables with a TTL keep an expiry beside each entry (a value's, each list element's,
each map entry's) and reads skip the entries expired at the batch's processing time
(:attr:`ProcessorStore.now`); :meth:`ProcessorStore.expire` removes them at the end of
the batch through an expiry index (:mod:`~streamkit.streaming.state.processor_ttl`).

Checkpoint rows (snapshots and deltas, :mod:`~streamkit.streaming.state.changelog`;
layout in :mod:`~streamkit.streaming.state.processor_vars`) are one per (key, variable):
the key columns, ``__var`` (the variable's name, or ``$timers`` for the key's timers)
and one typed column per variable (``__v_<name>``: a struct for a value, a list of
structs for a list, a list of
``{key, value}`` structs for a map) plus, for a variable with a TTL, its expiries
(``__x_<name>``: an int64 ms for a value, a list of them in entry order for a list or a
map), plus ``__timers`` (a list of int64 ms). A delta holds the (key, variable) pairs
the batch changed, each as its whole new content or as a deletion, so the bytes per
batch follow the (key, variable) pairs touched. Timers and expiries are checkpointed with
the variables: a restart fires exactly the timers, and expires exactly the entries, that
the last committed batch left.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import polars as pl

from streamkit.errors import StreamkitError
from streamkit.streaming.state.changelog import DELETED
from streamkit.streaming.state.processor_timers import KeyTimers
from streamkit.streaming.state.processor_ttl import Candidate, ExpiryIndex
from streamkit.streaming.state.processor_vars import (
    TIMERS,
    TIMERS_VAR,
    VAR,
    Key,
    StateVar,
    expiry_of,
)


class ProcessorStore:
    """State variables and timers per key (see the module docstring)."""

    def __init__(self, key_schema: pl.Schema, variables: Iterable[StateVar]) -> None:
        self.keys = key_schema.names()
        self._key_schema = key_schema
        self.variables = {v.name: v for v in variables}
        self.dropped: set[str] = set()
        """Variables of an earlier processor that ``delete_if_exists`` drops on load."""
        self._held: dict[Key, dict[str, Any]] = {}
        self._expiry: dict[str, dict[Key, Any]] = {
            v.name: {} for v in self.variables.values() if v.ttl_ms is not None
        }
        """Per variable with a TTL, per key: the value's expiry (int), the list's (a list
        parallel to the elements) or the map's (a dict by map key)."""
        self._index = ExpiryIndex(self._live_expiries)
        self.now = 0
        """The processing time (ms) of the batch running: TTLs count from it."""
        self.written = 0
        """State items (values, list elements, map entries) written by updates so far."""
        self._timers = KeyTimers()
        self._changed: set[tuple[Key, str]] = set()
        self._whole = False
        """The next checkpoint must be a snapshot (the layout changed since the last)."""
        self.restored = False
        """Loaded from a checkpoint (a committed batch ran before)."""

    # -- per key -------------------------------------------------------------------------
    def _live(self, at: int) -> bool:
        return at > self.now

    def read(self, key: Key, name: str) -> Any:
        """The content of variable ``name`` for ``key`` without its expired entries (None:
        none). Callers must not modify it."""
        held = self._held.get(key, {}).get(name)
        expiry = self._expiry.get(name)
        if held is None or expiry is None:
            return held
        at = expiry[key]
        kind = self.variables[name].kind
        if kind == "value":
            return held if self._live(at) else None
        if kind == "list":
            if all(self._live(e) for e in at):
                return held
            return [v for v, e in zip(held, at, strict=True) if self._live(e)]
        return {k: v for k, v in held.items() if self._live(at[k])}

    def exists(self, key: Key, name: str) -> bool:
        """Whether ``key`` holds an entry of ``name`` that has not expired."""
        held = self._held.get(key, {}).get(name)
        expiry = self._expiry.get(name)
        if held is None or expiry is None:
            return held is not None
        at = expiry[key]
        kind = self.variables[name].kind
        if kind == "value":
            return self._live(at)
        return any(self._live(e) for e in (reversed(at) if kind == "list" else at.values()))

    def write(self, key: Key, name: str, content: Any) -> None:
        """Replace it (None or empty: drop it); with a TTL, every entry expires at
        :attr:`now` + TTL."""
        vars_ = self._held.setdefault(key, {})
        if content is None or (not isinstance(content, tuple) and not content):
            if vars_.pop(name, None) is not None:
                self._changed.add((key, name))
                self._drop_expiry(key, name)
            if not vars_:
                del self._held[key]
            return
        vars_[name] = content
        self._changed.add((key, name))
        self.written += 1 if isinstance(content, tuple) else len(content)
        var = self.variables[name]
        if var.ttl_ms is not None:
            at = self.now + var.ttl_ms
            expiry = self._expiry[name]
            old = expiry.get(key)
            if var.kind == "value":
                expiry[key] = at
                if old != at:
                    self._index.add(at, name, key)
            elif var.kind == "list":
                expiry[key] = [at] * len(content)
                if old is None or min(old) > at:  # else a candidate at or before it is due
                    self._index.add(at, name, key)
            else:
                expiry[key] = dict.fromkeys(content, at)
                for item in content:
                    self._index.add(at, name, key, item)

    def append(self, key: Key, name: str, items: list[tuple[Any, ...]]) -> None:
        """Add ``items`` at the end of list ``name`` of ``key``, in place."""
        if not items:
            return
        vars_ = self._held.setdefault(key, {})
        held = vars_.get(name)
        if held is None:
            self.write(key, name, list(items))
            return
        held.extend(items)
        self._changed.add((key, name))
        self.written += len(items)
        ttl = self.variables[name].ttl_ms
        if ttl is not None:
            at = self.now + ttl
            expiry = self._expiry[name][key]
            back = at < expiry[-1]  # the clock went back: maybe a new minimum
            expiry.extend([at] * len(items))
            if back:  # (after the expiries: the index may rebuild from them)
                self._index.add(at, name, key)

    def map_get(self, key: Key, name: str, item: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """The value of map key ``item`` in map ``name`` of ``key`` (None: none or expired)."""
        held = self._held.get(key, {}).get(name)
        if held is None:
            return None
        value: tuple[Any, ...] | None = held.get(item)
        expiry = self._expiry.get(name)
        if value is None or expiry is None:
            return value
        return value if self._live(expiry[key][item]) else None

    def map_put(self, key: Key, name: str, item: tuple[Any, ...], value: tuple[Any, ...]) -> None:
        """Set map key ``item`` of map ``name`` of ``key``, in place."""
        vars_ = self._held.setdefault(key, {})
        held = vars_.setdefault(name, {})
        held[item] = value
        self._changed.add((key, name))
        self.written += 1
        ttl = self.variables[name].ttl_ms
        if ttl is not None:
            at = self.now + ttl
            expiry = self._expiry[name].setdefault(key, {})
            if expiry.get(item) != at:
                expiry[item] = at
                self._index.add(at, name, key, item)

    def map_remove(self, key: Key, name: str, item: tuple[Any, ...]) -> None:
        """Drop map key ``item`` of map ``name`` of ``key`` (if there)."""
        held = self._held.get(key, {}).get(name)
        if held is None or item not in held:
            return
        del held[item]
        expiry = self._expiry.get(name)
        if expiry is not None:
            del expiry[key][item]
        self._changed.add((key, name))
        if not held:
            self.write(key, name, None)

    def _drop_expiry(self, key: Key, name: str) -> None:
        expiry = self._expiry.get(name)
        if expiry is not None:
            expiry.pop(key, None)

    # -- TTL -----------------------------------------------------------------------------
    def expire(self) -> int:
        """Remove every entry expired at :attr:`now` (the end of a batch, as Spark's
        ``doTtlCleanup``); returns how many were removed."""
        removed = 0
        for at, name, key, item in self._index.due(self.now):
            expiry = self._expiry[name].get(key)
            if expiry is None:
                continue
            kind = self.variables[name].kind
            if kind == "value":
                if expiry == at:
                    self.write(key, name, None)
                    removed += 1
            elif kind == "map":
                if expiry.get(item) == at:
                    self.map_remove(key, name, item)
                    removed += 1
            else:
                removed += self._expire_list(key, name, expiry)
        return removed

    @property
    def expiry_candidates(self) -> int:
        """Entries in the expiry index, stale ones included (bounded: see
        :mod:`~streamkit.streaming.state.processor_ttl`)."""
        return len(self._index)

    def next_expiry(self) -> int | None:
        """The earliest time (ms) at which :meth:`expire` removes something, None: never.
        Stale candidates at the head of the index (entries updated or removed since) are
        dropped first, so an idle stream runs no no-data batch that removes nothing;
        O(stale candidates dropped)."""
        while (head := self._index.head()) is not None:
            at, name, key, item = head
            expiry = self._expiry[name].get(key)
            kind = self.variables[name].kind
            if expiry is not None and kind == "list" and expiry:
                earliest = min(expiry)
                if earliest <= at:
                    return at
                self._index.pop()  # the list's earliest entry expires later: move it
                self._index.add(earliest, name, key)
                continue
            if expiry is not None and kind == "value" and expiry == at:
                return at
            if expiry is not None and kind == "map" and expiry.get(item) == at:
                return at
            self._index.pop()
        return None

    def _expire_list(self, key: Key, name: str, expiry: list[int]) -> int:
        held = self._held[key][name]
        keep = [i for i, e in enumerate(expiry) if self._live(e)]
        if len(keep) == len(held):  # a stale candidate: keep one for the earliest entry
            earliest = min(expiry)
            if earliest > self.now:  # (always: no entry left is expired)
                self._index.add(earliest, name, key)
            return 0
        self._held[key][name] = [held[i] for i in keep]
        self._expiry[name][key] = [expiry[i] for i in keep]
        self._changed.add((key, name))
        if not keep:
            self.write(key, name, None)
        else:
            self._index.add(min(self._expiry[name][key]), name, key)
        return len(held) - len(keep)

    def _live_expiries(self) -> Iterator[Candidate]:
        for name, by_key in self._expiry.items():
            kind = self.variables[name].kind
            for key, at in by_key.items():
                if kind == "value":
                    yield at, name, key, None
                elif kind == "list":
                    yield min(at), name, key, None
                else:
                    for item, when in at.items():
                        yield when, name, key, item

    # -- timers (:mod:`~streamkit.streaming.state.processor_timers`) ---------------------
    def timers(self, key: Key) -> list[int]:
        """The key's timers, earliest first."""
        return self._timers.of(key)

    def add_timer(self, key: Key, at: int) -> None:
        """A timer for ``key`` at ``at`` ms (a no-op if it exists)."""
        if self._timers.add(key, at):
            self._changed.add((key, TIMERS_VAR))

    def delete_timer(self, key: Key, at: int) -> None:
        """Drop ``key``'s timer at ``at`` (if any)."""
        if self._timers.delete(key, at):
            self._changed.add((key, TIMERS_VAR))

    def has_timer(self, key: Key, at: int) -> bool:
        """Whether ``key`` holds a timer at ``at``."""
        return self._timers.has(key, at)

    def due(self, threshold: int) -> list[tuple[Key, int]]:
        """Timers at or before ``threshold`` (Spark's rule), earliest first; their heap
        entries are consumed (the caller fires, then deletes each)."""
        return self._timers.due(threshold)

    def next_timer(self) -> int | None:
        """The earliest timer held (stale heap entries are dropped on the way)."""
        return self._timers.next()

    # -- whole state and checkpoints ----------------------------------------------------
    @property
    def height(self) -> int:
        """Number of keys holding a variable or a timer."""
        return len(self._held.keys() | self._timers.keys())

    @property
    def change_keys(self) -> list[str]:
        """The columns identifying a checkpoint row."""
        return [*self.keys, VAR]

    @property
    def _schema(self) -> dict[str, pl.DataType]:
        schema: dict[str, pl.DataType] = {**self._key_schema, VAR: pl.String()}
        schema |= {v.column: v.dtype for v in self.variables.values()}
        schema |= {v.expiry_column: v.expiry_dtype for v in self.variables.values()
                   if v.ttl_ms is not None}  # fmt: skip
        schema[TIMERS] = pl.List(pl.Int64())
        return schema

    def _frame(self, pairs: list[tuple[Key, str]]) -> pl.DataFrame:
        """One checkpoint row per (key, variable) held."""
        schema = self._schema
        cols: dict[str, list[Any]] = {n: [None] * len(pairs) for n in schema}
        for i, (key, name) in enumerate(pairs):
            for n, part in zip(self.keys, key, strict=True):
                cols[n][i] = part
            cols[VAR][i] = name
            if name == TIMERS_VAR:
                cols[TIMERS][i] = self._timers.of(key)
            else:
                var = self.variables[name]
                held = self._held[key][name]
                cols[var.column][i] = var.encode(held)
                if var.ttl_ms is not None:
                    at = self._expiry[name][key]
                    cols[var.expiry_column][i] = [at[k] for k in held] if var.kind == "map" else at
        try:
            return pl.DataFrame(cols, schema=schema, strict=True)
        except (TypeError, ValueError, pl.exceptions.PolarsError) as exc:
            raise StreamkitError(
                f"a state value does not fit its variable's schema "
                f"({', '.join(sorted({p[1] for p in pairs}))}): {exc}"
            ) from exc

    def _pairs(self) -> list[tuple[Key, str]]:
        pairs = [(k, n) for k, held in self._held.items() for n in held]
        return pairs + [(k, TIMERS_VAR) for k in self._timers]

    def rows(self) -> pl.DataFrame:
        """Every (key, variable) held, as checkpoint rows (O(state): snapshots)."""
        return self._frame(self._pairs())

    def take_changes(self) -> pl.DataFrame | None:
        """The delta since the previous call or :meth:`load` (None: only a snapshot will
        do, after a load whose columns differ from this processor's); starts a new one."""
        changed, self._changed = self._changed, set()
        if self._whole:
            self._whole = False
            return None
        live = [p for p in changed if self._holds(*p)]
        upserts = self._frame(live).with_columns(pl.lit(False).alias(DELETED))
        gone = [p for p in changed if not self._holds(*p)]
        if not gone:
            return upserts
        cols: dict[str, list[Any]] = {n: [k[i] for k, _ in gone] for i, n in enumerate(self.keys)}
        cols[VAR] = [name for _, name in gone]
        deletes = pl.DataFrame(cols, schema={**self._key_schema, VAR: pl.String()})
        deletes = deletes.with_columns(pl.lit(True).alias(DELETED))
        return pl.concat([upserts, deletes], how="diagonal_relaxed")

    def _holds(self, key: Key, name: str) -> bool:
        if name == TIMERS_VAR:
            return key in self._timers
        return name in self._held.get(key, {})

    def load(self, state: pl.DataFrame | None) -> None:
        """Replace the state by a snapshot (or nothing); the delta starts empty, except
        for the deletion of variables in :attr:`dropped`."""
        self.restored = True
        self._held, self._timers = {}, KeyTimers()
        self._expiry = {name: {} for name in self._expiry}
        self._changed = set()
        layout = pl.Schema(self._schema)
        self._whole = state is not None and state.width > 0 and state.schema != layout
        if state is None or not state.height:
            return
        unknown = set(state[VAR].unique().to_list()) - set(self.variables) - self.dropped
        unknown.discard(TIMERS_VAR)
        if unknown:
            raise StreamkitError(
                f"the checkpoint holds state variables {sorted(unknown)} that the processor "
                "no longer declares; declare them in init, or drop them there with "
                "handle.delete_if_exists(name)"
            )
        keys = state.select(self.keys).rows()
        names = state[VAR].to_list()
        columns = {v.name: state[v.column].to_list() for v in self.variables.values()
                   if v.column in state.columns}  # fmt: skip
        timers = state[TIMERS].to_list() if TIMERS in state.columns else [None] * len(keys)
        expiries = {n: state[self.variables[n].expiry_column].to_list() for n in self._expiry
                    if self.variables[n].expiry_column in state.columns}  # fmt: skip
        dropped: list[tuple[Key, str]] = []
        for i, (key, name) in enumerate(zip(keys, names, strict=True)):
            if name == TIMERS_VAR:
                for at in timers[i] or ():
                    self.add_timer(key, at)
            elif name in self.dropped:
                dropped.append((key, name))
            else:
                held = self.variables[name].decode(columns[name][i])
                self._held.setdefault(key, {})[name] = held
                if name in self._expiry:
                    self._expiry[name][key] = expiry_of(
                        self.variables[name].kind, held, expiries[name][i] if name in expiries
                        else None,
                    )  # fmt: skip
        self._changed = set(dropped)
        self._index.rebuild()
