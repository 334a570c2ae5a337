"""W4 measured child for Spark Structured Streaming (see ``state_store.py``).

One fresh PySpark driver (``local[2]``) per run: the W4 aggregation in update mode to the
``noop`` sink, one Parquet file per micro-batch (``maxFilesPerTrigger=1``), with the HDFS
or the RocksDB state store (changelog checkpointing on). Files are moved into the source
folder one at a time and ``processAllAvailable`` waits for each; between batches the
checkpoint folder is listed for the bytes written. Latency is Spark's own
``triggerExecution`` duration of the batch that read the file; CPU is user + system of
the whole process tree (Python driver and JVM) over the same interval; peak RSS the sum of
the tree's ``VmHWM``. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _proc_tree import descendants, usage

PROVIDERS = {
    "hdfs": "org.apache.spark.sql.execution.streaming.state.HDFSBackedStateStoreProvider",
    "rocksdb": "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
}


def _session(provider: str, partitions: int, memory: str) -> object:
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.master("local[2]")
        .appName(f"w4-{provider}")
        .config("spark.driver.memory", memory)
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", str(partitions))
        .config("spark.sql.streaming.stateStore.providerClass", PROVIDERS[provider])
    )
    if provider == "rocksdb":
        key = "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled"
        builder = builder.config(key, "true")
    return builder.getOrCreate()


def _peak_tree_rss(root: int) -> int:
    total = 0
    for pid in descendants(root):
        try:
            text = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) * 1024
    return total


def run(files: list[Path], provider: str, partitions: int, memory: str) -> dict[str, object]:
    """Feed ``files`` (the first fills the state, not reported) and measure each batch."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType, LongType, StructField, StructType, TimestampType
    from state_store import new_bytes

    spark = _session(provider, partitions, memory)
    work = Path(tempfile.mkdtemp(prefix="w4-spark-"))
    src, ck = work / "src", work / "ck"
    src.mkdir()
    schema = StructType(
        [
            StructField("event_time", TimestampType()),
            StructField("user_id", LongType()),
            StructField("value", DoubleType()),
        ]
    )
    rows = spark.readStream.schema(schema).option("maxFilesPerTrigger", 1).parquet(str(src))  # type: ignore[attr-defined]
    agg = (
        rows.withWatermark("event_time", "10 minutes")
        .groupBy(F.window("event_time", "1 hour"), "user_id")
        .agg(F.count(F.lit(1)).alias("n"), F.sum("value").alias("s"))
    )
    query = (
        agg.writeStream.outputMode("update")
        .format("noop")
        .option("checkpointLocation", str(ck))
        .trigger(processingTime="0 seconds")
        .start()
    )
    seen: dict[str, tuple[int, int]] = {}
    out: dict[str, list[float]] = {"latency_s": [], "cpu_s": [], "bytes": [], "wall_s": []}
    last_batch = -1
    for i, path in enumerate(files):
        cpu0, t0 = usage(os.getpid()).cpu_s, time.perf_counter()
        shutil.copy(path, src / f".{path.name}")
        os.rename(src / f".{path.name}", src / f"{i:06d}-{path.name}")
        query.processAllAvailable()
        wall, cpu = time.perf_counter() - t0, usage(os.getpid()).cpu_s - cpu0
        progress = [p for p in query.recentProgress if p.batchId > last_batch]
        last_batch = max([last_batch, *(p.batchId for p in progress)])
        data = [p for p in progress if p.numInputRows > 0]
        written = new_bytes(ck, seen)
        if i == 0:
            continue
        out["latency_s"].append(sum(p.durationMs["triggerExecution"] for p in data) / 1000)
        out["cpu_s"].append(cpu)
        out["wall_s"].append(wall)
        out["bytes"].append(float(written))
    peak = _peak_tree_rss(os.getpid())
    query.stop()
    spark.stop()  # type: ignore[attr-defined]
    shutil.rmtree(work, ignore_errors=True)
    return {**out, "peak_rss_bytes": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description="W4 Spark child (see state_store.py)")
    parser.add_argument("--provider", choices=sorted(PROVIDERS), required=True)
    parser.add_argument("--files", type=Path, nargs="+", required=True)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--memory", default="8g")
    args = parser.parse_args()
    report = run(args.files, args.provider, args.partitions, args.memory)
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
