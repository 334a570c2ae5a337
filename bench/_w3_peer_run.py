"""W3 measured children for ``spark_kinesis.py``: one fresh process runs one engine once.

Engines (``--engine``):

- ``spark-files``: PySpark Structured Streaming (``local[2]``) over the JSON-lines files,
  ``maxFilesPerTrigger=1``, ``trigger(availableNow=True)``, update mode, memory sink;
  per-batch latency is Spark's ``durationMs.triggerExecution``.
- ``streamkit-files``: the same query through streamkit (``_stream_run.w3_query``:
  ``max_files_per_trigger=1``, ``available_now``, memory sink).
- ``streamkit-kinesis``: the same query reading the kinesalite stream as a fresh
  application (``_stream_kinesis.w3_writer``, ``available_now``); leases on LocalStack.

streamkit keeps no input rows on files (``Retention.rows(0)``: only the columns the query
reads are decoded) and one on Kinesis (``Retention.rows(1)``: every field is decoded, so the
late-row table names the rows by ``id``; shard interleaving decides which are late). The
timed region is the query alone: from ``start()`` to the end of the last batch; the Spark
session (JVM start-up), imports and query construction come before it: start-up.
CPU seconds are user + system of this process's whole tree (the Spark JVM included), read
from /proc (``_proc_tree``); peak RSS is the tree's summed ``VmHWM``. Prints one JSON line;
writes the final result (``start`` us, ``action``, ``n``, ``sum``, ``avg``, sorted) to
``--out`` as Arrow IPC.
"""

from __future__ import annotations

import time

LAUNCH = time.perf_counter()

import argparse  # noqa: E402 - the clock above starts before the imports
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pyarrow as pa  # noqa: E402
from _proc_tree import usage  # noqa: E402
from _spark_state import _peak_tree_rss  # noqa: E402
from _verify import write_ipc  # noqa: E402

ENGINES = ("spark-files", "streamkit-files", "streamkit-kinesis")
Report = dict[str, Any]


class Meter:
    """Wall and process-tree CPU seconds of a ``with`` block; start-up is what came before."""

    def __enter__(self) -> Meter:
        self.started, self.cpu0 = time.perf_counter(), usage(os.getpid()).cpu_s
        return self

    def __exit__(self, *_: object) -> None:
        self.wall = time.perf_counter() - self.started
        self.cpu = usage(os.getpid()).cpu_s - self.cpu0

    def report(self) -> Report:
        return {
            "wall_s": self.wall,
            "cpu_s": self.cpu,
            "startup_s": self.started - LAUNCH,
            "startup_cpu_s": self.cpu0,
            "peak_rss_bytes": _peak_tree_rss(os.getpid()),
        }


def spark_files(directory: Path, partitions: int, memory: str) -> tuple[pa.Table, Report]:
    """W3 in PySpark over ``directory``, one file per micro-batch."""
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F
    from pyspark.sql.types import (
        DoubleType,
        LongType,
        StringType,
        StructField,
        StructType,
        TimestampType,
    )

    spark: Any = (
        SparkSession.builder.master("local[2]")
        .appName("w3-files")
        .config("spark.driver.memory", memory)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(partitions))
        .config("spark.sql.streaming.numRecentProgressUpdates", "100000")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    schema = StructType(
        [
            StructField("event_time", TimestampType()),
            StructField("action", StringType()),
            StructField("user_id", LongType()),
            StructField("value", DoubleType()),
        ]
    )
    ck = Path(tempfile.mkdtemp(prefix="w3-spark-ck-"))
    rows = spark.readStream.schema(schema).option("maxFilesPerTrigger", 1).json(str(directory))
    agg = (
        rows.withWatermark("event_time", "10 minutes")
        .groupBy(F.window("event_time", "1 hour"), "action")
        .agg(F.count(F.lit(1)).alias("n"), F.sum("value").alias("sum"), F.avg("value").alias("avg"))
    )
    writer = (
        agg.writeStream.outputMode("update").format("memory").queryName("w3")
        .option("checkpointLocation", str(ck)).trigger(availableNow=True)
    )  # fmt: skip
    with Meter() as meter:
        query = writer.start()
        query.awaitTermination()
    progress = query.recentProgress
    data = [p for p in progress if p.numInputRows > 0]
    late = sum(op.numRowsDroppedByWatermark for p in progress for op in p.stateOperators)
    # update mode appends each batch's updated groups; a group's count only grows, so its
    # final row is the one with the largest count
    final = spark.sql(
        "SELECT window.start AS start, action, max(n) AS n, max_by(sum, n) AS sum, "
        "max_by(avg, n) AS avg FROM w3 GROUP BY window.start, action"
    ).toArrow()
    spark.stop()
    shutil.rmtree(ck, ignore_errors=True)
    report = {
        **meter.report(),
        "batch_s": [p.durationMs["triggerExecution"] / 1000 for p in data],
        "batches": len(data),
        "all_batches": len(progress),
        "rows_in": sum(p.numInputRows for p in progress),
        "late_rows": late,
    }
    return _sorted(final), report


