"""Issue 14, test 2 (without its timing clause): the result stays exact while the fleet
changes under it. Three workers start on an 8-shard stream; between three slices of the
records (in event-time order, watermark two minutes behind) a fourth worker joins, one is
SIGKILLed and one stops gracefully (SIGTERM, exit 0). After each change the test waits
until both lease tables reflect it (the new worker holds source and aggregation leases;
the killed and the stopped worker hold none), then the sink read as one dataset must equal
DuckDB over the records put. Whether the rebalance took at most three lease cycles is not
asserted (that would be a wall-clock assertion on a loaded machine).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from streamkit_kinesis.leases import LEADER_LEASE_KEY, DynamoDBLeaseStore
from streamkit_kinesis.testing.streams import fresh_stream, unique

from streamkit_kinesis_tests.fleet.fleet_harness import (
    Fleet,
    close_and_collect,
    drop_fleet_tables,
    payloads,
    put_random_keys,
    same,
    sink_rows,
    truth,
    until,
)

if TYPE_CHECKING:
    from pathlib import Path

    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack, pytest.mark.slow]

SHARDS = 8
EVENTS = 3000


async def owners(ep: AwsEndpoint, table: str) -> list[str | None]:
    """The owner of every lease of ``table`` (not the leader lease)."""
    leases = await DynamoDBLeaseStore(ep, table).list_leases()
    return [x.lease_owner for x in leases if x.lease_key != LEADER_LEASE_KEY]


async def holds(ep: AwsEndpoint, app: str, present: set[str], absent: set[str]) -> bool:
    """Every worker of ``present`` holds a lease of both tables, none of ``absent`` any."""
    for table in (app, f"{app}-exchange"):
        held = await owners(ep, table)
        if not present <= set(held) or absent & set(held):
            return False
    return True


async def test_join_sigkill_and_graceful_leave_stay_exact(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    ep = localstack_endpoint
    data = payloads(EVENTS, seed=22, ordered=True)
    want = truth(data)
    third = len(data) // 3
    async with fresh_stream(ep, SHARDS, "fleetm") as (stream, _):
        fleet = Fleet(ep, stream, unique("fm"), tmp_path, "--delay", "2 minutes")
        app = fleet.app
        try:
            last = await asyncio.to_thread(put_random_keys, ep, stream, data[:third])
            workers = {name: await fleet.add(name) for name in ("w0", "w1", "w2")}
            await fleet.read_all(last)
            workers["w3"] = await fleet.add("w3")  # joins
            await until("w3 holds leases", lambda: holds(ep, app, {"w3"}, set()), 300)
            more = await asyncio.to_thread(put_random_keys, ep, stream, data[third : 2 * third])
            await workers["w1"].kill()  # SIGKILL, while the second slice is read
            await until("w1's leases taken over", lambda: holds(ep, app, set(), {"w1"}), 300)
            code = await workers["w2"].terminate()  # graceful leave
            assert code == 0, fleet.tail()
            await until("w2's leases taken over", lambda: holds(ep, app, set(), {"w2"}), 300)
            rest = await asyncio.to_thread(put_random_keys, ep, stream, data[2 * third :])
            for part in (more, rest):
                last = {s: max(last.get(s, 0), part.get(s, 0)) for s in last.keys() | part.keys()}
            await fleet.read_all(last)
            await close_and_collect(ep, stream, [fleet], len(want))
            await fleet.stop()
        finally:
            await fleet.kill_all()
            await drop_fleet_tables(ep, app)
    got = sink_rows(fleet.out)
    assert same(got, want), f"{len(got)} rows vs {len(want)}: {sorted(set(got) ^ set(want))[:10]}"
