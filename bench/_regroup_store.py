"""The reference store: every batch regroups the whole state with the batch (O(state)).

Used for session windows, whose groups change bounds when sessions merge, so a delta by
key would have to name every session of a key; its checkpoints are snapshots.
"""

from __future__ import annotations

import polars as pl

from streamkit import aggregate as K
from streamkit.windows import WEND


class RegroupStore:
    """State as one frame, regrouped with each batch (see the module docstring)."""

    def __init__(self, spec: K.AggregateSpec) -> None:
        self.spec = spec
        self._state = pl.DataFrame()

    def merge(self, fresh: pl.DataFrame) -> pl.DataFrame:
        """See :meth:`StateStore.merge`."""
        fresh = fresh.drop(K.TOUCHED, strict=False).with_columns(pl.lit(True).alias(K.TOUCHED))
        old = self._state.with_columns(pl.lit(False).alias(K.TOUCHED))
        both = pl.concat([old, fresh], how="diagonal_relaxed") if old.height else fresh
        merged = K.merge(both, self.spec) if both.height else both
        self._state = merged.drop(K.TOUCHED)
        return merged.filter(pl.col(K.TOUCHED)).drop(K.TOUCHED)

    def evict(self, watermark: int) -> pl.DataFrame:
        """See :meth:`StateStore.evict`."""
        if self.spec.window is None or not self._state.height:
            return self._state.head(0)
        closed = pl.col(WEND) <= watermark
        out = self._state.filter(closed)
        self._state = self._state.filter(~closed)
        return out

    def rows(self) -> pl.DataFrame:
        """See :meth:`StateStore.rows`."""
        return self._state

    @property
    def height(self) -> int:
        """See :meth:`StateStore.height`."""
        return self._state.height

    def take_changes(self) -> pl.DataFrame | None:
        """Always None: checkpoints of this store are snapshots."""
        return None

    @property
    def change_keys(self) -> list[str]:
        """See :meth:`StateStore.change_keys`."""
        return self.spec.state_keys

    def load(self, state: pl.DataFrame | None) -> None:
        """See :meth:`StateStore.load`."""
        self._state = state if state is not None and state.height else pl.DataFrame()
