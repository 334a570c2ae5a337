"""Per-shard watermarks survive ``kill -9`` (issue 18, point 5): a windowed count with a
watermark over a 4-shard Kinesis stream, in append and in update mode, into Parquet with a
checkpoint, run as a separate process (``window_crash_proc.py``), killed with SIGKILL six
(append) or eight (update) times while records keep arriving, then drained with
``available_now``. Every record is counted exactly once.

No record is late by construction: event time rises with the order of production, and
each shard receives its records in that order (one partition key and explicit hash key
per shard, so the producer keeps them in order), so every record is at or after the
largest event time its own shard had delivered before it. Under the default ``"min"``
policy (the slowest active shard holds the watermark) none can be dropped, however the
kills and restarts make the shards run ahead of each other. With one global maximum
(``watermark_policy("global")``, Spark's rule) a shard read ahead after a restart pushes
the watermark past the other shards' backlog, and those records are dropped as late.

The first records are one per shard at the earliest event times, and the first run waits
until they are committed, so every shard is known to the watermark (and restored from
the checkpoint after each kill) before any backlog exists. The last records are one per
shard a day later: they close every window of the data, so append mode emits all of
them; their own window stays open (update mode emits it).

The expected output is computed in plain Python from the records put: per 1-minute
window, the number of records and the sum of their values (each value is unique, so a
record counted twice or lost in the same window as another is seen too). Set
``STREAMKIT_CRASH_SEED`` to replay the same kill points.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import pyarrow.parquet as pq
import pytest
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.leases import DynamoDBLeaseStore
from streamkit_kinesis.producer.producer import KinesisProducer
from streamkit_kinesis.testing.streams import fresh_stream, unique

from streamkit_kinesis_tests.source.job_process import JobProcess

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack, pytest.mark.slow]

JOB = Path(__file__).with_name("window_crash_proc.py")
SHARDS = 4
EVENTS = 2000
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
STEP = timedelta(milliseconds=250)
"""Event time between consecutive records (each shard: one second per record)."""
LATER = timedelta(days=1)
"""Event time of the closing records after the data."""

Record = tuple[int, datetime, int]
"""(shard index, event time, value)."""
Counts = dict[datetime, tuple[int, int]]
"""1-minute window start -> (records, value sum)."""


def data_records() -> list[Record]:
    """Record ``i``: shard ``i % 4``, event time ``T0 + i * STEP``, value ``i + 1``."""
    return [(i % SHARDS, T0 + i * STEP, i + 1) for i in range(EVENTS)]


def closers() -> list[Record]:
    """One record per shard a day after the data, value 0."""
    return [(s, T0 + LATER, 0) for s in range(SHARDS)]


def expected(records: list[Record]) -> Counts:
    """Per 1-minute window start: (records, value sum), in plain Python."""
    out: Counts = {}
    for _, t, value in records:
        start = t.replace(second=0, microsecond=0)
        n, total = out.get(start, (0, 0))
        out[start] = (n + 1, total + value)
    return out


def payload(t: datetime, value: int) -> bytes:
    wire = {"event_time": t.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "action": "view",
            "user_id": "u", "value": value}  # fmt: skip
    return json.dumps(wire).encode()


async def produce(endpoint: AwsEndpoint, stream: str, keys: list[str], rs: list[Record]) -> None:
    """Put ``rs`` in order, each to its shard (one partition key and explicit hash key per
    shard: the producer keeps the order of records with one key)."""
    async with KinesisProducer(endpoint, stream, linger_ms=20) as producer:
        for shard, t, value in rs:
            await producer.put(payload(t, value), f"shard-{shard}", keys[shard])


def shard_hash_keys(endpoint: AwsEndpoint, stream: str) -> list[str]:
    """The starting hash key of each shard, in shard id order."""
    shards = kinesis_client(endpoint).list_shards(StreamName=stream)["Shards"]
    assert len(shards) == SHARDS
    ordered = sorted(shards, key=lambda s: s["ShardId"])
    return [s["HashKeyRange"]["StartingHashKey"] for s in ordered]


@dataclass
class Job(JobProcess):
    """One run of ``window_crash_proc.py``."""

    SCRIPT: ClassVar[Path] = JOB

    def rows(self) -> int:
        """Input rows of the batches this run committed (and reported)."""
        return sum(int(x.split()[3]) for x in self.lines if x.startswith("batch "))

    async def wait_for_rows(self, n: int, timeout: float) -> None:
        """Until this run committed batches of at least ``n`` input rows."""
        deadline = time.monotonic() + timeout
        while self.rows() < n:
            assert self.proc.returncode is None, f"job exited: {self.lines}"
            assert time.monotonic() < deadline, f"not {n} rows in {timeout}s: {self.lines}"
            await asyncio.sleep(0.02)

    async def kill(self, timeout: float = 60.0) -> None:
        """SIGKILL and reap it; the job must still be running."""
        assert self.proc.returncode is None, f"job exited by itself: {self.lines}"
        await super().kill(timeout)


def sink_counts(out: Path, mode: str) -> Counts:
    """The Parquet sink's final answer per window: append mode emits each window once (in
    any batch); update mode's latest emission of a window is its final count."""
    files = sorted(out.glob("batch-*.parquet"))  # batch ids are zero-padded
    got: Counts = {}
    for f in files:
        for row in pq.read_table(f).to_pylist():
            start = row["window"]["start"]
            assert mode == "update" or start not in got, f"window {start} emitted twice"
            got[start] = (row["n"], row["total"])
    return got


