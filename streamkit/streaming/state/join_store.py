"""The buffered rows of a stream-stream join: one buffer per side, checkpointed as deltas.

Each buffered row carries an id (unique in its side) and Spark's "matched" flag (it has
been part of at least one output pair: an outer join must not emit it with nulls when it
leaves the state). The checkpoint form (:meth:`JoinStore.rows`) is one frame for both
sides: ``__side`` (0 left, 1 right), ``__id``, ``__matched`` and a struct column per side
(null on the other side's rows). Deltas key on (``__side``, ``__id``): a batch writes the
rows it added, the rows whose flag it set and the rows it evicted, so the bytes written
follow the batch, not the state.
"""

from __future__ import annotations

import polars as pl

from streamkit.streaming.state.changelog import Changelog

SIDE, ID, MATCHED = "__side", "__id", "__matched"
MAX_CHUNKS = 32
"""A buffer is made contiguous again when it has more chunks than this."""
SIDES = ("left", "right")


class JoinStore:
    """Both sides' buffers (Polars frames of the side's columns plus ``__id`` and
    ``__matched``), with a changelog of what each batch changed."""

    def __init__(self, left: pl.Schema, right: pl.Schema) -> None:
        self._schemas = (left, right)
        self._frames = [self._empty(0), self._empty(1)]
        self._next_id = 0
        self._log = Changelog([SIDE, ID])
        self._snapshot_only = True
        """No delta can be given (fresh or restored): the next checkpoint is a snapshot."""

    def _empty(self, side: int) -> pl.DataFrame:
        schema = {**dict(self._schemas[side]), ID: pl.UInt64(), MATCHED: pl.Boolean()}
        return pl.DataFrame(schema=schema)

    def buffer(self, side: int) -> pl.DataFrame:
        """The rows buffered on ``side`` (0 left, 1 right)."""
        return self._frames[side]

    def with_ids(self, side: int, rows: pl.DataFrame, matched: pl.Series) -> pl.DataFrame:
        """``rows`` (columns of ``side``) with fresh ids and the given matched flags."""
        start = self._next_id
        self._next_id += rows.height
        ids = pl.int_range(start, start + rows.height, dtype=pl.UInt64, eager=True)
        return rows.select(self._schemas[side].names()).with_columns(
            ids.alias(ID), matched.alias(MATCHED)
        )

    def add(self, side: int, rows: pl.DataFrame) -> None:
        """Buffer ``rows`` (as :meth:`with_ids` made them) on ``side``."""
        if rows.height:
            frame = pl.concat([self._frames[side], rows], how="vertical_relaxed")
            # one chunk per batch otherwise, kept (empty) after eviction: rechunk now and then
            self._frames[side] = frame.rechunk() if frame.n_chunks() > MAX_CHUNKS else frame
            self._log.upserted(self._packed(side, rows))

    def mark_matched(self, side: int, ids: pl.Series) -> None:
        """Set the matched flag of the rows of ``side`` with these ids."""
        frame = self._frames[side]
        hit = frame[ID].is_in(ids.implode()) & ~frame[MATCHED]
        if hit.any():
            self._frames[side] = frame.with_columns(pl.Series(MATCHED, frame[MATCHED] | hit))
            self._log.upserted(self._packed(side, self._frames[side].filter(hit)))

    def evict(self, side: int, old: pl.Expr) -> pl.DataFrame:
        """Remove and return the rows of ``side`` where ``old`` is true."""
        frame = self._frames[side]
        flags = frame.select(old.fill_null(False)).to_series()
        if not flags.any():
            return frame.head(0)
        gone = frame.filter(flags)
        self._frames[side] = frame.filter(~flags)
        self._log.deleted(self._packed(side, gone))
        return gone

    def _packed(self, side: int, rows: pl.DataFrame) -> pl.DataFrame:
        names = self._schemas[side].names()
        cols = [
            pl.lit(side, dtype=pl.Int8).alias(SIDE), pl.col(ID), pl.col(MATCHED),
            pl.struct(names).alias(SIDES[side]),
        ]  # fmt: skip
        other = SIDES[1 - side]
        dtype = pl.Struct(dict(self._schemas[1 - side]))
        cols.append(pl.lit(None, dtype=dtype).alias(other))
        return rows.select(cols).select(SIDE, ID, MATCHED, *SIDES)

    # -- the checkpoint contract (streamkit.streaming.checkpoint.Changelogged) ---------
    @property
    def change_keys(self) -> list[str]:
        """A delta row is identified by its side and id."""
        return [SIDE, ID]

    def take_changes(self) -> pl.DataFrame | None:
        """The delta since the last call (None: only a snapshot will do)."""
        delta = self._log.take()
        if self._snapshot_only:
            self._snapshot_only = False
            return None
        return delta

    def rows(self) -> pl.DataFrame:
        """Both buffers in the checkpoint form (see the module docstring)."""
        return pl.concat([self._packed(0, self._frames[0]), self._packed(1, self._frames[1])])

    def load(self, state: pl.DataFrame | None) -> None:
        """Replace both buffers with a checkpoint's :meth:`rows` (None or empty: none)."""
        self._frames = [self._empty(0), self._empty(1)]
        self._log.clear()
        self._snapshot_only = True
        if state is None or not state.height:
            self._next_id = 0
            return
        for side in (0, 1):
            part = state.filter(pl.col(SIDE) == side)
            cols = part.select(pl.col(SIDES[side]).struct.unnest(), ID, MATCHED)
            self._frames[side] = pl.concat([self._empty(side), cols], how="vertical_relaxed")
        top = state[ID].max()
        self._next_id = (top if isinstance(top, int) else 0) + 1

    @property
    def height(self) -> int:
        """Rows buffered on both sides."""
        return self._frames[0].height + self._frames[1].height
