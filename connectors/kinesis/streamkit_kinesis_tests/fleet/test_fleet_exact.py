"""Issue 14, tests 1, 4 and 5: a windowed aggregation run by a fleet of worker processes
(``fleet_job.py`` with ``STREAMKIT_FLEET=1``) over an 8-shard LocalStack stream written
with random partition keys, so every action occurs on every shard and every group needs
rows of every shard. The Parquet sink, read as one dataset, must equal DuckDB's answer over
the records put, exactly (count and sum; the average to 1e-9).

The scenario: the data are put; once every source lease is checkpointed at its shard's
last record (the lease table says so), one closing record a day later is put to every
shard: append mode then emits every data window, once. The test waits for the sink to hold
as many rows as the truth, stops the workers with SIGTERM (graceful: exit 0), and compares
the sink with the truth (a window emitted twice, lost, or with a wrong count fails).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.fleet.exchange import exchange_stream_name
from streamkit_kinesis.fleet.reader import read_exchange_shard
from streamkit_kinesis.leases import LEADER_LEASE_KEY, DynamoDBLeaseStore
from streamkit_kinesis.shards import list_shards_blocking
from streamkit_kinesis.testing.streams import fresh_stream, read_stream_blocking, unique

from streamkit.fleet.chunk import decode_chunk
from streamkit_kinesis_tests.fleet.fleet_harness import (
    Fleet,
    close_and_collect,
    drop_fleet_tables,
    fleet_on_fresh_stream,
    newest,
    payloads,
    put_random_keys,
    same,
    sink_rows,
    statuses,
    truth,
    until,
)

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack, pytest.mark.slow]

SHARDS = 8
EVENTS = 3000


async def test_three_workers_count_sum_avg_equal_duckdb(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    """Test 1: three workers, exact result. The records are put in event-time order with
    a watermark two minutes behind, so no record is late on its own shard, but a shard
    read to its end before another shard reported anything is 28 minutes ahead of it: a
    fleet watermark that ignored the shards it has not heard from yet would drop the
    slower shards' rows as late."""
    ep = localstack_endpoint
    data = payloads(EVENTS, seed=14, ordered=True)
    want = truth(data)
    async with fleet_on_fresh_stream(
        ep, tmp_path, SHARDS, "fleet", "--delay", "2 minutes"
    ) as fleet:
        last = await asyncio.to_thread(put_random_keys, ep, fleet.stream, data)
        for i in range(3):
            await fleet.add(f"w{i}")
        await fleet.read_all(last)
        await close_and_collect(ep, fleet.stream, [fleet], len(want))
        await fleet.stop()
    got = sink_rows(fleet.out)
    assert same(got, want), f"{len(got)} rows vs {len(want)}: {sorted(set(got) ^ set(want))[:10]}"
    kinds = {s["kind"] for s in statuses(fleet.root)}
    assert kinds == {"source", "aggregation"}


@pytest.mark.parametrize("reads", ["one read per batch", "batches of several reads"])
async def test_worker_killed_between_put_and_checkpoint_duplicate_dropped(
    localstack_endpoint: AwsEndpoint, tmp_path: Path, reads: str
) -> None:
    """Test 4: a worker SIGKILLs itself after the put of its second exchange batch and
    before that batch's checkpoint (``STREAMKIT_FLEET_FAULT``); one successor, started
    after the kill, takes every lease over, re-reads the pending range and emits the same
    chunks again, which the aggregation tasks drop (counted in their status files); totals
    stay exact. With one worker at a time no lease is ever stolen, so the kill is the only
    way a chunk can come twice (with several workers a steal between put and checkpoint
    does the same, and test 1 sees such drops too). The second half of the records is put
    after the kill, so the successor's first read of a shard goes past the pending
    checkpoint: only an exact re-read of ``(checkpoint, pending]`` re-emits the chunks with
    their first range end. With GetRecords limited to 40 records a source batch gathers
    several reads of a shard's backlog (``gather_records``), so the pending range re-read
    after the kill spans several reads too."""
    ep = localstack_endpoint
    data = payloads(EVENTS, seed=41)
    want = truth(data)
    small = reads == "batches of several reads"
    extra = ("--max-records", "40") if small else ()
    async with fleet_on_fresh_stream(ep, tmp_path, SHARDS, "fleetk", *extra) as fleet:
        half = len(data) // 2
        last = await asyncio.to_thread(put_random_keys, ep, fleet.stream, data[:half])
        victim = await fleet.add("victim", STREAMKIT_FLEET_FAULT="kill_before_checkpoint:2")
        await until("the victim's kill", lambda: victim.proc.returncode is not None, 300)
        assert victim.proc.returncode == -9, fleet.tail()
        # records after the pending ranges: the successor's first read goes past them
        more = await asyncio.to_thread(put_random_keys, ep, fleet.stream, data[half:])
        last = newest(last, more)
        # the successor reads 40 records a batch: its exact re-read of a pending range of
        # several reads is held across deliveries until the range end
        await fleet.add("successor", **({"STREAMKIT_TEST_GATHER": "1"} if small else {}))
        await fleet.read_all(last)
        await close_and_collect(ep, fleet.stream, [fleet], len(want))
        await fleet.stop()
        replayed = await replayed_sizes(ep, fleet.stream, fleet.app)
    got = sink_rows(fleet.out)
    assert same(got, want), f"{len(got)} rows vs {len(want)}: {sorted(set(got) ^ set(want))[:10]}"
    dropped = sum(
        s["duplicates_dropped"] for s in statuses(fleet.root) if s["kind"] == "aggregation"
    )
    assert dropped > 0, statuses(fleet.root)
    if small:  # a re-emitted (dropped) batch spanned several reads of 40 records
        assert max(replayed) > 40, replayed


