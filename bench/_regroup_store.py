"""The session-window store streamkit used before the session store, kept as the baseline
of ``w4_sessions.py``: every batch regroups the whole state with the batch (O(state)), and
its checkpoints are whole snapshots (it cannot give a delta).
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
        """See :meth:`~streamkit.streaming.state.contract.StateStore.merge`."""
        fresh = fresh.drop(K.TOUCHED, strict=False).with_columns(pl.lit(True).alias(K.TOUCHED))
        old = self._state.with_columns(pl.lit(False).alias(K.TOUCHED))
        both = pl.concat([old, fresh], how="diagonal_relaxed") if old.height else fresh
        merged = K.merge(both, self.spec) if both.height else both
        self._state = merged.drop(K.TOUCHED)
        return merged.filter(pl.col(K.TOUCHED)).drop(K.TOUCHED)

    def evict(self, watermark: int) -> pl.DataFrame:
        """See :meth:`~streamkit.streaming.state.contract.StateStore.evict`."""
        if self.spec.window is None or not self._state.height:
            return self._state.head(0)
        closed = pl.col(WEND) <= watermark
        out = self._state.filter(closed)
        self._state = self._state.filter(~closed)
        return out

    def rows(self) -> pl.DataFrame:
        """See :meth:`~streamkit.streaming.state.contract.StateStore.rows`."""
        return self._state

    @property
    def height(self) -> int:
        """See :meth:`~streamkit.streaming.state.contract.StateStore.height`."""
        return self._state.height

    def take_changes(self) -> pl.DataFrame | None:
        """Always None: checkpoints of this store are snapshots."""
        return None

    @property
    def change_keys(self) -> list[str]:
        """See :meth:`~streamkit.streaming.state.contract.StateStore.change_keys`."""
        return self.spec.state_keys

    def load(self, state: pl.DataFrame | None) -> None:
        """See :meth:`~streamkit.streaming.state.contract.StateStore.load`."""
        self._state = state if state is not None and state.height else pl.DataFrame()
