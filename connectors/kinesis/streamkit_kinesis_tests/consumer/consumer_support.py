"""Helpers for the consumer tests: a recording processor, producing, lease-table reads."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamkit_kinesis.consumer import (
    BaseRecordProcessor,
    ConsumerConfig,
    InitialPosition,
)
from streamkit_kinesis.leases import DynamoDBLeaseStore, Lease, LeaseStoreError
from streamkit_kinesis.producer.producer import KinesisProducer
from streamkit_kinesis.testing.streams import unique

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from streamkit_kinesis.consumer import KinesisConsumer
    from streamkit_kinesis.leases import Checkpointer
    from streamkit_kinesis.types import ExtendedSequenceNumber, RecordBatch

    from streamkit.config import AwsEndpoint


@dataclass(frozen=True)
class Seen:
    """One record as a processor saw it."""

    shard_id: str
    sequence_number: str
    partition_key: str
    data: bytes


@dataclass
class Journal:
    """Everything the processors of one consumer saw, in processing order."""

    records: list[Seen] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)
    """``(callback, shard_id)`` in call order."""

    def by_shard(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for r in self.records:
            out.setdefault(r.shard_id, []).append(int(r.sequence_number))
        return out

    def payloads(self) -> list[bytes]:
        return [r.data for r in self.records]


class RecordingProcessor(BaseRecordProcessor):
    """Appends every record to a :class:`Journal`; checkpoints after every batch."""

    def __init__(self, journal: Journal, checkpoint_every_batch: bool = True) -> None:
        self.journal = journal
        self.checkpoint_every_batch = checkpoint_every_batch

    async def initialize(self, shard_id: str, start: ExtendedSequenceNumber) -> None:
        self.journal.calls.append(("initialize", shard_id))

    async def process_records(self, batch: RecordBatch, checkpointer: Checkpointer) -> None:
        self.journal.records.extend(
            Seen(batch.shard_id, r.sequence_number, r.partition_key, r.data) for r in batch.records
        )
        if self.checkpoint_every_batch:
            await checkpointer.checkpoint()

    async def lease_lost(self, shard_id: str) -> None:
        self.journal.calls.append(("lease_lost", shard_id))

    async def shard_ended(self, shard_id: str, checkpointer: Checkpointer) -> None:
        self.journal.calls.append(("shard_ended", shard_id))
        await checkpointer.checkpoint()

    async def shutdown_requested(self, shard_id: str, checkpointer: Checkpointer) -> None:
        self.journal.calls.append(("shutdown_requested", shard_id))
        await checkpointer.checkpoint()


def fast_config(stream: str, **overrides: Any) -> ConsumerConfig:
    """A consumer config with short intervals for tests (own app name = own lease table)."""
    values: dict[str, Any] = {
        "app_name": unique("app"),
        "stream": stream,
        "initial_position": InitialPosition.trim_horizon(),
        "failover_time": 3.0,
        "take_interval": 0.5,
        "idle_time": 0.2,
        "parent_poll_interval": 0.5,
        "shard_sync_interval": 5.0,
        "shard_refresh_interval": 2.0,
    }
    values.update(overrides)
    return ConsumerConfig(**values)


def payload(key: str, n: int) -> bytes:
    """``key:n`` — the per-key counter makes order checks easy."""
    return f"{key}:{n}".encode()


async def produce(
    endpoint: AwsEndpoint, stream: str, n: int, *, keys: int = 100, start: int = 0, tag: str = ""
) -> list[bytes]:
    """Write ``n`` records round-robin over ``keys`` partition keys; returns the payloads."""
    names = [f"{tag}key-{k}" for k in range(keys)]
    sent: list[bytes] = []
    async with KinesisProducer(endpoint, stream, linger_ms=20) as producer:
        for i in range(start, start + n):
            key = names[i % keys]
            data = payload(key, i // keys)
            await producer.put(data, key)
            sent.append(data)
    return sent


async def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> float:
    """Poll ``predicate`` until true; returns the seconds it took, fails after ``timeout``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)
    return time.monotonic() - started


async def wait_caught_up(
    consumer: KinesisConsumer,
    journal: Journal,
    tips: Mapping[str, int],
    timeout: float = 90.0,
    reads_after: int = 2,
) -> None:
    """Wait until the consumer is known to be caught up, so "no duplicates" can be asserted.

    Caught up: for every shard in ``tips`` (its last sequence number, read independently
    with plain boto3) the journal holds the tip, and every shard that has not ended has
    since made ``reads_after`` more GetRecords calls, so a re-read (a duplicate) would have
    been delivered by now. Events, not sleeps: the deadline only bounds a hung test.
    """

    def at_tips() -> bool:
        seen = journal.by_shard()
        return all(tip in seen.get(shard, ()) for shard, tip in tips.items())

    await wait_until(at_tips, timeout, f"the journal to reach the shard tips {dict(tips)}")
    ended = {shard for call, shard in journal.calls if call == "shard_ended"}
    reading = [shard for shard in tips if shard not in ended]
    base = {s: consumer.metrics().shard(s).get_records_calls for s in reading}

    def read_again() -> bool:
        m = consumer.metrics()
        return all(m.shard(s).get_records_calls >= base[s] + reads_after for s in reading)

    await wait_until(read_again, timeout, f"{reads_after} more reads of {reading}")


