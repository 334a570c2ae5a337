"""Parquet sink: one set of files per micro-batch, local or S3, idempotent per batch id."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq

from streamkit.errors import StreamkitError
from streamkit.streaming.contracts import Guarantee
from streamkit.streaming.sinks._files import (
    NULL_PARTITION,
    BatchFileSink,
    PendingBatch,
    partition_value,
)

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint
    from streamkit.streaming.contracts import CheckpointStore

__all__ = [
    "NULL_PARTITION",
    "PENDING",
    "ParquetSink",
    "ParquetSinkError",
    "PendingBatch",
    "partition_value",
]

PENDING = "_streamkit_pending.json"
"""The last batch's file list, written before its files (readers skip ``_`` names)."""


class ParquetSinkError(StreamkitError):
    """The Parquet sink cannot write a batch as asked."""


class ParquetSink(BatchFileSink):
    """Writes each batch as ``path/[col=value/]batch-{id:09d}-part-{k}.parquet``.

    ``path`` is a local directory (created) or ``s3://bucket/prefix`` (through ``endpoint``,
    else :func:`streamkit.config.current_endpoint`). Each file is written atomically (local: temp
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

    guarantee: ClassVar[Guarantee] = Guarantee.EXACTLY_ONCE
    """Delivery guarantee (the README sink table is tested against it)."""

    suffix = ".parquet"
    pending_name = PENDING
    error = ParquetSinkError

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
        super().__init__(
            path,
            partition_by,
            endpoint,
            max_rows_per_file=max_rows_per_file,
            keep_partition_column=keep_partition_column,
            max_concurrent_writes=max_concurrent_writes,
            store=store,
        )
        self.compression = compression

    def _encode(self, part: pa.Table) -> bytes:
        out = pa.BufferOutputStream()
        pq.write_table(part, out, compression=self.compression)
        return bytes(out.getvalue().to_pybytes())
