"""Consumer test 2: worker processes balance shards by count (LocalStack).

"Within three lease cycles" is checked on each worker's own log of take cycles: a worker
reaches its fair share within three cycles that changed its holdings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from streamkit_kinesis.testing.streams import fresh_stream, unique

from streamkit_kinesis_tests.consumer.consumer_support import (
    WorkerProcess,
    drop_table,
    owners,
    poll_table,
    produce,
    wait_until,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from streamkit_kinesis.leases import Lease

    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack, pytest.mark.slow]

TAKE_INTERVAL = 1.0
# Two steals per cycle: from any first split (even 8/0) the newcomer reaches 4 by its third
# cycle; with KCL's default of one steal it needs four (see test_lease_coordinator).
# A steal is a conditional write on the counter the take cycle just read, so it loses the
# race when the owner renews in between (KCL's taker has the same race). Renewing every
# 3.3 s (KCL's default failover of 10 s) against a take cycle of well under a second keeps
# such lost steals rare; renewing every second made them common on a loaded machine.
OPTS = {"failover": 10.0, "take_interval": TAKE_INTERVAL, "max_steal": 2}


def cycle_reaching(worker: WorkerProcess, share: int) -> int | None:
    """How many of the worker's take cycles *changed* its holdings until it held ``share``.

    A cycle whose steal lost the race against the owner's renewal (see OPTS) or hit a
    transient store error changes nothing; on a loaded machine such cycles come at any
    time, so they are not counted. A taker that moved fewer leases per cycle than it may
    still needs more changing cycles and fails. (The exact "within three cycles", races
    excluded by construction, is proven with a fake clock in test_coordinator_dynamodb.)
    """
    changing, before = 0, 0
    for cycle in worker.events("take_cycle"):
        if cycle["held"] != before:
            changing, before = changing + 1, cycle["held"]
        if cycle["held"] >= share:
            return changing
    return None


async def cycles_to_reach(workers: list[WorkerProcess], share: int) -> list[int]:
    """Per worker, the take cycle that got it to ``share`` (waits for cycles in flight)."""
    await wait_until(
        lambda: all(cycle_reaching(w, share) is not None for w in workers),
        10,
        f"every worker's take-cycle log to show {share} leases",
    )
    return [cycle_reaching(w, share) or 0 for w in workers]


def split_is(expected: list[int]) -> Callable[[list[Lease]], bool]:
    def check(table: list[Lease]) -> bool:
        counts = owners(table)
        return "-" not in counts and sorted(counts.values()) == expected

    return check


async def test_two_workers_split_4_4_and_a_third_makes_3_3_2(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    ep = localstack_endpoint
    async with fresh_stream(ep, 8, "balance") as (stream, _):
        sent = await produce(ep, stream, 200, keys=50)
        app = unique("app")
        workers = [WorkerProcess(ep, stream, app, w, tmp_path, **OPTS) for w in ("A", "B")]
        try:
            await poll_table(ep, app, split_is([4, 4]), 60, "a 4/4 split")
            pair = await cycles_to_reach(workers, 4)
            assert max(pair) <= 3
            # stable: three more cycles change nothing
            await wait_until(lambda: min(w.take_cycles() for w in workers) >= 7, 30, "cycles")
            table, _ = await poll_table(ep, app, lambda t: True, 5, "a read")
            assert sorted(owners(table).values()) == [4, 4]

            workers.append(WorkerProcess(ep, stream, app, "C", tmp_path, **OPTS))
            await poll_table(ep, app, split_is([2, 3, 3]), 60, "a 3/3/2 split")
            third = await cycles_to_reach(workers[2:], 2)
            assert third <= [3]
            print(f"4/4 by take cycles {pair} (A, B); 3/3/2 by C's cycle {third[0]}")
            c_cycles = workers[2].take_cycles()
            await wait_until(lambda: workers[2].take_cycles() >= c_cycles + 3, 30, "cycles")
            table, _ = await poll_table(ep, app, lambda t: True, 5, "a read")
            assert sorted(owners(table).values()) == [2, 3, 3]
            assert set(owners(table)) == {"A", "B", "C"}

            expected = {d.decode() for d in sent}
            await wait_until(
                lambda: {r["data"] for w in workers for r in w.records()} >= expected,
                15,
                "every record processed by some worker",
            )
        finally:
            for w in workers:
                w.close()
            await drop_table(ep, app)
        for w in workers:
            assert "Traceback" not in w.log(), w.log()
