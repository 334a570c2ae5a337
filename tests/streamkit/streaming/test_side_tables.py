"""The dead-letter and late-row tables a query keeps stay bounded: the newest rows only,
compacted into one table every SIDE_TABLE_PIECES batches."""

from __future__ import annotations

import pyarrow as pa
import pytest

from streamkit.streaming import side_tables as query


def test_side_tables_keep_the_newest_rows_and_compact_their_pieces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(query, "SIDE_TABLE_ROWS", 100)
    tables: list[pa.Table] = []
    compacted = 0
    for batch in range(500):
        tables.append(pa.table({"batch": [batch]}))
        query._trim(tables)
        compacted += len(tables) == 1
        assert len(tables) <= query.SIDE_TABLE_PIECES
        kept = pa.concat_tables(tables)["batch"].to_pylist()
        assert kept == list(range(max(0, batch + 1 - len(kept)), batch + 1))  # newest, in order
        assert min(batch + 1, 100) <= len(kept) <= 100 + query.SIDE_TABLE_PIECES
    assert compacted > 5
