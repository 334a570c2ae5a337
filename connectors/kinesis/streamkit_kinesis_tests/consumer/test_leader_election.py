"""Leader decision in the consumer (issue 12 item 10): three worker processes on LocalStack.

The leader is decided without a write (KCL 2.x's deterministic shuffle of the owners of
live leases, from each take cycle's scan). Expected leaders come from
:func:`elect_leaders` on the worker ids, itself proven equal to Java's shuffle. Who leads
is read from each worker's ``leader_changed`` events; who audits from its
``leases_audited`` events; ListShards calls are counted on each worker's real client. After
the leader is SIGKILLed, the role moves only once its leases expired on the survivors'
clocks, to the survivor the shuffle picks, and it alone audits from then on.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

import pytest
from streamkit_kinesis.leases import elect_leaders
from streamkit_kinesis.testing.streams import fresh_stream, unique

from streamkit_kinesis_tests.consumer.consumer_support import (
    WorkerProcess,
    drop_table,
    last_lease_writes,
    wait_until,
)

if TYPE_CHECKING:
    from pathlib import Path

    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack, pytest.mark.slow]

FAILOVER = 10.0  # the default: a loaded machine may stall a worker for seconds
SETTINGS = {
    "failover": FAILOVER, "take_interval": 0.5, "shard_sync_interval": 0.5,
    "cleanup_interval": 0.5, "shard_refresh_interval": "off",
}  # fmt: skip


def role(worker: WorkerProcess) -> str | None:
    """The worker's current role as its last ``leader_changed`` event says (None: never)."""
    changes = worker.events("leader_changed")
    return str(changes[-1]["detail"]) if changes else None


def became_leader(worker: WorkerProcess, after: float) -> list[float]:
    return [e["t"] for e in worker.events("leader_changed") if e["detail"] == "leader"
            and e["t"] > after]  # fmt: skip


def audits(worker: WorkerProcess, after: float = 0.0) -> list[float]:
    return [e["t"] for e in worker.events("leases_audited") if e["t"] > after]


def list_calls(worker: WorkerProcess, after: float = 0.0) -> list[float]:
    return [e["t"] for e in worker.events("list_shards_call") if e["t"] > after]


def holding(worker: WorkerProcess) -> bool:
    cycles = worker.events("take_cycle")
    return bool(cycles) and cycles[-1]["held"] >= 1


async def test_the_shuffled_owner_leads_with_no_write_and_a_survivor_takes_over_after_sigkill(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    ep = localstack_endpoint
    async with fresh_stream(ep, 4, "leader") as (stream, _):
        app = unique("app")
        workers = {w: WorkerProcess(ep, stream, app, w, tmp_path, **SETTINGS) for w in "ABC"}
        try:
            await wait_until(lambda: all(holding(p) for p in workers.values()), 120, "leases")
            (leader,) = elect_leaders(workers)
            followers = sorted(set(workers) - {leader})

            def settled() -> bool:
                return role(workers[leader]) == "leader" and all(
                    role(workers[w]) in (None, "follower") for w in followers
                )

            await wait_until(settled, 60, f"{leader} alone leading")
            mark = max(e["t"] for p in workers.values() for e in p.events())
            await wait_until(lambda: len(audits(workers[leader], mark)) >= 6, 60, "audits")
            for w in followers:
                assert audits(workers[w], mark) == [], f"follower {w} audited"
            for p in workers.values():  # steady state: audits read the scan, never list
                assert list_calls(p, mark) == [], f"{p.worker_id} called ListShards"
            table = ep.client("dynamodb").scan(TableName=app, ConsistentRead=True)["Items"]
            assert sorted(i["leaseKey"]["S"] for i in table) == sorted(
                f"shardId-{n:012d}" for n in range(4)
            )  # no leader item: the election wrote nothing

            killed_at = workers[leader].signal(signal.SIGKILL)
            await workers[leader].wait_exit(10)
            (successor,) = elect_leaders(followers)
            await wait_until(
                lambda: bool(became_leader(workers[successor], killed_at)), 60, "successor"
            )
            first = became_leader(workers[successor], killed_at)[0]
            # The survivor drops the dead leader once every lease it held sat unchanged for
            # FAILOVER on the survivor's clock, counted from when its Scan saw the leader's
            # last write of it, which came after the leader sent it (logged with the time
            # before sending; not "the kill minus a renew interval": load delays renewals).
            owner = {i["leaseKey"]["S"]: i.get("leaseOwner", {}).get("S") for i in table}
            held = {key for key, who in owner.items() if who == leader}
            wrote = last_lease_writes(workers[leader])
            assert held, owner
            assert held <= set(wrote), (held, wrote)
            expired = max(wrote[s] for s in held) + FAILOVER
            assert first >= expired, (
                f"{successor} led {first - killed_at:.2f}s after the kill, before the dead "
                f"leader's leases could expire ({FAILOVER}s after its last writes)"
            )
            await wait_until(lambda: len(audits(workers[successor], first)) >= 6, 60, "audits")
            other = next(w for w in followers if w != successor)
            assert audits(workers[other], killed_at) == [], f"{other} audited but is no leader"
            assert role(workers[other]) in (None, "follower")
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
