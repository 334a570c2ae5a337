"""Listing and chunked reading of Parquet / NDJSON files without ``pyarrow.dataset``.

``pyarrow.dataset`` imports pandas when it loads (about 0.3 s, more than the rest of a
first query over a few million rows), so files are listed with ``pyarrow.fs`` and read
with ``pyarrow.parquet`` instead. The behaviour is the dataset's: a directory is read
recursively in sorted path order, skipping files and directories whose name starts with
``.`` or ``_``; the schema is the first file's, and columns another file lacks read as
nulls (a type another file disagrees on is cast, which raises if it cannot be).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import polars as pl

from streamkit._lazy import lazy_module
from streamkit.errors import StreamkitError

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.fs as pafs
else:
    pa = lazy_module("pyarrow")
    pafs = lazy_module("pyarrow.fs")

HIDDEN = (".", "_")
"""Name prefixes of files and directories a directory read skips (bookkeeping files)."""


def list_files(
    fs: pafs.FileSystem, root: str, info: pafs.FileInfo, suffixes: tuple[str, ...] | None
) -> list[str]:
    """``root`` itself when it is a file, else the visible files under it (sorted), those
    ending with one of ``suffixes`` when given."""
    if info.type != pafs.FileType.Directory:
        return [root]
    base = root.rstrip("/")
    files = []
    for f in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
        relative = f.path[len(base) :].strip("/").split("/")
        if f.type != pafs.FileType.File or any(p.startswith(HIDDEN) for p in relative):
            continue
        if suffixes is None or f.path.endswith(suffixes):
            files.append(f.path)
    return sorted(files)


def parquet_schema(fs: pafs.FileSystem, files: list[str]) -> pa.Schema:
    """The first file's Arrow schema (no columns when there is no file)."""
    import pyarrow.parquet as pq

    if not files:
        return pa.schema([])
    with fs.open_input_file(files[0]) as f:
        schema: pa.Schema = pq.read_schema(f)
    return schema.remove_metadata()


def parquet_chunks(
    fs: pafs.FileSystem,
    files: list[str],
    schema: pa.Schema,
    columns: list[str],
    *,
    dictionary: list[str],
    chunk_rows: int,
) -> Iterator[Callable[[], pl.DataFrame]]:
    """One callable per chunk: consecutive row groups of one file, about ``chunk_rows``
    rows together, conformed to ``schema``, ``dictionary`` columns categorical.

    A local file whose columns have the first file's types is read by Polars' Parquet
    reader (a row-group aligned slice; it costs a third to a half of pyarrow's CPU), any
    other file by pyarrow with missing columns filled and types cast."""
    import pyarrow.parquet as pq

    want = _polars_schema(schema, columns, dictionary)
    local = isinstance(fs, pafs.LocalFileSystem)
    for path in files:
        with fs.open_input_file(path) as f:
            meta = pq.read_metadata(f)
        file_schema = meta.schema.to_arrow_schema()
        same = all(
            c in file_schema.names and file_schema.field(c).type == schema.field(c).type
            for c in columns
        )
        read: Callable[[int, int, list[int]], pl.DataFrame]
        if local and same:
            read = _PolarsReader(path, columns, dictionary, want)
        else:
            names = set(file_schema.names)
            read = _ArrowReader(
                fs,
                path,
                [c for c in columns if c in names],
                [d for d in dictionary if d in names],
                partial(conform, schema=schema, columns=columns, dictionary=dictionary),
            )
        groups: list[int] = []
        offset = rows = 0
        for i in range(meta.num_row_groups):
            groups.append(i)
            rows += meta.row_group(i).num_rows
            if rows >= chunk_rows:
                yield partial(read, offset, rows, groups)
                offset, groups, rows = offset + rows, [], 0
        if groups or meta.num_row_groups == 0:
            yield partial(read, offset, rows, groups)


def _polars_schema(schema: pa.Schema, columns: list[str], dictionary: list[str]) -> pl.Schema:
    """What a chunk looks like in Polars: ``schema``'s columns, ``dictionary`` ones
    categorical."""
    frame = pl.from_arrow(pa.Table.from_batches([], pa.schema([schema.field(c) for c in columns])))
    assert isinstance(frame, pl.DataFrame)
    return pl.Schema(
        {n: pl.Categorical() if n in dictionary else t for n, t in frame.schema.items()}
    )


@dataclass(frozen=True)
class _PolarsReader:
    """Rows ``[offset, offset + rows)`` (row groups ``groups``) of one local file: Polars'
    reader for plain columns; ``dictionary`` columns through pyarrow, which hands over the
    file's dictionary codes (Polars would decode every string, then re-hash it into a
    categorical: more CPU than the whole read)."""

    path: str
    columns: list[str]
    dictionary: list[str]
    want: pl.Schema

    def __call__(self, offset: int, rows: int, groups: list[int]) -> pl.DataFrame:
        import pyarrow.parquet as pq

        plain = [c for c in self.columns if c not in self.dictionary]
        parts = []
        if plain:
            scan = pl.scan_parquet(self.path, hive_partitioning=False).select(plain)
            parts.append(scan.slice(offset, rows).collect())
        if self.dictionary:
            pf = pq.ParquetFile(self.path, read_dictionary=self.dictionary)
            # already on the prefetch thread: pyarrow's pool would add CPU, not speed
            table = pf.read_row_groups(groups, columns=self.dictionary, use_threads=False)
            codes = pl.from_arrow(table, rechunk=False)
            assert isinstance(codes, pl.DataFrame)
            parts.append(codes)
        frame = pl.concat(parts, how="horizontal").select(self.columns)
        if frame.schema != self.want:
            frame = frame.cast(dict(self.want))  # type: ignore[arg-type]
        return frame


@dataclass(frozen=True)
class _ArrowReader:
    """Row groups of one file through pyarrow: its ``present`` columns, ``dictionary``
    ones encoded, then ``conformed``."""

    fs: pafs.FileSystem
    path: str
    present: list[str]
    dictionary: list[str]
    conformed: Callable[[pa.Table], pa.Table]

    def __call__(self, offset: int, rows: int, groups: list[int]) -> pl.DataFrame:
        import pyarrow.parquet as pq

        with self.fs.open_input_file(self.path) as f:
            pf = pq.ParquetFile(f, read_dictionary=self.dictionary or None)
            table = pf.read_row_groups(groups, columns=self.present, use_threads=True)
        frame = pl.from_arrow(self.conformed(table), rechunk=False)
        assert isinstance(frame, pl.DataFrame)
        return frame


def conform(
    table: pa.Table, *, schema: pa.Schema, columns: list[str], dictionary: list[str]
) -> pa.Table:
    """``table``'s ``columns`` with ``schema``'s types (missing ones null); the
    ``dictionary`` columns may stay dictionary-encoded."""
    out = []
    for name in columns:
        want = schema.field(name).type
        stringy = pa.types.is_string(want) or pa.types.is_large_string(want)
        want_here = pa.dictionary(pa.int32(), want) if name in dictionary and stringy else want
        if name not in table.column_names:
            out.append(pa.nulls(table.num_rows, want_here))
            continue
        column = table.column(name)
        if column.type not in {want, want_here}:
            try:
                column = column.cast(want_here)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise StreamkitError(
                    f"column {name!r} is {column.type} in one file but {want} in the first "
                    f"file read: rewrite the files with one type ({exc})"
                ) from exc
        out.append(column)
    return pa.Table.from_arrays(out, names=columns)
