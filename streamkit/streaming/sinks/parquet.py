"""Parquet sink: one set of files per micro-batch, local or S3, idempotent per batch id."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from streamkit.errors import ColumnNotFoundError, StreamkitError
from streamkit.streaming.checkpoint_store import open_checkpoint_store

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint
    from streamkit.streaming.contracts import CheckpointStore

PENDING = "_streamkit_pending.json"
"""The last batch's file list, written before its files (readers skip ``_`` names)."""
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
"""Directory value for null (and empty string) partition values, as in Hive and Spark."""
_ROW = "__streamkit_row__"


class ParquetSinkError(StreamkitError):
    """The Parquet sink cannot write a batch as asked."""


@dataclass(frozen=True)
class PendingBatch:
    """The files a batch writes, recorded before they are written."""

    batch_id: int
    """Batch id."""
    files: tuple[str, ...]
    """Paths relative to the sink's root."""

    def encode(self) -> bytes:
        return json.dumps({"batch_id": self.batch_id, "files": list(self.files)}).encode()

    @classmethod
    def decode(cls, data: bytes, where: str) -> PendingBatch:
        try:
            raw = json.loads(data)
            return cls(int(raw["batch_id"]), tuple(str(f) for f in raw["files"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ParquetSinkError(
                f"unreadable {PENDING} in {where!r}: {exc}; delete it only if no query writes there"
            ) from exc


class ParquetSink:
    """Writes each batch as ``path/[col=value/]batch-{id:09d}-part-{k}.parquet``.

    ``path`` is a local directory (created) or ``s3://bucket/prefix`` (through ``endpoint``,
    else :func:`streamkit.io.current_endpoint`). Each file is written atomically (local: temp
    file, fsync, rename; S3: one PUT), and ``add_batch`` returns when every file is durable.

    Idempotent per batch id: before its files, a batch records their names in
    ``_streamkit_pending.json``. Writing batch N again (the engine re-runs the uncommitted
    batch after a crash) first deletes the files that the earlier attempt listed and the new
    attempt does not overwrite, so a reader (``sk.read.parquet(path)``) never sees a batch
    twice once it is re-run. Files are named by batch id, so each batch's rows stay apart.
    One directory belongs to one query: a batch id lower than the recorded one raises
    :class:`ParquetSinkError` (a new checkpoint must write to a new path).

    ``partition_by`` names a plain column (string, integer, boolean, date, timestamp);
    values are URI-escaped directory names, null goes to ``__HIVE_DEFAULT_PARTITION__``.
    Struct columns (windows) are refused: to partition by date, add a column first and
    group by it too, e.g. ``df.with_column("date", sk.col("event_time").cast(pa.date32()))``
    with windows of at most a day. By default the column also stays inside the files
    (``keep_partition_column=True``), typed as written, for readers without partition
    discovery (``sk.read.parquet``, DuckDB, pyarrow with ``partitioning=None``). With
    ``keep_partition_column=False`` the directory names alone hold it (Hive / Spark layout,
    read with ``partitioning="hive"`` or ``hive_partitioning=True``; values come back as
    inferred from the directory names).
    Empty batches write nothing. Batches larger than ``max_rows_per_file`` are split.

    Delivery: exactly-once together with the engine's checkpoint (a batch is committed
    only after ``add_batch`` returned).
    """

    def __init__(
        self,
        path: str,
        partition_by: str | None = None,
        endpoint: AwsEndpoint | None = None,
        *,
        max_rows_per_file: int = 1_000_000,
        keep_partition_column: bool = True,
        compression: str = "zstd",
        max_concurrent_writes: int = 8,
        store: CheckpointStore | None = None,
    ) -> None:
        if max_rows_per_file < 1 or max_concurrent_writes < 1:
            raise ValueError("max_rows_per_file and max_concurrent_writes must be >= 1")
        self.path = path
        self.partition_by = partition_by
        self.max_rows_per_file = max_rows_per_file
        self.keep_partition_column = keep_partition_column
        self.compression = compression
        self._limit = max_concurrent_writes
        self._store = store if store is not None else open_checkpoint_store(path, endpoint)
        self._pending: PendingBatch | None = None
        self._pending_loaded = False

    def __repr__(self) -> str:
        return f"ParquetSink({self.path!r}, partition_by={self.partition_by!r})"

    async def add_batch(self, batch_id: int, table: pa.Table) -> None:
        """Write the batch's files (after removing an earlier attempt's); return when durable."""
        files = self._plan(batch_id, table)
        new = PendingBatch(batch_id, tuple(name for name, _ in files))
        await asyncio.to_thread(self._prepare, new)
        limit = asyncio.Semaphore(self._limit)

        async def write(name: str, part: pa.Table) -> None:
            async with limit:
                await asyncio.to_thread(self._write_file, name, part)

        results = await asyncio.gather(*(write(n, t) for n, t in files), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def _prepare(self, new: PendingBatch) -> None:
        """Delete what an earlier attempt of this batch wrote, then record the new file list."""
        old = self._load_pending()
        if old is not None and old.batch_id > new.batch_id:
            raise ParquetSinkError(
                f"{self.path!r} already holds batch {old.batch_id}, newer than batch "
                f"{new.batch_id}: another query (or an older checkpoint) writes here. Use a "
                "new output path for a query with a new checkpoint"
            )
        if old is not None and old.batch_id == new.batch_id:
            for name in sorted(set(old.files) - set(new.files)):
                self._store.delete(name)
        if new.files and new != old:
            self._store.write_bytes(PENDING, new.encode())
            self._pending = new

    def _load_pending(self) -> PendingBatch | None:
        if not self._pending_loaded:
            data = self._store.read_bytes(PENDING)
            self._pending = None if data is None else PendingBatch.decode(data, self.path)
            self._pending_loaded = True
        return self._pending

    def _write_file(self, name: str, part: pa.Table) -> None:
        out = pa.BufferOutputStream()
        pq.write_table(part, out, compression=self.compression)
        self._store.write_bytes(name, out.getvalue().to_pybytes())

    def _plan(self, batch_id: int, table: pa.Table) -> list[tuple[str, pa.Table]]:
        """(relative file name, rows) of every file of this batch; none when it is empty."""
        if table.num_rows == 0:
            return []
        groups = [("", table)] if self.partition_by is None else self._split(table)
        files = []
        for directory, group in groups:
            rows = group
            if self.partition_by is not None and not self.keep_partition_column:
                rows = group.drop_columns([self.partition_by])
            for k, start in enumerate(range(0, rows.num_rows, self.max_rows_per_file)):
                name = f"{directory}batch-{batch_id:09d}-part-{k}.parquet"
                files.append((name, rows.slice(start, self.max_rows_per_file)))
        return files

    def _split(self, table: pa.Table) -> list[tuple[str, pa.Table]]:
        """Rows per partition value (vectorised: one stable sort, then run lengths)."""
        column = self.partition_by
        assert column is not None
        if column not in table.column_names:
            raise ColumnNotFoundError(column, table.column_names)
        dtype = table.schema.field(column).type
        if pa.types.is_nested(dtype) or pa.types.is_binary(dtype):
            raise ParquetSinkError(
                f"cannot partition by {column!r} of type {dtype}; partition by a plain column, "
                'e.g. add one first: with_column("date", sk.col("event_time").cast(pa.date32()))'
            )
        frame = pl.from_arrow(table.select([column]), rechunk=False)
        assert isinstance(frame, pl.DataFrame)
        order = frame.with_row_index(_ROW).sort(column, nulls_last=True, maintain_order=True)
        runs = order[column].rle().struct.unnest()
        if runs.height > 1:
            table = table.take(order[_ROW].to_arrow())
        groups, start = [], 0
        for length, value in zip(runs["len"].to_list(), runs["value"].to_list(), strict=True):
            groups.append((f"{column}={partition_value(value)}/", table.slice(start, length)))
            start += length
        return groups

    async def close(self) -> None:
        """Nothing is buffered: every batch was durable when ``add_batch`` returned."""


def partition_value(value: Any) -> str:
    """A partition value as a URI-escaped directory name (null/empty: the Hive default)."""
    if value is None or value == "":
        return NULL_PARTITION
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, datetime):
        text = value.isoformat(sep=" ")
    elif isinstance(value, date):
        text = value.isoformat()
    else:
        text = str(value)
    return quote(text, safe="-_. ")
