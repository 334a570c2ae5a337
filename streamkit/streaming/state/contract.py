"""What the incremental engine asks of a state store.

A store holds partial aggregate states (:mod:`streamkit.aggregate`), one row per group,
keyed by :attr:`~streamkit.aggregate.AggregateSpec.state_keys`. Every implementation gives
the same rows as the reference regroup (concatenate state and batch, ``merge``, drop what
the watermark closed); they differ in cost only.
"""

from __future__ import annotations

from typing import Protocol

import polars as pl


class StateStore(Protocol):
    """Keyed partial-aggregate state of one streaming aggregation."""

    def merge(self, fresh: pl.DataFrame) -> pl.DataFrame:
        """Merge a batch's partial states (``aggregate.partial`` output, keys not yet
        unique) into the state; returns the merged rows of the groups it touched, one per
        group, without ``__touched``."""
        ...

    def evict(self, watermark: int) -> pl.DataFrame:
        """Remove and return the groups whose window ended at or before ``watermark``
        (``__wend <= watermark``); none for an aggregation without windows."""
        ...

    def rows(self) -> pl.DataFrame:
        """Every group held (costs O(groups): complete mode and snapshots)."""
        ...

    @property
    def height(self) -> int:
        """Number of groups held."""
        ...

    def take_changes(self) -> pl.DataFrame | None:
        """The delta since the previous call or :meth:`load` (see
        :mod:`~streamkit.streaming.state.changelog`), or None when this store cannot tell
        (its checkpoint must then be a snapshot). Starts a new delta."""
        ...

    @property
    def change_keys(self) -> list[str]:
        """The columns a delta names its changes by: a group's key (one row per key), or
        for sessions the group key without the window (a delta replaces every session of
        each key it names)."""
        ...

    def load(self, state: pl.DataFrame | None) -> None:
        """Replace the state by ``state`` (a snapshot, or nothing); the delta starts empty."""
        ...
