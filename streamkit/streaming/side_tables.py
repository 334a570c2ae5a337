"""The dead-letter and late-row tables a running query keeps for its users to read."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from streamkit.streaming.contracts import SourceBatch

SIDE_TABLE_ROWS = 100_000
"""Most recent dead-letter and late rows a query keeps in memory for users to read."""


SIDE_TABLE_PIECES = 64
"""Per-batch pieces a side table holds before they are compacted into one table."""


def _trim(tables: list[pa.Table]) -> None:
    """Keep about the last SIDE_TABLE_ROWS rows; every SIDE_TABLE_PIECES batches, copy the
    pieces into one contiguous table (many small long-lived tables fragment the heap)."""
    total = sum(t.num_rows for t in tables)
    while len(tables) > 1 and total - tables[0].num_rows >= SIDE_TABLE_ROWS:
        total -= tables.pop(0).num_rows
    if len(tables) > SIDE_TABLE_PIECES:
        whole = pa.concat_tables(tables, promote_options="default").combine_chunks()
        keep = min(whole.num_rows, SIDE_TABLE_ROWS)
        tables[:] = [whole.slice(whole.num_rows - keep)]


class SideTables:
    """The most recent ~SIDE_TABLE_ROWS dead letters and late rows (totals are in the
    progress records), so a long-running query's memory stays bounded."""

    def __init__(self) -> None:
        self._dead: list[pa.Table] = []
        self._late: list[pa.Table] = []

    def keep(self, bid: int, batch: SourceBatch, late: pl.DataFrame) -> None:
        """Add batch ``bid``'s dead letters (with a ``batch_id`` column) and late rows."""
        if batch.dead_letters.num_rows:
            ids = pa.array([bid] * batch.dead_letters.num_rows, pa.int64())
            self._dead.append(batch.dead_letters.append_column("batch_id", ids))
            _trim(self._dead)
        if late.height:
            self._late.append(late.to_arrow())
            _trim(self._late)

    @property
    def dead_letters(self) -> pa.Table | None:
        """The kept dead letters, or None when there were none."""
        return pa.concat_tables(self._dead, promote_options="default") if self._dead else None

    @property
    def late_rows(self) -> pa.Table | None:
        """The kept late rows, or None when there were none."""
        return pa.concat_tables(self._late, promote_options="default") if self._late else None
