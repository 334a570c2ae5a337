"""A streaming query killed (SIGKILL) after its sinks wrote batch N but before ``commits/N``
restarts from its S3 checkpoint and leaves every input row exactly once in the Parquet and
JSON output on LocalStack S3.

The query (this file run as a script) reads NDJSON files from an S3 prefix, at most
``--per-trigger`` files per batch, and writes each batch to a Parquet sink and a JSON sink
on S3, both partitioned by ``part``, checkpointing to S3. After both sinks acknowledged
batch ``--crash-batch`` it prints ``acked N`` and blocks; the test then kills it with
SIGKILL, so batch N's files are durable and its commit is not. The restart re-runs batch
N. With a smaller ``--per-trigger`` on restart, the re-run of batch N holds fewer files
(partitions) than the first attempt, so the sinks must delete the first attempt's extra
files or the rows of those input files would show up twice (again in batch N+1).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.config import AwsEndpoint
from streamkit.streaming.contracts import Guarantee
from streamkit.streaming.sinks import JsonSink, ParquetSink

FILES = 6
ROWS_PER_FILE = 4
SCHEMA = pa.schema([("id", pa.int64()), ("part", pa.string()), ("at", pa.string())])


class AckThenHang:
    """Writes each batch to both sinks; after batch ``crash_batch`` prints ``acked N`` and
    blocks until killed (files durable, ``commits/N`` never written)."""

    guarantee: ClassVar[Guarantee] = Guarantee.EXACTLY_ONCE

    def __init__(self, sinks: list[ParquetSink | JsonSink], crash_batch: int) -> None:
        self.sinks, self.crash_batch = sinks, crash_batch

    async def add_batch(self, batch_id: int, table: pa.Table) -> None:
        for sink in self.sinks:
            await sink.add_batch(batch_id, table)
        print(f"acked {batch_id} rows {table.num_rows}", flush=True)
        if batch_id == self.crash_batch:
            time.sleep(3600)  # the test sends SIGKILL now

    async def close(self) -> None:
        for sink in self.sinks:
            await sink.close()


def child(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    for name in ("endpoint", "input", "checkpoint", "parquet", "json"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--per-trigger", type=int, required=True)
    p.add_argument("--crash-batch", type=int, default=-1)
    args = p.parse_args(argv)
    sk.configure(AwsEndpoint.local(args.endpoint))
    df = sk.read_stream.files(
        args.input, format="json", schema=SCHEMA, max_files_per_trigger=args.per_trigger
    )
    sinks: list[ParquetSink | JsonSink] = [
        ParquetSink(args.parquet, partition_by="part"),
        JsonSink(args.json, partition_by="part"),
    ]
    writer = df.write_stream.checkpoint(args.checkpoint).trigger(available_now=True)
    query = writer.to(AckThenHang(sinks, args.crash_batch)).start()
    query.await_termination()
    print("done", flush=True)
    return 0


# --- the test ----------------------------------------------------------------------------


def put_inputs(endpoint: AwsEndpoint, bucket: str) -> None:
    """File ``i`` holds ids ``4i..4i+3``, all with ``part`` even or odd like ``i``."""
    s3 = endpoint.client("s3")
    for i in range(FILES):
        rows = [
            {"id": i * ROWS_PER_FILE + k, "part": ("even", "odd")[i % 2], "at": f"t{i}"}
            for k in range(ROWS_PER_FILE)
        ]
        body = "".join(json.dumps(r) + "\n" for r in rows).encode()
        s3.put_object(Bucket=bucket, Key=f"in/f-{i}.json", Body=body)


def run_job(args: list[str], log: Path, kill_after_ack: int | None) -> list[str]:
    """Run the job; with ``kill_after_ack``, SIGKILL it once it printed ``acked N``."""
    cmd = [sys.executable, str(Path(__file__)), *args]
    with log.open("ab") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
    watchdog = threading.Timer(120, proc.kill)
    watchdog.start()
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.strip())
            if kill_after_ack is not None and line.startswith(f"acked {kill_after_ack} "):
                os.kill(proc.pid, signal.SIGKILL)
                break
        code = proc.wait(timeout=60)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    want = -signal.SIGKILL if kill_after_ack is not None else 0
    assert code == want, f"exit {code}, stdout {lines}, stderr in {log}: {log.read_text()[-2000:]}"
    return lines


def ids(df: sk.DataFrame) -> list[int]:
    return sorted(df.to_arrow().column("id").to_pylist())


@pytest.mark.integration
@pytest.mark.localstack
@pytest.mark.parametrize("restart_per_trigger", [2, 1], ids=["same-batches", "smaller-batches"])
def test_restart_after_crash_before_commit_leaves_no_duplicates(
    configured: AwsEndpoint, bucket: str, tmp_path: Path, restart_per_trigger: int
) -> None:
    from streamkit.testing.s3 import s3_keys  # not at top: this file is also the job

    put_inputs(configured, bucket)
    root = f"s3://{bucket}"
    common = [
        "--endpoint", str(configured.url), "--input", f"{root}/in",
        "--checkpoint", f"{root}/ckpt", "--parquet", f"{root}/pq", "--json", f"{root}/js",
    ]  # fmt: skip
    log = tmp_path / "job.log"
    first = run_job([*common, "--per-trigger", "2", "--crash-batch", "1"], log, kill_after_ack=1)
    assert first == ["acked 0 rows 8", "acked 1 rows 8"]
    checkpoint = s3_keys(configured, bucket, "ckpt/")
    assert "offsets/000000000001" in checkpoint
    assert "commits/000000000000" in checkpoint
    assert "commits/000000000001" not in checkpoint  # killed between the files and the commit
    assert ids(sk.read.parquet(f"{root}/pq")) == list(range(16))  # batch 1 files are there

    rest = run_job([*common, "--per-trigger", str(restart_per_trigger)], log, kill_after_ack=None)
    left = FILES - 2  # the input files after committed batch 0 (files 0 and 1)
    per = restart_per_trigger
    rerun = [f"acked {1 + b} rows {per * ROWS_PER_FILE}" for b in range(left // per)]
    assert rest == [*rerun, "done"]  # batch 1 again (same id), then the rest
    everything = list(range(FILES * ROWS_PER_FILE))
    assert ids(sk.read.parquet(f"{root}/pq")) == everything
    assert ids(sk.read.json(f"{root}/js")) == everything
    parts = sorted(
        {
            f"{b}/{k.split('/')[0]}"
            for b in ("pq", "js")
            for k in s3_keys(configured, bucket, f"{b}/")
            if "batch-000000001" in k
        }
    )
    want = ["part=even", "part=odd"] if restart_per_trigger == 2 else ["part=even"]
    assert parts == sorted(f"{b}/{p}" for b in ("pq", "js") for p in want)
    assert "commits/000000000001" in s3_keys(configured, bucket, "ckpt/")


if __name__ == "__main__":
    sys.exit(child(sys.argv[1:]))
