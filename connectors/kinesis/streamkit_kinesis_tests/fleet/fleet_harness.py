"""What the fleet integration tests share: worker processes (``fleet_job.py`` with
``STREAMKIT_FLEET=1``), the records they read, the ground truth computed with DuckDB from
the records put, and the sink read back as one Parquet dataset (pyarrow, no streamkit code).

Every wait is on an observable event (a status file, the sink's rows, a process exit)
under a generous deadline; nothing sleeps a fixed time to let something happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.leases import LEADER_LEASE_KEY, DynamoDBLeaseStore, LeaseStoreError
from streamkit_kinesis.testing.streams import fresh_stream, unique

from streamkit.testing.events import SCHEMA, make_events

if TYPE_CHECKING:
    from streamkit_kinesis.admin import StreamAdmin

    from streamkit.config import AwsEndpoint

JOB = Path(__file__).with_name("fleet_job.py")
LATER = timedelta(days=1)
"""Event time of the closing records, after the data's 30 minutes."""

Row = tuple[int, str, int, int, float]
"""(window start in µs since the epoch, action, count, sum, avg)."""


@dataclass
class Worker:
    """One worker process of the fleet, its stdout lines collected."""

    name: str
    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, name: str, args: list[str], log: Path, **env: str) -> Worker:
        environ = {**os.environ, "STREAMKIT_FLEET": "1", "STREAMKIT_WORKER_ID": name, **env}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(JOB), *args, env=environ,
            stdout=asyncio.subprocess.PIPE, stderr=log.open("ab"),
        )  # fmt: skip
        worker = cls(name, proc)
        worker.reader = asyncio.create_task(worker._read())
        return worker

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode().strip())

    async def terminate(self, timeout: float = 180.0) -> int:
        """SIGTERM (graceful stop) and wait for the exit; the exit code. A worker still
        running after ``timeout`` is asked for its threads' stacks (SIGUSR1, into the
        fleet's log, shown by :meth:`Fleet.stop`), then killed: the code is then -1."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await self.wait(timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGUSR1)
            await asyncio.sleep(2.0)
            await self.kill()
            return -1

    async def kill(self) -> None:
        """SIGKILL and reap."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        await self.wait(60.0)

    async def wait(self, timeout: float) -> int:
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        if self.reader is not None:
            await self.reader
        return code


def payloads(n: int, seed: int, *, ordered: bool = False) -> list[bytes]:
    """``n`` events (JSON) over 30 minutes, 5 actions (:func:`make_events`); ``ordered``:
    sorted by event time, so every shard receives its records in event-time order."""
    data = [data for data, _ in make_events(n, seed)[1]]
    return sorted(data, key=lambda d: json.loads(d)["event_time"]) if ordered else data


def closers() -> list[bytes]:
    """One event a day after the data: put to every shard, it closes every data window."""
    t = (datetime(2024, 5, 1, 12, 0, tzinfo=UTC) + LATER).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return [json.dumps({"event_time": t, "action": "view", "user_id": "c", "value": 0}).encode()]


def put_random_keys(endpoint: AwsEndpoint, stream: str, data: list[bytes]) -> dict[str, int]:
    """PutRecords with a random partition key per record (every key on every shard);
    returns the last sequence number put to each shard."""
    client = kinesis_client(endpoint)
    last: dict[str, int] = {}
    for start in range(0, len(data), 500):
        chunk = data[start : start + 500]
        out = client.put_records(
            StreamName=stream,
            Records=[{"Data": d, "PartitionKey": uuid.uuid4().hex} for d in chunk],
        )
        assert out.get("FailedRecordCount", 0) == 0, out
        for r in out["Records"]:
            last[r["ShardId"]] = max(last.get(r["ShardId"], 0), int(r["SequenceNumber"]))
    return last


async def checkpointed(endpoint: AwsEndpoint, app: str, last: dict[str, int]) -> bool:
    """True once every source lease of ``app`` is checkpointed at or after ``last``."""
    try:
        found = await DynamoDBLeaseStore(endpoint, app).list_leases()
    except LeaseStoreError:  # the first worker has not created the table yet
        return False
    leases = {x.lease_key: x.checkpoint for x in found}
    for shard, seq in last.items():
        cp = leases.get(shard)
        if cp is None or cp.is_sentinel or cp.as_int() < seq:
            return False
    return True


def newest(*lasts: dict[str, int]) -> dict[str, int]:
    """Per shard, the largest sequence number any of ``lasts`` (``put_*`` answers) holds."""
    return {s: max(last.get(s, 0) for last in lasts) for s in {s for last in lasts for s in last}}


def put_every_shard(
    endpoint: AwsEndpoint, stream: str, data: bytes, skip: frozenset[str] = frozenset()
) -> None:
    """``data`` once to every shard but ``skip`` (ExplicitHashKey = its first hash key)."""
    client = kinesis_client(endpoint)
    for shard in client.list_shards(StreamName=stream)["Shards"]:
        if shard["ShardId"] in skip:
            continue
        key = shard["HashKeyRange"]["StartingHashKey"]
        out = client.put_records(
            StreamName=stream, Records=[{"Data": data, "PartitionKey": "c", "ExplicitHashKey": key}]
        )
        assert out.get("FailedRecordCount", 0) == 0, out


