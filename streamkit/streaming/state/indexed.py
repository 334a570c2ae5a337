"""What the hash-indexed stores share: state rows in a
:class:`~streamkit.streaming.state.row_log.RowLog`, found through a
:class:`~streamkit.streaming.state.hash_index.HashIndex` on a 64-bit hash of the key
columns, keys whose hash another key holds in a small overflow frame, and a
:class:`~streamkit.streaming.state.changelog.Changelog` of what changed since the last
checkpoint."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import polars as pl

from streamkit.streaming.state.changelog import Changelog
from streamkit.streaming.state.hash_index import U64, HashIndex, nonzero
from streamkit.streaming.state.row_log import RowLog

Hasher = Callable[[pl.DataFrame], U64]
"""Key columns -> one uint64 per row."""


def row_hash(keys: pl.DataFrame) -> U64:
    """Polars' row hash (stable within a process; never persisted)."""
    return keys.hash_rows(seed=0).to_numpy()


def concat(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """``frames`` one under the other, columns matched by name (frames without columns
    skipped; a single frame comes back as is: ``pl.concat`` copies nothing then)."""
    frames = [f for f in frames if f.width]
    if not frames:
        return pl.DataFrame()
    return pl.concat(frames, how="diagonal_relaxed")


def same_keys(ours: pl.DataFrame, theirs: pl.DataFrame, keys: list[str]) -> npt.NDArray[np.bool_]:
    """Per row: whether ``ours`` and ``theirs`` (same height) hold the same key (null equals
    null; no key columns: always)."""
    if not keys:
        return np.ones(ours.height, np.bool_)
    same = pl.all_horizontal(ours[k].eq_missing(theirs[k]) for k in keys)
    return ours.select(same).to_series().to_numpy()


class IndexedRows:
    """The log, index, overflow and changelog of a store keyed by ``keys``."""

    def __init__(self, keys: list[str], hasher: Hasher) -> None:
        self.keys, self._hasher = keys, hasher
        self._changes = Changelog(keys)
        self._clear_rows()

    def _clear_rows(self) -> None:
        self._log, self._index, self._over = RowLog(), HashIndex(), pl.DataFrame()
        self._key_schema: pl.Schema | None = None

    def _hashes(self, frame: pl.DataFrame) -> U64:
        """The key hash of each row of ``frame`` (never 0: the index's empty slot). Equal
        keys hash equally only at equal key types, so the types of the first frame hashed
        since the last clear are the store's: a frame of other key types raises TypeError
        (the engine's keys have one type per query, restores included)."""
        keys = frame.select(self.keys)
        if self._key_schema is None:
            self._key_schema = keys.schema
        elif keys.schema != self._key_schema:
            raise TypeError(f"key types {keys.schema} differ from the store's {self._key_schema}")
        return nonzero(self._hasher(keys).astype(np.uint64, copy=False))

    def _split_overflow(self, fresh: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(rows of ``fresh`` whose key is not in the overflow frame, rows whose key is)."""
        if not self._over.height:
            return fresh, fresh.head(0)
        keys = self._over.select(self.keys)
        mine = fresh.join(keys, on=self.keys, how="semi", nulls_equal=True)
        return fresh.join(keys, on=self.keys, how="anti", nulls_equal=True), mine

    def _tidy(self) -> None:
        """Compact the log and point the index at the rows it moved."""
        moved = self._log.tidy()
        if moved.slots.size:
            self._index.put(moved.hashes, moved.slots)

    def rows(self) -> pl.DataFrame:
        """Every state row held (O(keys held): snapshots)."""
        return concat([*self._log.rows(), self._over])

    @property
    def height(self) -> int:
        """Number of keys held."""
        return self._log.live + self._over.height

    @property
    def work(self) -> int:
        """Rows the log has gathered, written or moved so far (its cost, for tests)."""
        return self._log.handled

    def take_changes(self) -> pl.DataFrame | None:
        """The delta since the previous call or a load; starts a new one."""
        return self._changes.take()

    @property
    def change_keys(self) -> list[str]:
        """The key columns of the deltas."""
        return self.keys
