"""The state of ``transform_with_state_in_pandas``: per grouping key, the processor's
state variables (a value, a list or a map each) and its timers.

In memory, a dict by key tuple holds each key's variables (value: a tuple; list: a list
of tuples; map: a dict of tuples) and its set of timers; every read or write costs O(1)
beside the Python call the API makes per key. Timers also sit in a heap with lazy
deletion (an entry counts while its key still holds that timer), so finding the timers
due costs O(timers due + stale entries popped), never a scan of every key.

Checkpoint rows (snapshots and deltas, :mod:`~streamkit.streaming.state.changelog`) are
one per (key, variable): the key columns, :data:`VAR` (the variable's name, or
:data:`TIMERS_VAR` for the key's timers) and one typed column per variable
(``__v_<name>``: a struct for a value, a list of structs for a list, a list of
``{key, value}`` structs for a map) plus :data:`TIMERS` (a list of int64 ms). A delta
holds the (key, variable) pairs the batch changed, each as its whole new content or as a
deletion, so the bytes per batch follow what the batch touched. Timers are checkpointed
with the variables: a restart fires exactly the timers the last committed batch left.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import polars as pl

from streamkit.errors import StreamkitError
from streamkit.streaming.state.changelog import DELETED

Key = tuple[Any, ...]
Kind = Literal["value", "list", "map"]
VAR = "__var"
TIMERS_VAR = "$timers"
"""The :data:`VAR` of a key's timers (user names may not start with ``$``)."""
TIMERS = "__timers"
PREFIX = "__v_"


@dataclass(frozen=True)
class StateVar:
    """A declared state variable: ``schema`` is the value's (list items', map values')
    fields, ``key_schema`` a map's user key fields."""

    name: str
    kind: Kind
    schema: pl.Schema
    key_schema: pl.Schema | None = None

    @property
    def column(self) -> str:
        """Its checkpoint column."""
        return PREFIX + self.name

    @property
    def dtype(self) -> pl.DataType:
        """The checkpoint column's type."""
        item = pl.Struct(dict(self.schema))
        if self.kind == "value":
            return item
        if self.kind == "list":
            return pl.List(item)
        assert self.key_schema is not None
        return pl.List(pl.Struct({"key": pl.Struct(dict(self.key_schema)), "value": item}))

    def encode(self, held: Any) -> Any:
        """The in-memory content as the checkpoint column's Python value."""
        names = self.schema.names()
        if self.kind == "value":
            return dict(zip(names, held, strict=True))
        if self.kind == "list":
            return [dict(zip(names, v, strict=True)) for v in held]
        assert self.key_schema is not None
        knames = self.key_schema.names()
        return [
            {"key": dict(zip(knames, k, strict=True)), "value": dict(zip(names, v, strict=True))}
            for k, v in held.items()
        ]

    def decode(self, cell: Any) -> Any:
        """The checkpoint column's Python value as the in-memory content."""
        if self.kind == "value":
            return tuple(cell.values())
        if self.kind == "list":
            return [tuple(v.values()) for v in cell]
        return {tuple(e["key"].values()): tuple(e["value"].values()) for e in cell}


class ProcessorStore:
    """State variables and timers per key (see the module docstring)."""

    def __init__(self, key_schema: pl.Schema, variables: Iterable[StateVar]) -> None:
        self.keys = key_schema.names()
        self._key_schema = key_schema
        self.variables = {v.name: v for v in variables}
        self.dropped: set[str] = set()
        """Variables of an earlier processor that ``delete_if_exists`` drops on load."""
        self._held: dict[Key, dict[str, Any]] = {}
        self._timers: dict[Key, set[int]] = {}
        self._heap: list[tuple[int, int, Key]] = []
        self._seq = 0
        self._changed: set[tuple[Key, str]] = set()
        self._whole = False
        """The next checkpoint must be a snapshot (the layout changed since the last)."""
        self.restored = False
        """Loaded from a checkpoint (a committed batch ran before)."""

    # -- per key -------------------------------------------------------------------------
    def read(self, key: Key, name: str) -> Any:
        """The content of variable ``name`` for ``key`` (None: none)."""
        return self._held.get(key, {}).get(name)

    def write(self, key: Key, name: str, content: Any) -> None:
        """Replace it (None or empty: drop it)."""
        vars_ = self._held.setdefault(key, {})
        if content is None or (not isinstance(content, tuple) and not content):
            if vars_.pop(name, None) is not None:
                self._changed.add((key, name))
            if not vars_:
                del self._held[key]
            return
        vars_[name] = content
        self._changed.add((key, name))

    def timers(self, key: Key) -> list[int]:
        """The key's timers, earliest first."""
        return sorted(self._timers.get(key, ()))

    def add_timer(self, key: Key, at: int) -> None:
        """A timer for ``key`` at ``at`` ms (a no-op if it exists)."""
        held = self._timers.setdefault(key, set())
        if at in held:
            return
        held.add(at)
        heapq.heappush(self._heap, (at, self._seq, key))
        self._seq += 1
        self._changed.add((key, TIMERS_VAR))

    def delete_timer(self, key: Key, at: int) -> None:
        """Drop ``key``'s timer at ``at`` (if any)."""
        held = self._timers.get(key)
        if held is None or at not in held:
            return
        held.discard(at)
        if not held:
            del self._timers[key]
        self._changed.add((key, TIMERS_VAR))

    def has_timer(self, key: Key, at: int) -> bool:
        """Whether ``key`` holds a timer at ``at``."""
        return at in self._timers.get(key, ())

    def due(self, threshold: int) -> list[tuple[Key, int]]:
        """Timers at or before ``threshold`` (Spark's rule), earliest first; their heap
        entries are consumed (the caller fires, then deletes each)."""
        out: list[tuple[Key, int]] = []
        seen: set[tuple[Key, int]] = set()
        while self._heap and self._heap[0][0] <= threshold:
            at, _, key = heapq.heappop(self._heap)
            if self.has_timer(key, at) and (key, at) not in seen:
                seen.add((key, at))
                out.append((key, at))
        return out

    def next_timer(self) -> int | None:
        """The earliest timer held (stale heap entries are dropped on the way)."""
        while self._heap:
            at, _, key = self._heap[0]
            if self.has_timer(key, at):
                return at
            heapq.heappop(self._heap)
        return None

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
                cols[TIMERS][i] = sorted(self._timers[key])
            else:
                var = self.variables[name]
                cols[var.column][i] = var.encode(self._held[key][name])
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
        self._held, self._timers, self._heap, self._seq = {}, {}, [], 0
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
        dropped: list[tuple[Key, str]] = []
        for i, (key, name) in enumerate(zip(keys, names, strict=True)):
            if name == TIMERS_VAR:
                for at in timers[i] or ():
                    self.add_timer(key, at)
            elif name in self.dropped:
                dropped.append((key, name))
            else:
                self._held.setdefault(key, {})[name] = self.variables[name].decode(columns[name][i])
        self._changed = set(dropped)
