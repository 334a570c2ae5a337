"""Shared machinery of the file sinks: per-batch file plans, partitions, the pending list.

A file sink writes each batch as ``path/[col=value/]batch-{id:09d}-part-{k}.{suffix}`` and
is idempotent per batch id: before its files, a batch records their names in a pending
file; writing batch N again first deletes what the earlier attempt listed and the new
attempt does not overwrite. Subclasses only encode a table as the bytes of one file. A
fleet task's copy (:meth:`BatchFileSink.for_task`) names its files
``part-<task>-{id:09d}-{k}.{suffix}`` and keeps its own pending list, or none when the
task writes only committed batches (``committed_only``).
"""

from __future__ import annotations

import asyncio
import copy
import json
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Self
from urllib.parse import quote

import polars as pl
import pyarrow as pa

from streamkit.errors import ColumnNotFoundError, StreamkitError
from streamkit.streaming.checkpoint_store import open_checkpoint_store
from streamkit.streaming.contracts import Guarantee

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint
    from streamkit.streaming.contracts import CheckpointStore

NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
"""Directory value for null (and empty string) partition values, as in Hive and Spark."""
_ROW = "__streamkit_row__"


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
    def decode(
        cls, data: bytes, where: str, name: str, error: type[StreamkitError] = StreamkitError
    ) -> PendingBatch:
        try:
            raw = json.loads(data)
            return cls(int(raw["batch_id"]), tuple(str(f) for f in raw["files"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise error(
                f"unreadable {name} in {where!r}: {exc}; delete it only if no query writes there"
            ) from exc


class BatchFileSink:
    """Base of the file sinks (see the module docstring); subclasses implement ``_encode``."""

    guarantee: ClassVar[Guarantee] = Guarantee.EXACTLY_ONCE
    """Delivery guarantee (the README sink table is tested against it)."""

    suffix: ClassVar[str]
    """File name suffix, e.g. ``.parquet``."""
    pending_name: ClassVar[str]
    """Name of the pending file list (starts with ``_`` so that readers skip it)."""
    error: ClassVar[type[StreamkitError]] = StreamkitError
    """Error raised for misuse (another query's directory, bad partition column)."""

    def __init__(
        self,
        path: str,
        partition_by: str | None = None,
        endpoint: AwsEndpoint | None = None,
        *,
        max_rows_per_file: int = 1_000_000,
        keep_partition_column: bool = True,
        max_concurrent_writes: int = 8,
        store: CheckpointStore | None = None,
    ) -> None:
        if max_rows_per_file < 1 or max_concurrent_writes < 1:
            raise ValueError("max_rows_per_file and max_concurrent_writes must be >= 1")
        self.path = path
        self.partition_by = partition_by
        self.max_rows_per_file = max_rows_per_file
        self.keep_partition_column = keep_partition_column
        self._limit = max_concurrent_writes
        self._store = store if store is not None else open_checkpoint_store(path, endpoint)
        self._pending: PendingBatch | None = None
        self._pending_loaded = False
        self._task: str | None = None
        self._committed_only = False

    def for_task(self, task: str, *, committed_only: bool = False) -> Self:
        """A copy of this sink for one task of a fleet (:mod:`streamkit.fleet.member`): its
        files are named ``part-<task>-<batch id>-<k>`` and its pending list
        ``_<pending name>-<task>``, so tasks sharing the directory never touch each
        other's files and the directory read as one dataset is the fleet's output.

        ``committed_only``: the task writes a batch only after committing it (from rows
        staged before the commit, :mod:`streamkit.fleet.fence`), so every writing of batch
        N has the same rows and the same file names: no pending list is kept and nothing
        is deleted (a late second writing of N by a stale owner rewrites equal files)."""
        if not task or "/" in task:
            raise ValueError(f"a sink task name is a non-empty name without '/', got {task!r}")
        clone = copy.copy(self)
        clone._task, clone._pending, clone._pending_loaded = task, None, False
        clone._committed_only = committed_only
        return clone

    @property
    def _pending_file(self) -> str:
        if self._task is None:
            return self.pending_name
        stem, dot, ext = self.pending_name.rpartition(".")
        return f"{stem}-{self._task}{dot}{ext}"

    def _file_stem(self, batch_id: int) -> str:
        if self._task is None:
            return f"batch-{batch_id:09d}-part-"
        return f"part-{self._task}-{batch_id:09d}-"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, partition_by={self.partition_by!r})"

    def _encode(self, part: pa.Table) -> bytes:
        raise NotImplementedError

    async def add_batch(self, batch_id: int, table: pa.Table) -> None:
        """Write the batch's files (after removing an earlier attempt's); return when durable."""
        files = self._plan(batch_id, table)
        if not self._committed_only:
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
            raise self.error(
                f"{self.path!r} already holds batch {old.batch_id}, newer than batch "
                f"{new.batch_id}: another query (or an older checkpoint) writes here. Use a "
                "new output path for a query with a new checkpoint"
            )
        if old is not None and old.batch_id == new.batch_id:
            for name in sorted(set(old.files) - set(new.files)):
                self._store.delete(name)
        if new.files and new != old:
            self._store.write_bytes(self._pending_file, new.encode())
            self._pending = new

    def _load_pending(self) -> PendingBatch | None:
        if not self._pending_loaded:
            data = self._store.read_bytes(self._pending_file)
            self._pending = (
                None
                if data is None
                else PendingBatch.decode(data, self.path, self._pending_file, self.error)
            )
            self._pending_loaded = True
        return self._pending

    def _write_file(self, name: str, part: pa.Table) -> None:
        self._store.write_bytes(name, self._encode(part))

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
                name = f"{directory}{self._file_stem(batch_id)}{k}{self.suffix}"
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
            raise self.error(
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
