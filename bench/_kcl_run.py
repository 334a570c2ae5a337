"""The measured runs of ``kcl_peers.py``: one consumer application reads a whole stream.

Both readers run as fresh processes and are measured the same way from outside: each
shard's processor overwrites ``<out>/<shard id>.count`` (``<records> <payload bytes>``)
after every batch; the parent polls those files and reads the reader's process tree from
/proc (``_proc_tree``). Wall time runs from the launch to the poll that sees every record;
CPU seconds are those of the whole tree at that moment (JVM + Python children for the
KCL, the one Python process for streamkit), start-up included.

Run as a script (``--streamkit``), this is streamkit's measured child.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING

import _proc_tree

if TYPE_CHECKING:
    from streamkit_kinesis.leases import Checkpointer
    from streamkit_kinesis.types import RecordBatch

HERE = Path(__file__).resolve().parent
APP = HERE / "_kclpy_app"
KCLPY_VENV = HERE.parent / ".cache" / "servers" / "kclpy" / "venv"
KCLPY = "amazon-kclpy"
STREAMKIT = "streamkit consumer"
TIMEOUT_S = 600.0


@dataclass(frozen=True)
class PeerRun:
    """One read of the whole stream by one reader, measured from outside."""

    reader: str
    rep: int
    records: int
    wall_s: float
    """Launch of the process to the last record counted."""
    first_s: float
    """Launch to the first record counted (start-up: JVM or interpreter, leases, iterators)."""
    cpu_s: float
    """User + system CPU of the reader's process tree at the last record, start-up included."""
    cpu_first_s: float
    """The same at the first record counted: the start-up's share of ``cpu_s``."""
    peak_rss_bytes: int
    """Largest summed RSS of the tree seen by the 0.2 s samples."""
    processes: int

    @property
    def rate(self) -> float:
        return self.records / self.wall_s

    @property
    def steady_rate(self) -> float:
        return self.records / max(self.wall_s - self.first_s, 1e-9)

    @property
    def cpu_s_per_million(self) -> float:
        return self.cpu_s / self.records * 1e6

    @property
    def read_cpu_s_per_million(self) -> float:
        """CPU per million records after the first record counted (start-up left out)."""
        return (self.cpu_s - self.cpu_first_s) / self.records * 1e6


@dataclass(frozen=True)
class Target:
    """What to read and where: Kinesis on one server, the lease table on another."""

    stream: str
    kinesis_url: str
    dynamodb_url: str
    expected: int
    checkpoint_every: int


def _counted(out: Path) -> int:
    total = 0
    for path in out.glob("*.count"):
        text = path.read_text().split()
        total += int(text[0]) if text else 0
    return total


def _stop(proc: subprocess.Popen[bytes], pids: tuple[int, ...]) -> None:
    """Terminate the reader's tree by PID (children first), then reap the root."""
    for pid in reversed(pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL if pid != proc.pid else signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def watch(proc: subprocess.Popen[bytes], reader: str, rep: int, target: Target, *, out: Path,
          log: Path) -> PeerRun:
    """Poll counts and /proc until every record is counted; stop the tree; the run."""
    launched = time.perf_counter()
    first, cpu_first, peak, next_sample = float("nan"), float("nan"), 0, 0.0
    try:
        while True:
            now = time.perf_counter() - launched
            count = _counted(out)
            if count and math.isnan(first):
                first, cpu_first = now, _proc_tree.usage(proc.pid).cpu_s
            if count >= target.expected:
                break
            if now >= next_sample:
                peak = max(peak, _proc_tree.usage(proc.pid).rss_bytes)
                next_sample = now + 0.2
            if proc.poll() is not None or now > TIMEOUT_S:
                tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-5:])
                raise RuntimeError(f"{reader}: {count}/{target.expected} records after "
                                   f"{now:.0f} s (exit {proc.returncode}): {tail}")
            time.sleep(0.02)
        wall = time.perf_counter() - launched
        tree = _proc_tree.usage(proc.pid)
    finally:
        _stop(proc, _proc_tree.usage(proc.pid).pids)
    if count != target.expected:
        raise RuntimeError(f"{reader} counted {count} records, expected {target.expected}")
    return PeerRun(reader, rep, count, wall, first, tree.cpu_s, cpu_first,
                   max(peak, tree.rss_bytes), len(tree.pids))


CLIENT_VERSIONS = {
    "3x": "CLIENT_VERSION_CONFIG_3X",
    "2x": "CLIENT_VERSION_CONFIG_COMPATIBLE_WITH_2X",
}


