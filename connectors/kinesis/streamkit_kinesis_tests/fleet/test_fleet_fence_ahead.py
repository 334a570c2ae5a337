"""Issue 14: the exchange lease table recreated while the checkpoint root is kept. Every
aggregation task's fence names an epoch (a lease counter of the old table) at or above the
counters of the new table, so every claim is refused. A worker must not hold those leases
idle for ever: it fails, with an error that says what to do, and its graceful stop
releases its leases (:mod:`streamkit_kinesis.fleet.refusals`).

Worker processes (``fleet_job.py``) on LocalStack: a first and a second worker run one
after the other (the second's takes raise every exchange lease's counter, and its claims
every fence's epoch, above what a fresh table's first take writes); the exchange lease
table is deleted; a third worker starts on the same checkpoint root.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from streamkit_kinesis.leases import DynamoDBLeaseStore

from streamkit_kinesis_tests.fleet.fleet_harness import (
    Fleet,
    fleet_on_fresh_stream,
    payloads,
    put_random_keys,
    statuses,
    until,
)

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack, pytest.mark.slow]

EXCHANGE_SHARDS = 4


def _every_task_run_by(fleet: Fleet, worker: str) -> bool:
    fleet.check_alive()
    tasks = [s for s in statuses(fleet.root) if s["kind"] == "aggregation"]
    return len(tasks) == EXCHANGE_SHARDS and all(s["worker"] == worker for s in tasks)


async def _until_every_task_run_by(fleet: Fleet, worker: str) -> None:
    await until(f"{worker} runs every aggregation task",
                lambda: _every_task_run_by(fleet, worker), 300)  # fmt: skip


async def test_a_worker_refused_by_fences_ahead_of_the_lease_table_fails_naming_the_fix(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    ep = localstack_endpoint
    async with fleet_on_fresh_stream(ep, tmp_path, 2, "ffahead") as fleet:
        last = await asyncio.to_thread(put_random_keys, ep, fleet.stream, payloads(200, seed=5))
        for name in ("first", "second"):
            worker = await fleet.add(name)
            await fleet.read_all(last)
            await _until_every_task_run_by(fleet, name)
            assert await worker.terminate() == 0, fleet.tail()
        exchange = DynamoDBLeaseStore(ep, f"{fleet.app}-exchange")
        await exchange.delete_table()
        third = await fleet.add("third")
        await until("the third worker's exit", lambda: third.proc.returncode is not None, 300)
        log = fleet.tail(200_000)
        assert third.proc.returncode == 1, log
        assert "FenceAheadError" in log, log[-4000:]
        assert "Restore the lease table that goes with this checkpoint root" in log
        assert "stopped" not in third.lines  # it failed, it did not stop cleanly
        leases = await exchange.list_leases()
        assert leases, "the third worker recreated the exchange lease table"
        assert all(x.lease_owner is None for x in leases), leases  # released
