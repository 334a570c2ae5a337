"""Keyed state of streaming aggregations: stores and their changelog.

:func:`make_store` picks the store for an aggregation: :class:`SessionStore` (sessions
indexed by group key) for session windows, :class:`KeyedStore` (one row per group) for
tumbling and sliding windows and plain keys. Both cost what a batch touches and evicts and
checkpoint as deltas between snapshots.
"""

from __future__ import annotations

from streamkit import aggregate as K
from streamkit.streaming.state.contract import StateStore
from streamkit.streaming.state.keyed import KeyedStore
from streamkit.streaming.state.session import SessionStore
from streamkit.windows import SessionWindow

__all__ = ["KeyedStore", "SessionStore", "StateStore", "make_store"]


def make_store(spec: K.AggregateSpec, expiry: str | None = None) -> StateStore:
    """The store for ``spec`` (see the module docstring); ``expiry``: without a window,
    the group key the store evicts by (:class:`KeyedStore`)."""
    if isinstance(spec.window, SessionWindow):
        return SessionStore(spec)
    return KeyedStore(spec, expiry=expiry)