def kclpy_command(target: Target, app: str, work: Path, idle_ms: int, *,
                  client_version: str = "3x") -> list[str]:
    """Write the daemon's properties into ``work``; the MultiLangDaemon command line."""
    executable = f"{KCLPY_VENV / 'bin' / 'python'} {APP / 'processor.py'}"
    text = Template((APP / "app.properties.template").read_text()).substitute(
        executable=executable, stream=target.stream, app=app, idle_ms=idle_ms,
        client_version=CLIENT_VERSIONS[client_version],
        kinesis_endpoint=target.kinesis_url, dynamodb_endpoint=target.dynamodb_url,
    )
    props = work / "app.properties"
    props.write_text(text)
    jars = next((KCLPY_VENV / "lib").glob("python3*/site-packages/amazon_kclpy/jars"))
    return ["java", "-cp", f"{jars}/*", "software.amazon.kinesis.multilang.MultiLangDaemon",
            "--properties-file", str(props)]


def run_kclpy(target: Target, rep: int, app: str, work: Path, *, idle_ms: int,
              client_version: str = "3x") -> PeerRun:
    """One MultiLangDaemon (KCL 3.x or its 2.x-compatible mode), counting processor, new app."""
    out = work / "counts"
    out.mkdir(parents=True)
    env = os.environ | {
        "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
        "KCLPY_BENCH_OUT": str(out), "KCLPY_BENCH_CHECKPOINT_EVERY": str(target.checkpoint_every),
    }
    log = work / "daemon.log"
    with log.open("wb") as sink:
        command = kclpy_command(target, app, work, idle_ms, client_version=client_version)
        proc = subprocess.Popen(command, cwd=work, env=env,
                                stdout=sink, stderr=subprocess.STDOUT)
        return watch(proc, KCLPY, rep, target, out=out, log=log)


def run_streamkit(target: Target, rep: int, app: str, work: Path) -> PeerRun:
    """streamkit's KinesisConsumer in a fresh interpreter, default settings, fresh app."""
    out = work / "counts"
    out.mkdir(parents=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--streamkit", "--out", str(out),
           "--app", app, "--stream", target.stream, "--kinesis-url", target.kinesis_url,
           "--dynamodb-url", target.dynamodb_url, "--every", str(target.checkpoint_every)]
    log = work / "streamkit.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(cmd, cwd=HERE, stdout=sink, stderr=subprocess.STDOUT)
        return watch(proc, STREAMKIT, rep, target, out=out, log=log)


async def _streamkit_child(args: argparse.Namespace) -> None:
    from streamkit_kinesis.consumer import (
        BaseRecordProcessor,
        ConsumerConfig,
        InitialPosition,
        KinesisConsumer,
    )
    from streamkit_kinesis.leases import DynamoDBLeaseStore

    from streamkit.config import AwsEndpoint

    out: Path = args.out
    every: int = args.every

    class Counting(BaseRecordProcessor):
        """Counts records and payload bytes; checkpoints every ``every`` records."""

        def __init__(self) -> None:
            self.records = self.payload_bytes = self.since = 0

        async def process_records(self, batch: RecordBatch, checkpointer: Checkpointer) -> None:
            if not batch.records:
                return
            self.records += len(batch.records)
            self.payload_bytes += sum(len(r.data) for r in batch.records)
            self.since += len(batch.records)
            if self.since >= every:
                await checkpointer.checkpoint()
                self.since = 0
            (out / f"{batch.shard_id}.count").write_text(f"{self.records} {self.payload_bytes}")

    kinesis = AwsEndpoint(args.kinesis_url, access_key_id="test", secret_access_key="test")
    dynamodb = AwsEndpoint(args.dynamodb_url, access_key_id="test", secret_access_key="test")
    config = ConsumerConfig(app_name=args.app, stream=args.stream,
                            initial_position=InitialPosition.trim_horizon())
    consumer = KinesisConsumer(config, kinesis, lease_store=DynamoDBLeaseStore(dynamodb, args.app))
    await consumer.run(Counting)


def main() -> None:
    p = argparse.ArgumentParser(description="streamkit's measured child for kcl_peers.py")
    p.add_argument("--streamkit", action="store_true", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--app", required=True)
    p.add_argument("--stream", required=True)
    p.add_argument("--kinesis-url", required=True)
    p.add_argument("--dynamodb-url", required=True)
    p.add_argument("--every", type=int, required=True)
    asyncio.run(_streamkit_child(p.parse_args()))


if __name__ == "__main__":
    main()