def truth(data: list[bytes]) -> list[Row]:
    """The expected result, computed by DuckDB from the records put."""
    rows = [json.loads(d) for d in data]
    table = pa.Table.from_pylist(
        [{**r, "event_time": datetime.fromisoformat(r["event_time"])} for r in rows],
        schema=SCHEMA,
    )
    con = duckdb.connect()
    con.register("events", table)
    out = con.execute(
        "SELECT epoch_us(time_bucket(INTERVAL 1 minute, event_time)) AS start, action, "
        "count(*) AS n, sum(value) AS total, avg(value) AS mean "
        "FROM events GROUP BY ALL ORDER BY start, action"
    ).fetchall()
    return [(int(s), str(a), int(n), int(t), float(m)) for s, a, n, t, m in out]


def sink_rows(out: Path) -> list[Row]:
    """The Parquet sink read as one dataset (every task's files), sorted."""
    if not out.exists() or not any(out.glob("*.parquet")):
        return []
    table = ds.dataset(str(out), format="parquet").to_table()
    rows = []
    for r in table.to_pylist():
        start = r["window"]["start"]
        us = int(start.timestamp()) * 1_000_000 + start.microsecond
        rows.append((us, str(r["action"]), int(r["n"]), int(r["total"]), float(r["mean"])))
    return sorted(rows)


Event = tuple[int, str, str | None, int]
"""(event time in µs, action, user id, value): a row of a query without aggregation."""


STATIC = pa.table({
    "action": ["view", "click", "cart", "buy"],  # no "share": unmatched in a left join
    "kind": ["browse", "browse", "intent", "intent"],
    "weight": [1, 2, 3, 5],
})  # fmt: skip
"""The static side of the fleet jobs' stream-static joins (``fleet_job.py``): a kind and a
weight per action, none for ``share``."""


def events_table(data: list[bytes]) -> pa.Table:
    """The records put, decoded as the job's schema."""
    rows = [json.loads(d) for d in data]
    return pa.Table.from_pylist(
        [{**r, "event_time": datetime.fromisoformat(r["event_time"])} for r in rows],
        schema=SCHEMA,
    )


def sink_events(out: Path) -> list[Event]:
    """The Parquet sink of a query without aggregation read as one dataset (pyarrow),
    sorted, duplicates kept."""
    if not out.exists() or not any(out.glob("*.parquet")):
        return []
    rows = []
    for r in ds.dataset(str(out), format="parquet").to_table().to_pylist():
        t = r["event_time"]
        us = int(t.timestamp()) * 1_000_000 + t.microsecond
        rows.append((us, str(r["action"]), r["user_id"], int(r["value"])))
    return sorted(rows)


def same(got: list[Row], want: list[Row]) -> bool:
    """Equal rows (averages to 1e-9 relative)."""
    return len(got) == len(want) and all(
        g[:4] == w[:4] and abs(g[4] - w[4]) <= 1e-9 * max(1.0, abs(w[4]))
        for g, w in zip(got, want, strict=True)
    )


def statuses(root: Path) -> list[dict[str, Any]]:
    """Every task status file of the fleet."""
    folder = root / "fleet" / "tasks"
    out = []
    for f in sorted(folder.glob("*.json")) if folder.exists() else []:
        with contextlib.suppress(ValueError):
            out.append(json.loads(f.read_text()))
    return out


