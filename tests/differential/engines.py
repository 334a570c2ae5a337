"""Run one :class:`Query` over a directory of files through PySpark and through
streamkit, the same way: a file stream with one file per micro-batch
(``maxFilesPerTrigger=1`` / ``max_files_per_trigger=1``), the ``available_now`` trigger,
a foreach-batch sink collecting every batch with its id."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from tests.differential.inputs import SCHEMA, SPARK_SCHEMA, Files, rows_table
from tests.differential.queries import (
    KEY,
    OutRow,
    Query,
    spark_frame,
    spark_rows,
    streamkit_frame,
    streamkit_rows,
)

DEADLINE = 600.0
"""Seconds either engine may take for one query (a busy 2-core machine)."""


@dataclass(frozen=True)
class Run:
    """What one engine emitted: ``(batch_id, sorted rows)`` per batch, in batch order."""

    batches: list[tuple[int, list[OutRow]]]

    def final(self, mode: str) -> list[OutRow]:
        """The result table a sink holds at the end: complete mode's last batch, update
        mode's newest row per group, append mode's union."""
        if mode == "complete":
            return self.batches[-1][1] if self.batches else []
        if mode == "append":
            return sorted((r for _, rows in self.batches for r in rows), key=order)
        latest = {row[KEY]: row for _, rows in self.batches for row in rows}
        return sorted(latest.values(), key=order)

    def without(self, column: int) -> Run:
        """The same batches with ``column`` dropped from every row."""
        return Run([(b, [r[:column] + r[column + 1 :] for r in rows]) for b, rows in self.batches])


def order(row: OutRow) -> tuple[Any, ...]:
    """A total order on rows with nulls (nulls last in each column)."""
    return tuple((x is None, 0 if x is None else x) for x in row)


class SparkRun:
    """A Spark streaming query started on one directory; :meth:`result` waits for it.

    Several may run at once in one session (the 2-core machine's idle time between
    micro-batches is then shared), each with its own checkpoint and collected batches."""

    def __init__(self, spark: Any, query: Query, directory: Path) -> None:
        self.query = query
        self._seen: list[tuple[int, list[OutRow]]] = []
        self._checkpoint = tempfile.TemporaryDirectory(prefix="spark-ck-")
        stream = (
            spark.readStream.schema(SPARK_SCHEMA)
            .option("maxFilesPerTrigger", 1)
            .format(query.fmt)
            .load(str(directory))
        )
        self._handle = (
            spark_frame(query, stream)
            .writeStream.outputMode(query.mode)
            .trigger(availableNow=True)
            .option("checkpointLocation", self._checkpoint.name)
            .foreachBatch(self._collect)
            .start()
        )

    def _collect(self, batch: Any, batch_id: int) -> None:
        self._seen.append((batch_id, sorted(spark_rows(batch), key=order)))

    def result(self) -> Run:
        """Every batch foreachBatch saw, once the query has read everything and stopped."""
        try:
            finished = self._handle.awaitTermination(DEADLINE)
            if self._handle.exception() is not None:
                raise AssertionError(f"Spark failed on {self.query}: {self._handle.exception()}")
            assert finished, f"Spark did not finish {self.query} within {DEADLINE} s"
        finally:
            self._checkpoint.cleanup()
        return Run(sorted(self._seen, key=lambda b: b[0]))


def run_spark_all(spark: Any, jobs: dict[str, tuple[Query, Path]]) -> dict[str, Run]:
    """Every job's Spark run, all started at once and then awaited (by name)."""
    started = {name: SparkRun(spark, query, directory) for name, (query, directory) in jobs.items()}
    return {name: run.result() for name, run in started.items()}


def run_spark(spark: Any, query: Query, directory: Path) -> Run:
    """The query in PySpark Structured Streaming; returns every batch foreachBatch saw."""
    return SparkRun(spark, query, directory).result()


def spark_batch_rows(spark: Any, query: Query, directory: Path) -> list[OutRow]:
    """The same aggregation as a Spark batch job over all files (watermark ignored)."""
    frame = spark.read.schema(SPARK_SCHEMA).format(query.fmt).load(str(directory))
    return sorted(spark_rows(spark_frame(query, frame)), key=order)


def run_streamkit(query: Query, directory: Path) -> tuple[Run, pa.Table | None]:
    """The query in streamkit; returns every batch ``foreach_batch`` saw and the late rows."""
    import streamkit as sk

    seen: list[tuple[int, list[OutRow]]] = []

    def collect(frame: sk.DataFrame, batch_id: int) -> None:
        seen.append((batch_id, sorted(streamkit_rows(frame.to_arrow()), key=order)))

    source = sk.read_stream.files(
        str(directory), format=query.fmt, schema=SCHEMA, max_files_per_trigger=1
    )
    handle = (
        streamkit_frame(query, source)
        .write_stream.output_mode(query.mode)
        .trigger(available_now=True)
        .foreach_batch(collect)
        .start()
    )
    finished = handle.await_termination(timeout=DEADLINE)
    if handle.exception is not None:
        raise AssertionError(f"streamkit failed: {handle.exception!r}")
    assert finished, f"streamkit did not finish {query} within {DEADLINE} s"
    return Run(sorted(seen, key=lambda b: b[0])), handle.late_rows


def streamkit_batch_rows(query: Query, files: Files) -> list[OutRow]:
    """The same aggregation as a streamkit batch job over every row of ``files``."""
    import streamkit as sk

    frame = sk.from_arrow(rows_table([row for rows in files for row in rows]))
    return sorted(streamkit_rows(streamkit_frame(query, frame).to_arrow()), key=order)
