"""Issue 14: a zombie aggregation task is fenced (LocalStack, worker processes running
``fleet_job.py``).

A worker alone reads the records; when the closing records make an aggregation task emit
its windows, the worker stops itself (SIGSTOP, ``STREAMKIT_FLEET_FAULT=stop_before_commit``)
in that batch after staging the rows, ``state/N`` and ``commits/N`` in its epoch's folder,
just before the fence's commit: a zombie owner, as after a GC or VM pause longer than the
failover time. A second worker takes every lease over, claims the task with a higher epoch
and writes the batch itself. Then the zombie is continued (SIGCONT) and finishes its batch:
its commit is refused (the refusal is in its log), no sink file of the task changes and
none appears, the fence still names the heir, and the sink equals DuckDB over the records
put. Every wait is on an observable event (the zombie's stdout and process state, sink
files, the log); deadlines are generous.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from streamkit_kinesis.leases import DynamoDBLeaseStore
from streamkit_kinesis.testing.streams import fresh_stream, unique

from streamkit_kinesis_tests.fleet.fleet_harness import (
    Fleet,
    Worker,
    closers,
    drop_fleet_tables,
    payloads,
    put_every_shard,
    put_random_keys,
    same,
    sink_rows,
    truth,
    until,
)

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack, pytest.mark.slow]

SHARDS = 4
EVENTS = 2000


def _state(pid: int) -> str:
    """The process state letter from /proc (``T``: stopped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def _stopped_at(worker: Worker) -> tuple[str, int] | None:
    """(exchange shard, batch id) the fault hook stopped ``worker`` in, once it printed it."""
    for line in worker.lines:
        if line.startswith("fault: stopped "):
            shard, bid = line.split()[2:4]
            return shard, int(bid)
    return None


def _task_files(out: Path, shard: str) -> dict[str, tuple[int, int, str]]:
    """Every sink file of the task: name -> (inode, mtime ns, sha256)."""
    files = {}
    for f in sorted(out.glob(f"part-{shard}-*")):
        st = f.stat()
        files[f.name] = (st.st_ino, st.st_mtime_ns, hashlib.sha256(f.read_bytes()).hexdigest())
    return files


def _batch_of(name: str, shard: str) -> int:
    return int(name[len(f"part-{shard}-") :].split("-", maxsplit=1)[0])


async def _zombie_stops(fleet: Fleet, zombie: Worker) -> tuple[str, int]:
    """Wait until the fault hook stopped ``zombie``; the shard and batch it stopped in."""

    def stopped() -> bool:
        fleet.check_alive()
        return _stopped_at(zombie) is not None and _state(zombie.proc.pid) == "T"

    await until("the zombie stopped before its commit", stopped, 300)
    where = _stopped_at(zombie)
    assert where is not None
    return where


async def _heir_writes(fleet: Fleet, heir: Worker, shard: str, bid: int) -> None:
    """Wait until the heir wrote batch ``bid`` (or a later one) of ``shard`` to the sink."""

    def wrote() -> bool:
        fleet.check_alive()
        return any(_batch_of(n, shard) >= bid for n in _task_files(fleet.out, shard))

    try:
        await until(f"the heir's batch {bid} of {shard} in the sink", wrote, 300)
    except AssertionError as e:
        leases = await DynamoDBLeaseStore(fleet.ep, f"{fleet.app}-exchange").list_leases()
        heir.proc.send_signal(signal.SIGUSR1)
        await asyncio.sleep(3.0)
        raise AssertionError(f"{e}\nexchange leases: {leases}\n{fleet.tail(30_000)}") from None


async def _zombie_resumes(fleet: Fleet, zombie: Worker, shard: str, bid: int) -> None:
    """SIGCONT the zombie; once its commit attempt is over, nothing of it is visible."""
    fence = fleet.root / "exchange" / shard / "fence"
    before = _task_files(fleet.out, shard)
    claimed = json.loads(fence.read_text())
    assert claimed["owner"] == "heir", claimed
    marker = f"exchange/{shard}: batch {bid} of epoch"
    os.kill(zombie.proc.pid, signal.SIGCONT)

    def attempt_over() -> bool:
        """The zombie ran on: its refusal is logged, or (unfenced) it wrote the sink or
        the fence."""
        fleet.check_alive()
        resumed = any(line.startswith("fault: resumed") for line in zombie.lines)
        refused = marker in fleet.tail(10**7)
        taken = json.loads(fence.read_text())["owner"] != "heir"
        return resumed and (refused or taken or _task_files(fleet.out, shard) != before)

    await until("the zombie's commit attempt", attempt_over, 300)
    after = _task_files(fleet.out, shard)
    changed = {n for n in before if after.get(n) != before[n]}
    added = {n for n in set(after) - set(before) if _batch_of(n, shard) <= bid}
    assert not changed, f"the zombie rewrote sink files {changed}"
    assert not added, f"the zombie wrote sink files {added}"
    now = json.loads(fence.read_text())
    assert (now["owner"], now["epoch"]) == ("heir", claimed["epoch"]), (claimed, now)
    assert marker in fleet.tail(10**7), "no refusal of the zombie's commit in the log"


async def test_zombie_aggregation_task_is_fenced(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    ep = localstack_endpoint
    data = payloads(EVENTS, seed=1414)
    want = truth(data)
    async with fresh_stream(ep, SHARDS, "fence") as (stream, _):
        fleet = Fleet(ep, stream, unique("ff"), tmp_path)
        try:
            last = await asyncio.to_thread(put_random_keys, ep, stream, data)
            zombie = await fleet.add("zombie", STREAMKIT_FLEET_FAULT="stop_before_commit")
            await fleet.read_all(last)
            await asyncio.to_thread(put_every_shard, ep, stream, closers()[0])
            shard, bid = await _zombie_stops(fleet, zombie)
            heir = await fleet.add("heir")
            # input for the heir's first batch of the task: the zombie may have stopped in
            # a batch without input, which a restored task does not owe (same event time
            # as the first closers: the watermark does not move, the truth is unchanged)
            await asyncio.to_thread(put_every_shard, ep, stream, closers()[0])
            await _heir_writes(fleet, heir, shard, bid)
            await _zombie_resumes(fleet, zombie, shard, bid)

            def full() -> bool:
                fleet.check_alive()
                return len(sink_rows(fleet.out)) >= len(want)

            await until("every window in the sink", full, 420)
            await fleet.stop()
        finally:
            await fleet.kill_all()  # SIGKILL ends a stopped process too
            await drop_fleet_tables(ep, fleet.app)
    got = sink_rows(fleet.out)
    assert same(got, want), f"{len(got)} rows vs {len(want)}: {sorted(set(got) ^ set(want))[:10]}"
