"""Leader election in the consumer (issue 12 item 10): three worker processes on LocalStack.

Only the leader runs the periodic shard sync (each worker syncs once at start, as KCL).
Who leads is read from the raw ``streamkit:leader`` item (plain boto3); who synced from
each worker's ``shard_synced`` events. After the leader is SIGKILLed, another worker takes
over no earlier than the leader lease allows, and it alone syncs from then on.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

import pytest
from streamkit_kinesis.testing.streams import fresh_stream, unique

from streamkit_kinesis_tests.consumer.consumer_support import (
    WorkerProcess,
    drop_table,
    wait_until,
)

if TYPE_CHECKING:
    from pathlib import Path

    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack, pytest.mark.slow]

LEADER_LEASE = 4.0
HEARTBEAT = LEADER_LEASE / 4
SETTINGS = {
    "failover": 3.0, "take_interval": 0.5, "leader_lease_time": LEADER_LEASE,
    "shard_sync_interval": 0.5, "cleanup_interval": 0.5,
}  # fmt: skip


def leader_owner(ep: AwsEndpoint, app: str) -> str | None:
    """``leaseOwner`` of the leader item as stored (consistent read), or None."""
    try:
        got = ep.client("dynamodb").get_item(
            TableName=app, Key={"leaseKey": {"S": "streamkit:leader"}}, ConsistentRead=True
        )
    except Exception:  # the table is not created yet
        return None
    owner = got.get("Item", {}).get("leaseOwner", {}).get("S")
    return str(owner) if owner is not None else None


def syncs(worker: WorkerProcess, after: float = 0.0) -> list[float]:
    """Wall-clock times of the worker's shard syncs after ``after``."""
    return [e["t"] for e in worker.events("shard_synced") if e["t"] > after]


async def test_one_leader_syncs_and_a_survivor_takes_over_after_sigkill(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    ep = localstack_endpoint
    async with fresh_stream(ep, 2, "leader") as (stream, _):
        app = unique("app")
        workers = {w: WorkerProcess(ep, stream, app, w, tmp_path, **SETTINGS) for w in "ABC"}
        try:
            await wait_until(lambda: all(syncs(p) for p in workers.values()), 120, "start syncs")
            await wait_until(lambda: leader_owner(ep, app) is not None, 60, "a leader")
            leader = leader_owner(ep, app)
            assert leader in workers
            mark = max(t for p in workers.values() for t in syncs(p))
            await wait_until(lambda: len(syncs(workers[leader], mark)) >= 6, 60, "leader syncs")
            followers = [w for w in workers if w != leader]
            for w in followers:
                assert syncs(workers[w], mark) == [], f"follower {w} ran a periodic shard sync"
            assert leader_owner(ep, app) == leader

            killed_at = workers[leader].signal(signal.SIGKILL)
            await workers[leader].wait_exit(10)
            await wait_until(lambda: leader_owner(ep, app) in followers, 120, "a surviving leader")
            new = leader_owner(ep, app)
            assert new is not None
            await wait_until(lambda: len(syncs(workers[new], killed_at)) >= 6, 60, "new syncs")
            first = min(t for w in followers for t in syncs(workers[w], killed_at))
            # The old leader's last renewal was at most one heartbeat before the kill; its
            # lease must sit unchanged for LEADER_LEASE on the survivor's clock first.
            assert first >= killed_at + LEADER_LEASE - HEARTBEAT - 0.5, (
                f"a survivor synced {first - killed_at:.2f}s after the kill, before the "
                f"{LEADER_LEASE}s leader lease could expire"
            )
            other = next(w for w in followers if w != new)
            assert syncs(workers[other], killed_at) == [], f"{other} synced but is no leader"
            assert leader_owner(ep, app) == new
            for w in followers:
                assert workers[w].proc.poll() is None, workers[w].log()
        except BaseException:
            for p in workers.values():
                print(p.worker_id, p.log()[-3000:])
            raise
        finally:
            for p in workers.values():
                p.close()
            await drop_table(ep, app)