async def crash_then_drain(
    ep: AwsEndpoint, tmp_path: Path, *, mode: str, policy: str, kills: int, rng: random.Random
) -> tuple[Counts, list[str]]:
    """Run the scenario of the module docstring; returns the sink's counts and a line per
    run (rows committed before the kill)."""
    assert ep.url is not None
    records = data_records()
    seeds, rest = records[:SHARDS], records[SHARDS:]
    chunk = len(rest) // (2 * kills + 1)
    app, ck, out, log = unique("wm"), tmp_path / "ck", tmp_path / "out", tmp_path / "job.log"
    args = ["--endpoint", ep.url, "--app", app, "--checkpoint", str(ck), "--out", str(out),
            "--worker-id", "wm-job", "--mode", mode, "--policy", policy]  # fmt: skip
    runs: list[str] = []
    async with fresh_stream(ep, SHARDS, "wmcrash") as (stream, _):
        args += ["--stream", stream]
        keys = await asyncio.to_thread(shard_hash_keys, ep, stream)
        try:
            await produce(ep, stream, keys, seeds)
            for run in range(kills):
                # Half of this run's records are a backlog at its start, half arrive while
                # it runs; it is killed at a random point after its first committed batch,
                # while the second half is being put.
                before = rest[2 * run * chunk : (2 * run + 1) * chunk]
                during = rest[(2 * run + 1) * chunk : (2 * run + 2) * chunk]
                await produce(ep, stream, keys, before)
                job = await Job.start(args, log)
                await job.wait_for_rows(SHARDS if run == 0 else 1, timeout=240)
                producing = asyncio.create_task(produce(ep, stream, keys, during))
                await asyncio.sleep(rng.uniform(0.0, 1.5))
                await job.kill()
                await producing
                runs.append(f"run {run}: {job.rows()} rows committed")
            await produce(ep, stream, keys, rest[2 * kills * chunk :] + closers())
            last = await Job.start([*args, "--trigger", "available_now"], log)
            code = await last.finish(600)
            assert code == 0, log.read_text()[-3000:]
            runs.append(f"drain: {last.lines[-1]}")
        finally:
            await DynamoDBLeaseStore(ep, app).delete_table()
    return sink_counts(out, mode), runs


@pytest.mark.parametrize(("mode", "kills"), [("append", 6), ("update", 8)])
async def test_kill_9_then_drain_counts_every_record_once_per_shard_watermarks(
    localstack_endpoint: AwsEndpoint, tmp_path: Path, mode: str, kills: int
) -> None:
    seed = int(os.environ.get("STREAMKIT_CRASH_SEED", time.time_ns() % 1_000_000))
    print(f"seed {seed} (STREAMKIT_CRASH_SEED={seed} replays it)")
    got, runs = await crash_then_drain(
        localstack_endpoint, tmp_path, mode=mode, policy="min", kills=kills, rng=random.Random(seed)
    )
    print("; ".join(runs))
    truth = expected(data_records())
    if mode == "update":  # the closing records' window is still open: update emits it
        truth |= expected(closers())
    lost = {w: (truth[w][0] - got.get(w, (0, 0))[0]) for w in truth if got.get(w) != truth[w]}
    print(f"windows that differ (records missing): {lost}")
    assert got == truth
    assert sum(n for n, _ in got.values()) == EVENTS + (SHARDS if mode == "update" else 0)
