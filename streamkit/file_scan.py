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

import pyarrow as pa
import pyarrow.fs as pafs

from streamkit.errors import StreamkitError

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
) -> Iterator[Callable[[], pa.Table]]:
    """One callable per chunk: consecutive row groups of one file, about ``chunk_rows``
    rows together, each read with pyarrow's threads and conformed to ``schema``."""
    import pyarrow.parquet as pq

    for path in files:
        with fs.open_input_file(path) as f:
            meta = pq.read_metadata(f)
        names = set(meta.schema.to_arrow_schema().names)
        read = _Reader(
            fs, path, [c for c in columns if c in names], [d for d in dictionary if d in names]
        )
        conformed = partial(conform, schema=schema, columns=columns, dictionary=dictionary)
        groups: list[int] = []
        rows = 0
        for i in range(meta.num_row_groups):
            groups.append(i)
            rows += meta.row_group(i).num_rows
            if rows >= chunk_rows:
                yield partial(_then, read, groups, conformed)
                groups, rows = [], 0
        if groups or meta.num_row_groups == 0:
            yield partial(_then, read, groups, conformed)


@dataclass(frozen=True)
class _Reader:
    """Reads row groups of one file: its ``present`` columns, ``dictionary`` ones encoded."""

    fs: pafs.FileSystem
    path: str
    present: list[str]
    dictionary: list[str]

    def __call__(self, groups: list[int]) -> pa.Table:
        import pyarrow.parquet as pq

        with self.fs.open_input_file(self.path) as f:
            pf = pq.ParquetFile(f, read_dictionary=self.dictionary or None)
            return pf.read_row_groups(groups, columns=self.present, use_threads=True)


def _then(
    read: Callable[[list[int]], pa.Table],
    groups: list[int],
    conformed: Callable[[pa.Table], pa.Table],
) -> pa.Table:
    return conformed(read(groups))


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
