"""The state of ``apply_in_pandas_with_state``: per key, a value (a tuple of the state
schema's fields, or none) and a timeout (ms, or :data:`NO_TIMESTAMP`).

The user function is called once per key in Python, so the store is a dict keyed by the
key tuple: a lookup or a write costs O(1) beside that call. Timeouts sit in a heap with
lazy deletion (an entry is checked against the key's current timeout when it surfaces),
so finding the keys due costs O(keys due + stale entries popped), never a scan of every
key. Deltas and snapshots have the layout of
:mod:`~streamkit.streaming.state.changelog` (key columns, :data:`EXISTS`, one column per
state field named ``__state_<field>``, :data:`TIMEOUT`), so the checkpoint log restores
them like any keyed store.
"""

from __future__ import annotations

import heapq
from typing import Any

import polars as pl

from streamkit.group_state import NO_TIMESTAMP
from streamkit.streaming.state.changelog import DELETED

Key = tuple[Any, ...]
Value = tuple[Any, ...] | None
EXISTS = "__exists"
TIMEOUT = "__timeout"
PREFIX = "__state_"


class GroupStateStore:
    """Values and timeouts per key (see the module docstring)."""

    def __init__(self, key_schema: pl.Schema, state_schema: pl.Schema) -> None:
        self.keys = key_schema.names()
        self._key_schema, self._state_schema = key_schema, state_schema
        self._rows: dict[Key, tuple[Value, int]] = {}
        self._heap: list[tuple[int, int, Key]] = []
        self._seq = 0
        self._changed: dict[Key, bool] = {}
        """Keys changed since the last delta: True upserted, False deleted."""

    # -- per key -------------------------------------------------------------------------
    def get(self, key: Key) -> tuple[Value, int]:
        """The key's (value, timeout); (None, NO_TIMESTAMP) when it holds nothing."""
        return self._rows.get(key, (None, NO_TIMESTAMP))

    def put(self, key: Key, value: Value, timeout: int) -> None:
        """Hold ``value`` and ``timeout`` for ``key``."""
        self._rows[key] = (value, timeout)
        if timeout != NO_TIMESTAMP:
            heapq.heappush(self._heap, (timeout, self._seq, key))
            self._seq += 1
        self._changed[key] = True

    def delete(self, key: Key) -> None:
        """Forget ``key``."""
        if self._rows.pop(key, None) is not None:
            self._changed[key] = False

    def due(self, threshold: int) -> list[Key]:
        """Keys whose timeout is before ``threshold`` (strictly, as Spark), earliest
        first; their heap entries are consumed (a call sets a new timeout or none)."""
        out: list[Key] = []
        taken: set[Key] = set()
        while self._heap and self._heap[0][0] < threshold:
            timeout, _, key = heapq.heappop(self._heap)
            held = self._rows.get(key)
            if held is not None and held[1] == timeout and key not in taken:
                taken.add(key)
                out.append(key)
        return out

    def next_timeout(self) -> int | None:
        """The earliest timeout held (stale heap entries are dropped on the way)."""
        while self._heap:
            timeout, _, key = self._heap[0]
            held = self._rows.get(key)
            if held is not None and held[1] == timeout:
                return timeout
            heapq.heappop(self._heap)
        return None

    # -- whole state and checkpoints ----------------------------------------------------
    @property
    def height(self) -> int:
        """Number of keys held (with a value, a timeout or both)."""
        return len(self._rows)

    @property
    def change_keys(self) -> list[str]:
        """The key columns of the deltas."""
        return self.keys

    def _frame(self, keys: list[Key]) -> pl.DataFrame:
        cols: dict[str, list[Any]] = {n: [k[i] for k in keys] for i, n in enumerate(self.keys)}
        held = [self._rows[k] for k in keys]
        cols[EXISTS] = [v is not None for v, _ in held]
        for i, name in enumerate(self._state_schema.names()):
            cols[PREFIX + name] = [None if v is None else v[i] for v, _ in held]
        cols[TIMEOUT] = [t for _, t in held]
        schema: dict[str, pl.DataType] = {**self._key_schema, EXISTS: pl.Boolean()}
        schema |= {PREFIX + n: t for n, t in self._state_schema.items()}
        schema[TIMEOUT] = pl.Int64()
        return pl.DataFrame(cols, schema=schema)

    def rows(self) -> pl.DataFrame:
        """Every key held, as state rows (O(keys): snapshots)."""
        return self._frame(list(self._rows))

    def take_changes(self) -> pl.DataFrame:
        """The delta since the previous call or :meth:`load`; starts a new one."""
        changed, self._changed = self._changed, {}
        upserts = self._frame([k for k, up in changed.items() if up])
        upserts = upserts.with_columns(pl.lit(False).alias(DELETED))
        gone = [k for k, up in changed.items() if not up]
        if not gone:
            return upserts
        cols = {n: [k[i] for k in gone] for i, n in enumerate(self.keys)}
        deletes = pl.DataFrame(cols, schema=self._key_schema)
        deletes = deletes.with_columns(pl.lit(True).alias(DELETED))
        return pl.concat([upserts, deletes], how="diagonal_relaxed")

    def load(self, state: pl.DataFrame | None) -> None:
        """Replace the state by a snapshot (or nothing); the delta starts empty."""
        self._rows, self._heap, self._changed, self._seq = {}, [], {}, 0
        if state is None or not state.height:
            return
        fields = [PREFIX + n for n in self._state_schema.names()]
        keys = state.select(self.keys).rows()
        values = state.select(fields).rows()
        for key, exists, value, timeout in zip(
            keys, state[EXISTS].to_list(), values, state[TIMEOUT].to_list(), strict=True
        ):
            self.put(key, value if exists else None, timeout)
        self._changed = {}