def _sorted(final: pa.Table) -> pa.Table:
    start = final["start"].cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    table = pa.table(
        {
            "start": start,
            "action": final["action"].cast(pa.string()),
            "n": final["n"].cast(pa.int64()),
            "sum": final["sum"].cast(pa.float64()),
            "avg": final["avg"].cast(pa.float64()),
        }
    )
    return table.sort_by([("start", "ascending"), ("action", "ascending")])


def streamkit_run(writer: Any, name: str, keep: int) -> tuple[pa.Table, Report]:
    """Start a prepared streamkit writer (memory sink ``name``, ``keep`` input rows), measured."""
    from _stream_run import normalise

    from streamkit.streaming.sinks import memory_table
    from streamkit.streaming.table import Retention

    writer = writer.retention(Retention.rows(keep))
    with Meter() as meter:
        query = writer.start()
        query.await_termination()
    progress = query.recent_progress
    late = query.late_rows
    named = late is not None and "id" in late.schema.names
    report = {
        **meter.report(),
        "batch_s": [p.durations.total for p in progress if p.num_input_rows > 0],
        "batches": sum(1 for p in progress if p.num_input_rows > 0),
        "all_batches": len(progress),
        "rows_in": sum(p.num_input_rows for p in progress),
        "late_rows": sum(p.late_rows for p in progress),
        "late_ids": late["id"].to_pylist() if named else [],  # the stream's rows have ids
    }
    return normalise(memory_table(name)), report


def main() -> None:
    parser = argparse.ArgumentParser(description="one W3 peer measurement (child process)")
    parser.add_argument("--engine", choices=ENGINES, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dir", type=Path, help="the JSON-lines files (file engines)")
    parser.add_argument("--stream", help="the Kinesis stream (streamkit-kinesis)")
    parser.add_argument("--kinesis-url")
    parser.add_argument("--leases-url", help="DynamoDB for the leases; default from the env")
    parser.add_argument("--batch", type=int, default=10_000, help="records per batch (Kinesis)")
    parser.add_argument("--spark-partitions", type=int, default=2)
    parser.add_argument("--spark-memory", default="1g")
    args = parser.parse_args()
    if args.engine == "spark-files":
        result, report = spark_files(args.dir, args.spark_partitions, args.spark_memory)
    elif args.engine == "streamkit-files":
        from _stream_run import w3_query

        writer = w3_query(args.dir, "none").trigger(available_now=True).memory("w3f")
        result, report = streamkit_run(writer, "w3f", 0)
    else:
        from _stream_kinesis import w3_writer

        from streamkit.config import AwsEndpoint

        leases = AwsEndpoint.local(args.leases_url) if args.leases_url else AwsEndpoint.from_env()
        endpoint = AwsEndpoint.local(args.kinesis_url)
        writer = w3_writer(args.stream, endpoint, leases, "w3k", args.batch)
        result, report = streamkit_run(writer, "w3k", 1)
    write_ipc(result, args.out)
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
