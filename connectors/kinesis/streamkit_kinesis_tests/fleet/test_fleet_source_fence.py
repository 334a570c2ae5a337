"""Issue 14: a zombie source task on the path without an exchange (a stateless plan) is
fenced (LocalStack, worker processes running ``fleet_job.py --query stateless``).

A worker alone reads and commits the first third of the records; the second third is put,
and in its next batch of a shard (batch 1 or later) it stops itself (SIGSTOP,
``STREAMKIT_FLEET_FAULT=stop_before_source_commit``) just before the fence's commit: a
zombie owner, as after a pause longer than the failover time. The test checks the stop
landed there (the fence names the zombie's epoch and an earlier batch). The last third is
put, so the next owner's batch of that shard covers more records than the zombie's. A
second worker takes every lease over, claims the task with a higher epoch, reads every
record and checkpoints its leases at the last one. Then the zombie is continued
(SIGCONT): its commit is refused (logged, naming its stale epoch), the stale epoch never
holds the fence, and the sink holds exactly the rows DuckDB selects from the records put
(unfenced, the zombie's files for its batch would replace the next owner's, which hold
more rows). A second test SIGKILLs a source task between its commit and its sink files:
the next owner writes that batch (an exact re-read). Every wait is on an observable event;
deadlines are generous.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pytest

from streamkit_kinesis_tests.fleet.fleet_harness import (
    Event,
    Fleet,
    Worker,
    events_table,
    fleet_on_fresh_stream,
    newest,
    payloads,
    put_random_keys,
    sink_events,
    until,
)

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack, pytest.mark.slow]

SHARDS = 2
EVENTS = 1200


def _truth(data: list[bytes]) -> list[Event]:
    """The rows the stateless query keeps, computed by DuckDB from the records put."""
    con = duckdb.connect()
    con.register("events", events_table(data))
    out = con.execute(
        "SELECT epoch_us(event_time), action, user_id, value FROM events WHERE value > 20"
    ).fetchall()
    return sorted((int(t), str(a), u, int(v)) for t, a, u, v in out)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def _stopped_at(worker: Worker) -> tuple[str, int] | None:
    for line in worker.lines:
        if line.startswith("fault: stopped "):
            shard, bid = line.split()[2:4]
            return shard, int(bid)
    return None


def _fence(fleet: Fleet, shard: str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((fleet.root / "source" / shard / "fence").read_text())
    return record


async def _zombie_stops(fleet: Fleet, zombie: Worker) -> tuple[str, int, int]:
    """Wait until the hook stopped ``zombie`` before a commit; (shard, batch id, epoch)."""

    def stopped() -> bool:
        fleet.check_alive()
        return _stopped_at(zombie) is not None and _state(zombie.proc.pid) == "T"

    await until("the zombie stopped before its commit", stopped, 300)
    where = _stopped_at(zombie)
    assert where is not None
    shard, bid = where
    record = _fence(fleet, shard)
    assert record["owner"] == "zombie", record
    assert record["batch"] is not None, record
    assert record["batch"] < bid, record
    return shard, bid, int(record["epoch"])


async def _zombie_refused(fleet: Fleet, zombie: Worker, shard: str, bid: int, stale: int) -> None:
    """SIGCONT the zombie; wait for the refusal of its commit (or, unfenced, its stale epoch
    in the fence)."""
    claimed = _fence(fleet, shard)
    assert claimed["owner"] == "heir", claimed
    assert claimed["epoch"] > stale, claimed
    marker = f"source/{shard}: batch {bid} of epoch {stale} not committed"
    os.kill(zombie.proc.pid, signal.SIGCONT)

    def attempt_over() -> bool:
        fleet.check_alive()
        return marker in fleet.tail(10**7) or _fence(fleet, shard)["epoch"] == stale

    try:
        await until("the refusal of the zombie's commit", attempt_over, 300)
    except AssertionError as e:
        zombie.proc.send_signal(signal.SIGUSR1)
        await asyncio.sleep(3.0)
        raise AssertionError(f"{e}; fence {_fence(fleet, shard)}\n{fleet.tail()}") from None
    assert _fence(fleet, shard)["epoch"] != stale, _fence(fleet, shard)


async def test_zombie_source_task_without_exchange_is_fenced(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    ep = localstack_endpoint
    data = payloads(EVENTS, seed=1415)
    want = _truth(data)
    third = len(data) // 3
    async with fleet_on_fresh_stream(
        ep, tmp_path, SHARDS, "sfence", "--query", "stateless"
    ) as fleet:
        zombie = await fleet.add(
            "zombie", STREAMKIT_FLEET_FAULT="stop_before_source_commit",
            STREAMKIT_FLEET_LOG="info",
        )  # fmt: skip
        first = await asyncio.to_thread(put_random_keys, ep, fleet.stream, data[:third])
        await fleet.read_all(first)  # batch 0 of every shard committed and checkpointed
        second = await asyncio.to_thread(put_random_keys, ep, fleet.stream, data[third : 2 * third])
        shard, bid, stale = await _zombie_stops(fleet, zombie)
        rest = await asyncio.to_thread(put_random_keys, ep, fleet.stream, data[2 * third :])
        await fleet.add("heir", STREAMKIT_FLEET_LOG="info")
        await fleet.read_all(newest(first, second, rest))  # by the heir
        await _zombie_refused(fleet, zombie, shard, bid, stale)

        def full() -> bool:  # the zombie's attempt is over: nothing more is coming
            fleet.check_alive()
            return len(sink_events(fleet.out)) >= len(want)

        await until("every selected row in the sink", full, 300)
        await fleet.stop()
        assert _fence(fleet, shard)["epoch"] != stale
    got = sink_events(fleet.out)
    assert got == want, f"{len(got)} rows vs {len(want)}: {sorted(set(got) ^ set(want))[:10]}"


async def test_batch_committed_by_a_killed_source_task_is_written_by_the_next(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    """A worker commits batch 1 of a shard under the fence and is SIGKILLed before writing
    its sink files (``STREAMKIT_FLEET_FAULT=kill_after_source_commit``); its lease
    checkpoint is still at batch 0's end. The successor finds batch 1 committed, re-reads
    exactly its range and writes its files (logged as "to the sink again"), then reads on:
    the sink holds exactly the rows DuckDB selects (without the re-read they are lost)."""
    ep = localstack_endpoint
    data = payloads(EVENTS, seed=1417)
    want = _truth(data)
    third = len(data) // 3
    async with fleet_on_fresh_stream(
        ep, tmp_path, SHARDS, "sfkill", "--query", "stateless"
    ) as fleet:
        victim = await fleet.add("victim", STREAMKIT_FLEET_FAULT="kill_after_source_commit")
        first = await asyncio.to_thread(put_random_keys, ep, fleet.stream, data[:third])
        await fleet.read_all(first)  # batch 0 of every shard committed and checkpointed
        second = await asyncio.to_thread(put_random_keys, ep, fleet.stream, data[third : 2 * third])
        await until("the victim's kill", lambda: victim.proc.returncode is not None, 300)
        assert victim.proc.returncode == -9, fleet.tail()
        rest = await asyncio.to_thread(put_random_keys, ep, fleet.stream, data[2 * third :])
        await fleet.add("successor", STREAMKIT_FLEET_LOG="info")
        await fleet.read_all(newest(first, second, rest))

        def full() -> bool:  # every lease is checkpointed at its end: all is written
            fleet.check_alive()
            return len(sink_events(fleet.out)) >= len(want)

        await until("every selected row in the sink", full, 120)
        await fleet.stop()
        assert "to the sink again" in fleet.tail(10**7)
    got = sink_events(fleet.out)
    assert got == want, f"{len(got)} rows vs {len(want)}: {sorted(set(got) ^ set(want))[:10]}"
