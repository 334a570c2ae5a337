"""Batch sources: Arrow / pandas tables in memory, Parquet and NDJSON files, local or S3.

``s3://bucket/prefix`` paths go through the endpoint set with
:func:`streamkit.config.configure` (or
``STREAMKIT_AWS_ENDPOINT``), so the same code reads LocalStack, moto or AWS.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import polars as pl

from streamkit._lazy import lazy_module
from streamkit.config import current_endpoint
from streamkit.durations import parse_duration_ns
from streamkit.errors import ConfigError, StreamkitError
from streamkit.file_scan import list_files, parquet_chunks, parquet_schema
from streamkit.frame import DataFrame
from streamkit.plan import Scan
from streamkit.reloading import Clock, ReloadingSource

if TYPE_CHECKING:
    from datetime import timedelta

    import pandas as pd
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.json as pajson
else:
    pa = lazy_module("pyarrow")
    pafs = lazy_module("pyarrow.fs")
    pajson = lazy_module("pyarrow.json")

CHUNK_ROWS = 1 << 20
"""Rows per chunk when an aggregation reads its input (partial states per chunk). Chunks
of 1Mi rows rather than 4Mi cost ~5-8% less CPU on W1 (bench/README.md): a chunk's
per-row columns (bucket, hash, register, rank) stay closer to the cache; a chunk still
holds whole Parquet row groups."""


def _filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    if path.startswith("s3://"):
        return current_endpoint().s3_filesystem(), path[len("s3://") :]
    if "://" in path:
        raise ConfigError(f"unsupported path scheme in {path!r}; use a local path or s3://")
    return pafs.LocalFileSystem(), path


def _empty(schema: pa.Schema) -> pa.Table:
    """A table with no rows (not ``Schema.empty_table``: that imports pandas)."""
    return pa.Table.from_batches([], schema)


def _to_polars(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table, rechunk=False)
    assert isinstance(frame, pl.DataFrame)
    return frame


@dataclass(frozen=True, eq=False)
class ArrowSource:
    """An Arrow table in memory (zero-copy into the executor)."""

    table: pa.Table
    schema: pl.Schema = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "schema", _to_polars(self.table.slice(0, 0)).schema)

    def batches(self, columns: list[str], dictionary: list[str]) -> Iterator[pl.DataFrame]:
        """Slices of the selected columns (``dictionary`` is ignored: data is in memory)."""
        table = self.table.select(columns)
        for start in range(0, max(table.num_rows, 1), CHUNK_ROWS):
            yield _to_polars(table.slice(start, CHUNK_ROWS))

    def describe(self) -> str:
        return f"arrow table ({self.table.num_rows} rows)"


@dataclass(frozen=True, eq=False)
class FileSource:
    """Parquet or NDJSON files (one file, or every visible matching file under a directory;
    see :mod:`streamkit.file_scan`). The files are listed (and NDJSON read) once, here."""

    path: str
    format: str
    schema: pl.Schema = field(init=False)
    _fs: pafs.FileSystem = field(init=False, repr=False)
    _files: list[str] = field(init=False, repr=False)
    _arrow_schema: pa.Schema = field(init=False, repr=False)
    _json: pa.Table | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        fs, root = _filesystem(self.path)
        try:
            info = fs.get_file_info(root)
        except OSError as exc:
            raise StreamkitError(f"cannot reach {self.path!r}: {exc}") from exc
        if info.type == pafs.FileType.NotFound:
            raise StreamkitError(f"no such file or directory: {self.path!r}")
        json_table = None
        if self.format == "parquet":
            files = list_files(fs, root, info, None)
            arrow_schema = parquet_schema(fs, files)
        else:
            files = list_files(fs, root, info, (".json", ".ndjson", ".jsonl"))
            if not files:
                raise StreamkitError(f"no .json/.ndjson/.jsonl files under {self.path!r}")
            tables = []
            for f in files:
                with fs.open_input_stream(f) as stream:
                    tables.append(pajson.read_json(stream))
            json_table = pa.concat_tables(tables, promote_options="permissive")
            arrow_schema = json_table.schema
        for name, value in (
            ("_fs", fs),
            ("_files", files),
            ("_arrow_schema", arrow_schema),
            ("_json", json_table),
            ("schema", _to_polars(_empty(arrow_schema)).schema),
        ):
            object.__setattr__(self, name, value)

    def batches(self, columns: list[str], dictionary: list[str]) -> Iterator[pl.DataFrame]:
        """Chunks of about CHUNK_ROWS rows in file order; the next chunk is read in a
        background thread while the caller works on the current one. Parquet string
        columns in ``dictionary`` come back categorical."""
        if self._json is not None:
            table = self._json.select(columns)
            for start in range(0, max(table.num_rows, 1), CHUNK_ROWS):
                yield _to_polars(table.slice(start, CHUNK_ROWS))
            return
        readers = list(
            parquet_chunks(
                self._fs,
                self._files,
                self._arrow_schema,
                columns,
                dictionary=dictionary,
                chunk_rows=CHUNK_ROWS,
            )
        )
        if not readers:
            yield _to_polars(_empty(self._arrow_schema).select(columns))
            return
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(readers[0])
            for nxt in [*readers[1:], None]:
                chunk = pending.result()
                if nxt is not None:
                    pending = pool.submit(nxt)
                yield chunk

    def describe(self) -> str:
        return f"{self.format} {self.path}"


class DataFrameReader:
    """``sk.read``: batch readers returning DataFrames.

    ``reload_every`` (e.g. ``"5 minutes"``) makes the table a reloadable snapshot: its
    files are listed and read again at most that often (by ``clock``, ``time.monotonic``
    by default), which is how the static side of a stream-static join follows a table
    that changes; see :mod:`streamkit.reloading`. Without it the files are listed once,
    when the DataFrame is created."""

    def parquet(
        self, path: str, *, reload_every: str | timedelta | None = None, clock: Clock | None = None
    ) -> DataFrame:
        """Parquet file or directory (local or ``s3://``)."""
        return self._files(path, "parquet", reload_every, clock)

    def json(
        self, path: str, *, reload_every: str | timedelta | None = None, clock: Clock | None = None
    ) -> DataFrame:
        """Newline-delimited JSON file or directory of ``.json``/``.ndjson``/``.jsonl`` files."""
        return self._files(path, "json", reload_every, clock)

    @staticmethod
    def _files(
        path: str, fmt: str, reload_every: str | timedelta | None, clock: Clock | None
    ) -> DataFrame:
        if reload_every is None:
            return DataFrame(Scan(FileSource(path, fmt)))
        every = parse_duration_ns(reload_every) / 1e9
        return DataFrame(Scan(ReloadingSource(partial(FileSource, path, fmt), every, clock)))


read = DataFrameReader()


def from_arrow(table: pa.Table | pa.RecordBatch) -> DataFrame:
    """A DataFrame over an Arrow table (no copy)."""
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    return DataFrame(Scan(ArrowSource(table)))


def from_pandas(frame: pd.DataFrame, **kwargs: Any) -> DataFrame:
    """A DataFrame over a pandas frame (converted to Arrow once)."""
    return from_arrow(pa.Table.from_pandas(frame, preserve_index=False, **kwargs))