async def until(what: str, check: Callable[[], Awaitable[bool] | bool], timeout: float) -> None:
    """Poll ``check`` every 0.2 s until true; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.2)


async def drop_fleet_tables(endpoint: AwsEndpoint, app: str) -> None:
    """Delete the lease tables (a join's ``<app>-right`` too) and the exchange stream of
    ``app``."""
    for table in (app, f"{app}-exchange", f"{app}-right"):
        with contextlib.suppress(Exception):
            await DynamoDBLeaseStore(endpoint, table).delete_table()
    with contextlib.suppress(Exception):
        kinesis_client(endpoint).delete_stream(StreamName=f"{app}-exchange")


class Fleet:
    """The workers of one app name, reading one stream into one sink."""

    def __init__(self, ep: AwsEndpoint, stream: str, app: str, tmp: Path, *extra: str) -> None:
        assert ep.url is not None
        self.ep, self.app, self.stream = ep, app, stream
        self._admin: StreamAdmin | None = None
        self.root, self.out, self.log = tmp / f"{app}-ck", tmp / f"{app}-out", tmp / f"{app}.log"
        self.args = ["--endpoint", ep.url, "--stream", stream, "--app", app,
                     "--checkpoint", str(self.root), "--out", str(self.out), *extra]  # fmt: skip
        self.workers: list[Worker] = []

    @property
    def admin(self) -> StreamAdmin:
        """The admin of the fleet's stream (a fleet of :func:`fleet_on_fresh_stream`)."""
        assert self._admin is not None, "only a fleet of fleet_on_fresh_stream has one"
        return self._admin

    async def add(self, name: str, **env: str) -> Worker:
        worker = await Worker.start(name, self.args, self.log, **env)
        self.workers.append(worker)
        return worker

    async def stop(self) -> None:
        """SIGTERM every live worker; each must exit 0."""
        live = [w for w in self.workers if w.proc.returncode is None]
        codes = await asyncio.gather(*(w.terminate() for w in live))
        assert codes == [0] * len(live), self.tail(20_000)

    async def kill_all(self) -> None:
        await asyncio.gather(*(w.kill() for w in self.workers))

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text()[-chars:] if self.log.exists() else "(no log)"

    async def read_all(self, last: dict[str, int]) -> None:
        """Wait until every source lease is checkpointed at its shard's last record."""

        async def read_all() -> bool:
            self.check_alive()
            return await checkpointed(self.ep, self.app, last)

        await until(f"{self.app}: every source shard read", read_all, 420)

    def check_alive(self) -> None:
        """No worker failed: each runs, was SIGKILLed, or stopped gracefully (exit 0)."""
        dead = [w for w in self.workers if w.proc.returncode not in (None, 0, -9)]
        assert not dead, (
            f"workers exited: {[(w.name, w.proc.returncode) for w in dead]}\n{self.tail()}"
        )


async def close_and_collect(
    ep: AwsEndpoint, stream: str, fleets: list[Fleet], want: int, skip: frozenset[str] = frozenset()
) -> None:
    """Put the closing records (not to ``skip``), then wait until every fleet's sink holds
    ``want`` rows."""
    await asyncio.to_thread(put_every_shard, ep, stream, closers()[0], skip)
    for fleet in fleets:

        def full(f: Fleet = fleet) -> bool:
            f.check_alive()
            return len(sink_rows(f.out)) >= want

        await until(f"{fleet.app}: {want} windows in the sink", full, 420)


async def lease_owners(ep: AwsEndpoint, table: str) -> list[str | None]:
    """The owner of each shard lease of lease table ``table`` (the leader lease left out;
    none before the table exists)."""
    try:
        leases = await DynamoDBLeaseStore(ep, table).list_leases()
    except LeaseStoreError:
        return []
    return [x.lease_owner for x in leases if x.lease_key != LEADER_LEASE_KEY]


async def leases_of(ep: AwsEndpoint, table: str, worker: str) -> int:
    """Shard leases of lease table ``table`` that ``worker`` owns."""
    return (await lease_owners(ep, table)).count(worker)


async def victim_then_successor(ep: AwsEndpoint, fleet: Fleet, data: list[bytes]) -> None:
    """A worker ``victim`` (SIGKILLed between its second source put and that checkpoint)
    beside ``w1``; once the victim holds two source leases, half of ``data`` put; once it
    is dead, the rest put and a ``successor``
    started; returns once the fleet has read every record put, then closes each shard's
    windows (:func:`closers`)."""
    half = len(data) // 2
    victim = await fleet.add("victim", STREAMKIT_FLEET_FAULT="kill_before_checkpoint:2")
    await fleet.add("w1")

    async def two() -> bool:  # so it puts two source batches of the first half (holding
        fleet.check_alive()  # one shard, one read can take all its records: no kill)
        return await leases_of(ep, fleet.app, "victim") >= 2

    await until("two source leases of the victim", two, 300)
    last = await asyncio.to_thread(put_random_keys, ep, fleet.stream, data[:half])
    await until("the victim's kill", lambda: victim.proc.returncode is not None, 300)
    assert victim.proc.returncode == -9, fleet.tail()
    more = await asyncio.to_thread(put_random_keys, ep, fleet.stream, data[half:])
    await fleet.add("successor")
    await fleet.read_all(newest(last, more))
    await asyncio.to_thread(put_every_shard, ep, fleet.stream, closers()[0])


@contextlib.asynccontextmanager
async def fleet_on_fresh_stream(
    ep: AwsEndpoint, tmp: Path, shards: int, prefix: str, *extra: str
) -> AsyncIterator[Fleet]:
    """A fleet (app name ``unique(prefix)``, job arguments ``extra``, no worker yet) on a
    new stream of ``shards`` shards (:attr:`Fleet.stream`, :attr:`Fleet.admin`). On exit,
    whatever happened: every worker SIGKILLed (a stopped one too), the fleet's lease
    tables and exchange stream dropped, the stream deleted."""
    async with fresh_stream(ep, shards, prefix) as (stream, admin):
        fleet = Fleet(ep, stream, unique(prefix), tmp, *extra)
        fleet._admin = admin
        try:
            yield fleet
        finally:
            await fleet.kill_all()
            await drop_fleet_tables(ep, fleet.app)
