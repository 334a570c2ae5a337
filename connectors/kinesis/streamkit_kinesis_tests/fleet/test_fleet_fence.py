"""Issue 14: a zombie aggregation task is fenced (LocalStack, worker processes running
``fleet_job.py``).

A worker alone reads the records; when the closing records make an aggregation task emit
its windows, the worker stops itself (SIGSTOP, ``STREAMKIT_FLEET_FAULT=stop_before_commit``)
in that batch after staging the rows, ``state/N`` and ``commits/N`` in its epoch's folder,
just before the fence's commit: a zombie owner, as after a GC or VM pause longer than the
failover time. A second worker takes every lease over, claims the task with a higher epoch
and writes the batch itself. Then the zombie is continued (SIGCONT) and finishes its batch:
its commit is refused (the refusal, naming its stale epoch, is in the log), the task's
sink files up to that batch keep their rows and none is added, the stale epoch never
holds the fence again, and the sink equals DuckDB over the records put. Every wait is on
an observable event (the zombie's stdout and process state, sink
files, the log); deadlines are generous.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq
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


def _stopped_at(worker: Worker) -> tuple[str, int, int] | None:
    """(exchange shard, batch id, epoch) the fault hook stopped ``worker`` in, once printed."""
    for line in worker.lines:
        if line.startswith("fault: stopped "):
            shard, bid, epoch = line.split()[2:5]
            return shard, int(bid), int(epoch)
    return None


def _task_files(out: Path, shard: str, upto: int | None = None) -> dict[str, list[Any]]:
    """The task's sink files (of batches up to ``upto``): name -> its rows, sorted."""
    files = {}
    for f in sorted(out.glob(f"part-{shard}-*")):
        if upto is None or _batch_of(f.name, shard) <= upto:
            rows = pq.read_table(f).to_pylist()
            files[f.name] = sorted(rows, key=repr)
    return files


def _batch_of(name: str, shard: str) -> int:
    return int(name[len(f"part-{shard}-") :].split("-", maxsplit=1)[0])


async def _zombie_stops(fleet: Fleet, zombie: Worker) -> tuple[str, int, int]:
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


async def _zombie_resumes(fleet: Fleet, zombie: Worker, shard: str, bid: int, stale: int) -> None:
    """SIGCONT the zombie (epoch ``stale``); once its commit attempt is over, nothing of
    it is visible. (Once continued, the zombie's worker may take the task again through
    balancing, under a new, higher epoch: legitimate, and its first act then writes the
    heir's last batch again, with the same rows.)"""
    fence = fleet.root / "exchange" / shard / "fence"
    before = _task_files(fleet.out, shard, bid)
    claimed = json.loads(fence.read_text())
    assert claimed["owner"] == "heir", claimed
    marker = f"exchange/{shard}: batch {bid} of epoch {stale} not committed"
    os.kill(zombie.proc.pid, signal.SIGCONT)

    def attempt_over() -> bool:
        """The zombie ran on: its refusal is logged, or (unfenced) it rewrote the fence."""
        fleet.check_alive()
        resumed = any(line.startswith("fault: resumed") for line in zombie.lines)
        refused = marker in fleet.tail(10**7)
        return resumed and (refused or json.loads(fence.read_text())["epoch"] == stale)

    try:
        await until("the zombie's commit attempt", attempt_over, 300)
    except AssertionError as e:
        raise AssertionError(
            f"{e}; fence {fence.read_text()}, marker {marker!r}, zombie {zombie.lines}\n"
            f"{fleet.tail(20_000)}"
        ) from None
    now = json.loads(fence.read_text())
    assert now["epoch"] != stale, f"the zombie's stale epoch committed: {now}"
    assert now["epoch"] >= claimed["epoch"], (claimed, now)
    assert marker in fleet.tail(10**7), "no refusal of the zombie's commit in the log"
    after = _task_files(fleet.out, shard, bid)
    assert after == before, "the task's sink files up to the zombie's batch changed"


@pytest.mark.xfail(
    strict=False,
    reason="flaky, being fixed (2026-12-04): 2 of 4 runs hung on the fence's flock held by the "
    "stopped zombie (a process-directed SIGSTOP let the hook's thread run on into the commit; "
    "now sent to that thread), then 1 of 3 runs: the zombie resumed but never logged its "
    "refusal within 300 s (cause not found). The fence's logic is also covered by "
    "tests/streamkit/fleet/test_fence.py, which has no such wait",
)
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
            shard, bid, stale = await _zombie_stops(fleet, zombie)
            heir = await fleet.add("heir")
            # input for the heir's first batch of the task: the zombie may have stopped in
            # a batch without input, which a restored task does not owe (same event time
            # as the first closers: the watermark does not move, the truth is unchanged)
            await asyncio.to_thread(put_every_shard, ep, stream, closers()[0])
            await _heir_writes(fleet, heir, shard, bid)
            await _zombie_resumes(fleet, zombie, shard, bid, stale)

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
