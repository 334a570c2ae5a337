"""Reading Parquet without ``pyarrow.dataset`` reads what ``pyarrow.dataset`` reads.

The reference is ``pyarrow.dataset.dataset(root).to_table()`` on the same directory:
which files count (hidden and bookkeeping ones skipped, subdirectories recursed), their
order, the first file's schema, and nulls for a column a later file lacks.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

import streamkit as sk
from streamkit import io
from streamkit.errors import StreamkitError


def _tree(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    (root / "_tmp").mkdir()
    (root / ".hidden").mkdir()
    pq.write_table(
        pa.table({"k": ["a", "b", None], "v": [1, 2, 3]}), root / "b.parquet", row_group_size=1
    )
    pq.write_table(pa.table({"k": ["c"], "v": [4]}), root / "a.parquet", row_group_size=1)
    pq.write_table(pa.table({"v": [5, 6]}), root / "sub" / "c.parquet")  # no column k
    pq.write_table(pa.table({"k": ["x"], "v": [9]}), root / "_tmp" / "d.parquet")
    pq.write_table(pa.table({"k": ["y"], "v": [9]}), root / ".hidden" / "e.parquet")
    pq.write_table(pa.table({"k": ["z"], "v": [9]}), root / "_part.parquet")
    (root / "_SUCCESS").write_bytes(b"")


def test_directory_reads_what_pyarrow_dataset_reads(tmp_path: Path) -> None:
    _tree(tmp_path)
    expected = ds.dataset(str(tmp_path), format="parquet").to_table()
    got = sk.read.parquet(str(tmp_path)).to_arrow()
    assert got.column_names == expected.column_names
    assert got.to_pylist() == expected.to_pylist()


def test_chunks_split_by_row_groups_and_keep_dictionary_keys(tmp_path: Path) -> None:
    """Small chunks: every row group boundary honoured, string key read as dictionary."""
    _tree(tmp_path)
    source = io.FileSource(str(tmp_path), "parquet")
    io_chunk = io.CHUNK_ROWS
    try:
        io.CHUNK_ROWS = 1
        frames = list(source.batches(["k", "v"], ["k"]))
    finally:
        io.CHUNK_ROWS = io_chunk
    rows = [r for f in frames for r in f.rows()]
    expected = ds.dataset(str(tmp_path), format="parquet").to_table()
    assert rows == [tuple(r.values()) for r in expected.to_pylist()]
    assert len(frames) == 5  # one per row group: a.parquet 1, b.parquet 3, sub/c.parquet 1
    assert str(frames[0].schema["k"]) == "Categorical"


def test_a_type_clash_between_files_is_a_clear_error(tmp_path: Path) -> None:
    pq.write_table(pa.table({"v": [1]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"v": ["not a number"]}), tmp_path / "b.parquet")
    with pytest.raises(StreamkitError, match="column 'v' is string in one file"):
        sk.read.parquet(str(tmp_path)).to_arrow()
