"""Changes to keyed state between two checkpoints, and how a delta file applies them.

A delta is one frame: the state columns plus :data:`DELETED`. A row with ``DELETED`` false
is an upsert (the key's whole state row after the batch); true is a deletion (only the key
columns matter). Each key appears once, as its last change. Applying a delta to the state
before it gives exactly the state after it: every key named in the delta is removed, then
the upserts are added.

A store whose key holds several rows (session windows: every session of a key) records
with :class:`GroupChangelog`: an upsert names every row the key holds after the change, so
a key appears with all its rows from its last change, and applying it replaces them all.
"""

from __future__ import annotations

import polars as pl

DELETED = "__deleted"


class Changelog:
    """Collects upserts and deletions, in order, until :meth:`take`."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = keys
        self._events: list[pl.DataFrame] = []

    def upserted(self, rows: pl.DataFrame) -> None:
        """``rows`` (whole state rows) are the keys' new state."""
        if rows.height:
            self._events.append(rows.with_columns(pl.lit(False).alias(DELETED)))

    def deleted(self, rows: pl.DataFrame) -> None:
        """The keys of ``rows`` left the state."""
        if rows.height:
            self._events.append(rows.select(self.keys).with_columns(pl.lit(True).alias(DELETED)))

    def take(self) -> pl.DataFrame:
        """The delta since the last take (last change per key); starts a new one."""
        events, self._events = self._events, []
        if not events:
            return pl.DataFrame(schema={DELETED: pl.Boolean})
        if len(events) == 1 and not events[0][DELETED].any():
            return events[0]  # one merge's rows: one per key already
        frame = pl.concat(events, how="diagonal_relaxed")
        return frame.unique(subset=self.keys, keep="last", maintain_order=True)

    def clear(self) -> None:
        """Forget the changes collected so far (a snapshot holds them)."""
        self._events = []


class GroupChangelog(Changelog):
    """A :class:`Changelog` whose upserts are whole groups of rows per key (see the module
    docstring): :meth:`upserted` must name every row each of its keys now holds."""

    def take(self) -> pl.DataFrame:
        """The delta since the last take (each key's rows from its last change)."""
        events, self._events = self._events, []
        if not events:
            return pl.DataFrame(schema={DELETED: pl.Boolean})
        if len(events) == 1:
            return events[0]
        seq = [e.with_columns(pl.lit(i, pl.Int32).alias(_SEQ)) for i, e in enumerate(events)]
        frame = pl.concat(seq, how="diagonal_relaxed")
        last = pl.col(_SEQ) == pl.col(_SEQ).max().over(self.keys)
        return frame.filter(last).drop(_SEQ)


_SEQ = "__seq"


def apply(state: pl.DataFrame, delta: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """``state`` with ``delta`` applied (see the module docstring)."""
    upserts = delta.filter(~pl.col(DELETED)).drop(DELETED)
    if not delta.height:
        return state
    if not state.width:
        return upserts
    kept = state.join(delta.select(keys), on=keys, how="anti", nulls_equal=True)
    if not upserts.height:  # deletions only: the frame may hold just the key columns
        return kept
    return pl.concat([kept, upserts.select(state.columns)], how="vertical_relaxed")
