"""Issue 14: the source stream is resharded (one shard split, two merged) while a fleet of
two worker processes runs a windowed count/sum in append mode.

Half the records are put before the reshard and read; then shard 0 is split and shards 2
and 3 are merged; the other half goes to the open shards (children and shard 1); then one
closing record a day later to every open shard. The fleet's ``idle_timeout`` is one hour,
so a parent shard stops holding the fleet watermark only by ending (its source task's
end reaches every aggregation task), never by going idle: without that, no window closes.

Checked: the sink equals DuckDB over the records put, each window once (append mode); the
children's leases are read to their last records; on every exchange shard each child's
first chunk follows every chunk of its parents (a child is read only once its parents
ended, and a parent's end is sent before its SHARD_END checkpoint).

A second, smaller run (one worker, two shards, ``idle_timeout`` three seconds): shard 0
is split once every record is read, and nothing is ever written to one of its children.
That child's source task sends no chunk of records; its start markers make the
aggregation tasks hear of it, so it holds the fleet watermark until its reader has found
nothing at its tip for ``idle_timeout`` and says so (its idle markers; never heard of, it
held it for ever: no window closed). Checked: the child received no
record, and the sink equals DuckDB over the records put.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.testing.streams import read_stream_blocking

from streamkit.fleet.chunk import decode_chunk
from streamkit_kinesis_tests.fleet.fleet_harness import (
    close_and_collect,
    fleet_on_fresh_stream,
    payloads,
    put_random_keys,
    same,
    sink_rows,
    truth,
)

if TYPE_CHECKING:
    from pathlib import Path

    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack, pytest.mark.slow]

SHARDS = 4
EVENTS = 1600
SMALL = 400


def exchange_order(ep: AwsEndpoint, app: str) -> dict[str, list[str]]:
    """Per exchange shard, the source shard of each chunk in exchange order."""
    shards = read_stream_blocking(kinesis_client(ep), f"{app}-exchange")
    return {s: [decode_chunk(r["Data"])[0].source for r in rs] for s, rs in shards.items()}


async def test_split_and_merge_while_the_fleet_runs_each_window_once(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    ep = localstack_endpoint
    data = payloads(EVENTS, seed=14)
    before, after = data[: EVENTS // 2], data[EVENTS // 2 :]
    want = truth(data)
    async with fleet_on_fresh_stream(ep, tmp_path, SHARDS, "fleetr", "--idle", "1 hour") as fleet:
        await fleet.add("w0")
        await fleet.add("w1")
        last = await asyncio.to_thread(put_random_keys, ep, fleet.stream, before)
        await fleet.read_all(last)
        split = await fleet.admin.split_shard(fleet.stream, "shardId-000000000000")
        merged = await fleet.admin.merge_shards(
            fleet.stream, "shardId-000000000002", "shardId-000000000003"
        )
        children = {s.shard_id: s.parent_shard_ids for s in (*split, *merged)}
        last = await asyncio.to_thread(put_random_keys, ep, fleet.stream, after)
        assert set(children) <= set(last), (children, last)
        await fleet.read_all(last)  # the children too: read once their parents ended
        await close_and_collect(ep, fleet.stream, [fleet], len(want))
        order = await asyncio.to_thread(exchange_order, ep, fleet.app)
        await fleet.stop()
    got = sink_rows(fleet.out)
    assert same(got, want), f"{len(got)} rows vs {len(want)}: {sorted(set(got) ^ set(want))[:10]}"
    assert len(order) == 4, order
    for sources in order.values():
        for child, parents in children.items():
            assert child in sources, (child, sources)
            first = sources.index(child)
            assert all(p in sources[:first] for p in parents), (child, parents, sources)
            assert not any(p in sources[first:] for p in parents), (child, parents, sources)


async def test_a_split_child_that_never_receives_a_record_stops_holding_after_idle_timeout(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    ep = localstack_endpoint
    data = payloads(SMALL, seed=41)
    want = truth(data)
    parent = "shardId-000000000000"
    async with fleet_on_fresh_stream(ep, tmp_path, 2, "fleete", "--idle", "3 seconds") as fleet:
        await fleet.add("w0")
        last = await asyncio.to_thread(put_random_keys, ep, fleet.stream, data)
        await fleet.read_all(last)
        split = await fleet.admin.split_shard(fleet.stream, parent)
        empty = min(split, key=lambda s: s.hash_key_range.starting_hash_key).shard_id
        # the closers go to shard 1 and the other child only (the parent's first hash
        # key would land in the empty child)
        await close_and_collect(ep, fleet.stream, [fleet], len(want), frozenset({parent, empty}))
        records = await asyncio.to_thread(read_stream_blocking, kinesis_client(ep), fleet.stream)
        await fleet.stop()
    assert records.get(empty, []) == [], records.get(empty)
    assert {c.shard_id for c in split} - {empty} <= set(records), (split, list(records))
    got = sink_rows(fleet.out)
    assert same(got, want), f"{len(got)} rows vs {len(want)}: {sorted(set(got) ^ set(want))[:10]}"