async def replayed_sizes(ep: AwsEndpoint, stream: str, app: str) -> list[int]:
    """For each source batch whose chunks are on the exchange twice: how many records put
    to its source shard its range ``(first, last]`` covers (sequence numbers read back from
    the source stream with plain GetRecords)."""
    client = kinesis_client(ep)
    source = await asyncio.to_thread(read_stream_blocking, client, stream)
    seqs = {shard: [int(r["SequenceNumber"]) for r in rs] for shard, rs in source.items()}
    name = exchange_stream_name(app)
    sizes = []
    for shard in await asyncio.to_thread(list_shards_blocking, client, name):
        read = await read_exchange_shard(client, name, shard.shard_id)
        heads = [decode_chunk(r.data)[0] for r in read]
        keys = [(h.source, h.first, h.last) for h in heads if h.part == 0]
        for src, first, end in {k for k in keys if keys.count(k) > 1}:
            low = int(first) if first and first.isdigit() else -1
            sizes.append(sum(1 for n in seqs[src] if low < n <= int(end)))
    return sizes


async def test_second_app_on_the_same_stream_is_unaffected(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    """Test 5: two fleets with different app names read the same stream at once (two
    workers and one); each gets the whole exact result, and each lease table is held by
    its own workers only."""
    ep = localstack_endpoint
    data = payloads(EVENTS, seed=5)
    want = truth(data)
    async with fresh_stream(ep, SHARDS, "fleet2") as (stream, _):
        one, two = (
            Fleet(ep, stream, unique("fa"), tmp_path),
            Fleet(ep, stream, unique("fb"), tmp_path),
        )
        try:
            last = await asyncio.to_thread(put_random_keys, ep, stream, data)
            await one.add("a0")
            await one.add("a1")
            await two.add("b0")
            await one.read_all(last)
            await two.read_all(last)
            owners_one = await lease_owners(ep, one.app)
            owners_two = await lease_owners(ep, two.app)
            await close_and_collect(ep, stream, [one, two], len(want))
            await one.stop()
            await two.stop()
        finally:
            await one.kill_all()
            await two.kill_all()
            await drop_fleet_tables(ep, one.app)
            await drop_fleet_tables(ep, two.app)
    for fleet in (one, two):
        got = sink_rows(fleet.out)
        assert same(got, want), f"{fleet.app}: {len(got)} rows vs {len(want)}"
    assert owners_one <= {"a0", "a1"}, owners_one
    assert owners_two == {"b0"}, owners_two


async def lease_owners(ep: AwsEndpoint, app: str) -> set[str | None]:
    """The owners of the source and exchange leases of ``app`` (not its leader lease)."""
    owners: set[str | None] = set()
    for table in (app, f"{app}-exchange"):
        leases = await DynamoDBLeaseStore(ep, table).list_leases()
        owners |= {x.lease_owner for x in leases if x.lease_key != LEADER_LEASE_KEY}
    return owners
