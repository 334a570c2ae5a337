"""Sinks of streaming queries. Each states its delivery guarantee in its docstring.

- :class:`ConsoleSink`: prints each batch (at-least-once, display only).
- :class:`MemorySink`: named, queryable result in memory (exactly-once).
- :class:`ParquetSink`: files per batch, local or S3 (exactly-once).
- :class:`JsonSink`: NDJSON files per batch, local or S3 (exactly-once).
- :class:`ForeachBatchSink`: ``fn(df, batch_id)`` (exactly-once iff ``fn`` is idempotent).
"""

from streamkit.streaming.sinks.console import ConsoleSink
from streamkit.streaming.sinks.foreach import BatchFunction, ForeachBatchSink
from streamkit.streaming.sinks.json import JsonSink, JsonSinkError
from streamkit.streaming.sinks.memory import (
    MemorySink,
    MemorySinkError,
    MemoryTableNotFoundError,
    OutputMode,
    drop_memory_table,
    memory_sink,
    memory_table,
)
from streamkit.streaming.sinks.parquet import ParquetSink, ParquetSinkError

__all__ = [
    "BatchFunction",
    "ConsoleSink",
    "ForeachBatchSink",
    "JsonSink",
    "JsonSinkError",
    "MemorySink",
    "MemorySinkError",
    "MemoryTableNotFoundError",
    "OutputMode",
    "ParquetSink",
    "ParquetSinkError",
    "drop_memory_table",
    "memory_sink",
    "memory_table",
]