def tips_of(truth: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, int]:
    """The last sequence number of every non-empty shard in a plain boto3 read."""
    return {shard: int(rs[-1]["SequenceNumber"]) for shard, rs in truth.items() if rs}


async def leases(endpoint: AwsEndpoint, app_name: str) -> list[Lease]:
    """The lease table of ``app_name`` as it is now (plain reads, no consumer involved)."""
    return await DynamoDBLeaseStore(endpoint, app_name).list_leases()


def owners(table: Sequence[Lease]) -> dict[str, int]:
    """Unfinished leases per owner (``-`` for unowned)."""
    counts: dict[str, int] = {}
    for lease in table:
        if not lease.is_finished:
            owner = lease.lease_owner or "-"
            counts[owner] = counts.get(owner, 0) + 1
    return counts


async def drop_table(endpoint: AwsEndpoint, app_name: str) -> None:
    """Delete the lease table of ``app_name``."""
    await DynamoDBLeaseStore(endpoint, app_name).delete_table()


WORKER_SCRIPT = Path(__file__).with_name("consumer_worker_proc.py")


class WorkerProcess:
    """One ``consumer_worker_proc.py`` process and its record and event logs."""

    def __init__(
        self, endpoint: AwsEndpoint, stream: str, app: str, worker_id: str, tmp: Path, **opts: Any
    ) -> None:
        assert endpoint.url is not None
        self.worker_id = worker_id
        self.out = tmp / f"{worker_id}.records.jsonl"
        self.events_path = tmp / f"{worker_id}.events.jsonl"
        self.stderr = tmp / f"{worker_id}.stderr.log"
        cmd = [
            sys.executable, str(WORKER_SCRIPT), "--endpoint", endpoint.url, "--stream", stream,
            "--app", app, "--worker-id", worker_id, "--out", str(self.out),
            "--events", str(self.events_path),
        ]  # fmt: skip
        for key, value in opts.items():
            cmd += [f"--{key.replace('_', '-')}", str(value)]
        self._stderr = self.stderr.open("w")
        self.proc = subprocess.Popen(cmd, stdout=self._stderr, stderr=subprocess.STDOUT)

    def records(self) -> list[dict[str, Any]]:
        """Processed records so far (a line torn by SIGKILL is ignored)."""
        return _json_lines(self.out)

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Logged events so far, optionally of one kind."""
        found = _json_lines(self.events_path)
        return [e for e in found if kind is None or e["event"] == kind]

    def take_cycles(self) -> int:
        return len(self.events("take_cycle"))

    def signal(self, sig: int) -> float:
        """Send ``sig``; returns the wall-clock time it was sent."""
        sent = time.time()
        self.proc.send_signal(sig)
        return sent

    async def wait_exit(self, timeout: float) -> int:
        """Wait for the process to exit; returns its exit code."""
        await wait_until(lambda: self.proc.poll() is not None, timeout, f"{self.worker_id} exit")
        code = self.proc.returncode
        assert code is not None
        return code

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")

    def close(self) -> None:
        """Kill the process if it still runs (by its own PID)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._stderr.close()


def _json_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out: list[dict[str, Any]] = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # the last line of a killed writer
    return out


async def poll_table(
    endpoint: AwsEndpoint,
    app_name: str,
    predicate: Callable[[list[Lease]], bool],
    timeout: float,
    what: str,
    *,
    interval: float = 0.05,
) -> tuple[list[Lease], float]:
    """Read the lease table until ``predicate(table)``; returns it and the wall-clock time of
    the read that satisfied it (the read started at or before that time)."""
    store = DynamoDBLeaseStore(endpoint, app_name)
    deadline = time.monotonic() + timeout
    last: list[Lease] = []
    while time.monotonic() < deadline:
        try:
            last = await store.list_leases()
        except LeaseStoreError:
            last = []  # the table is not created yet
        if predicate(last):
            return last, time.time()
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; table: {last}")


class BackgroundProducer:
    """Writes ``per_tick`` records every ``tick`` seconds until stopped (payloads ``p<i>``)."""

    def __init__(
        self, endpoint: AwsEndpoint, stream: str, per_tick: int = 12, tick: float = 0.2
    ) -> None:
        self.sent: list[str] = []
        self._endpoint = endpoint
        self._stream = stream
        self._per_tick = per_tick
        self._tick = tick
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> list[str]:
        """Stop, flush, and return every payload written."""
        self._stop.set()
        if self._task is not None:
            await self._task
        return self.sent

    async def _run(self) -> None:
        async with KinesisProducer(self._endpoint, self._stream, linger_ms=10) as producer:
            while not self._stop.is_set():
                for _ in range(self._per_tick):
                    n = len(self.sent)
                    data = f"p{n}"
                    await producer.put(data.encode(), f"key-{n % 40}")
                    self.sent.append(data)
                await producer.flush()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self._tick)


def last_lease_writes(worker: WorkerProcess) -> dict[str, float]:
    """Per lease key, the time ``worker`` sent its last write of that lease which DynamoDB
    accepted (its ``lease_written`` events): another worker sees the lease expire no sooner
    than ``failover_time`` after it."""
    last: dict[str, float] = {}
    for e in worker.events("lease_written"):
        last[e["shard"]] = max(last.get(e["shard"], 0.0), e["sent"])
    return last
