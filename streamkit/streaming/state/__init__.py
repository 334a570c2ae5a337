"""Keyed state of streaming aggregations: stores and their changelog.

:func:`make_store` picks the store for an aggregation: :class:`KeyedStore` (cost follows
the groups a batch touches; delta checkpoints) for tumbling and sliding windows and plain
keys, :class:`RegroupStore` (whole-state regroup; snapshot checkpoints) for session
windows.
"""

from __future__ import annotations

from streamkit import aggregate as K
from streamkit.streaming.state.contract import StateStore
from streamkit.streaming.state.keyed import KeyedStore
from streamkit.streaming.state.regroup import RegroupStore
from streamkit.windows import SessionWindow

__all__ = ["KeyedStore", "RegroupStore", "StateStore", "make_store"]


def make_store(spec: K.AggregateSpec) -> StateStore:
    """The store for ``spec`` (see the module docstring)."""
    if isinstance(spec.window, SessionWindow):
        return RegroupStore(spec)
    return KeyedStore(spec)
