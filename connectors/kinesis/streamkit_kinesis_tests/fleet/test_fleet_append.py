"""Issue 14, test 3: append mode on a fleet emits every window exactly once fleet-wide, and
an idle source shard holds the fleet watermark back only until its reader has found
nothing new at its tip for ``idle_timeout`` (then it declares the shard idle).

Two fleets with different app names read one 8-shard stream at once, with the same query
(watermark one hour behind) and different ``idle_timeout``: one hour (H) and three seconds
(I). Every shard gets data; one closing record a day later then goes to every shard but
one (the idle shard, which holds the oldest unclosed event time of the data). I's idle shard
stops holding its watermark back once its reader has been at its tip with nothing new for
three seconds (its idle markers), so I emits every
window of the data, each once: its sink equals DuckDB over the records put. H's idle shard
still holds its watermark back once H read every record (its source leases checkpointed at
the closers, its exchange leases at the exchange's tip): H's sink is empty and no
aggregation task's watermark passed the idle shard's largest event time minus the delay.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import TYPE_CHECKING

import pytest
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.testing.streams import fresh_stream, read_stream_blocking, unique

from streamkit_kinesis_tests.fleet.fleet_harness import (
    Fleet,
    checkpointed,
    close_and_collect,
    drop_fleet_tables,
    payloads,
    put_random_keys,
    same,
    sink_rows,
    statuses,
    truth,
    until,
)

if TYPE_CHECKING:
    from pathlib import Path

    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack, pytest.mark.slow]

SHARDS = 8
EVENTS = 2000
HOUR_MS = 3_600_000


def idle_shard_mark(ep: AwsEndpoint, stream: str, idle: str) -> int:
    """The largest event time on ``idle`` (ms) minus the one-hour delay, read back."""
    records = read_stream_blocking(kinesis_client(ep), stream)[idle]
    times = [datetime.fromisoformat(json.loads(r["Data"])["event_time"]) for r in records]
    return int(max(times).timestamp() * 1000) - HOUR_MS


async def tips(ep: AwsEndpoint, app: str) -> dict[str, int]:
    """The last sequence number of each shard of ``app``'s exchange stream."""
    shards = await asyncio.to_thread(read_stream_blocking, kinesis_client(ep), f"{app}-exchange")
    return {s: int(rs[-1]["SequenceNumber"]) for s, rs in shards.items() if rs}


async def test_append_each_window_once_and_idle_shard_holds_for_idle_timeout_only(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    ep = localstack_endpoint
    data = payloads(EVENTS, seed=3)
    want = truth(data)
    async with fresh_stream(ep, SHARDS, "fleeti") as (stream, _):
        held = Fleet(ep, stream, unique("fh"), tmp_path, "--idle", "1 hour")
        idle = Fleet(ep, stream, unique("fi"), tmp_path, "--idle", "3 seconds")
        try:
            last = await asyncio.to_thread(put_random_keys, ep, stream, data)
            quiet = sorted(last)[-1]
            await held.add("h0")
            await idle.add("i0")
            await idle.add("i1")
            await held.read_all(last)
            await idle.read_all(last)
            await close_and_collect(ep, stream, [idle], len(want), frozenset({quiet}))
            # H has read everything: each source lease at its closer, each exchange lease
            # at the exchange's tip as it stands once the sources checkpointed
            closed = {**last}
            for shard, records in read_stream_blocking(kinesis_client(ep), stream).items():
                closed[shard] = int(records[-1]["SequenceNumber"])
            await until("H read the closers", lambda: checkpointed(ep, held.app, closed), 300)
            exchange = await tips(ep, held.app)
            await until(
                "H applied every chunk",
                lambda: checkpointed(ep, f"{held.app}-exchange", exchange),
                300,
            )
            mark = await asyncio.to_thread(idle_shard_mark, ep, stream, quiet)
            await held.stop()
            await idle.stop()
        finally:
            await held.kill_all()
            await idle.kill_all()
            await drop_fleet_tables(ep, held.app)
            await drop_fleet_tables(ep, idle.app)
    got = sink_rows(idle.out)
    assert same(got, want), f"{len(got)} rows vs {len(want)}: {sorted(set(got) ^ set(want))[:10]}"
    assert sink_rows(held.out) == []
    marks = [s["watermark_ms"] for s in statuses(held.root) if s["kind"] == "aggregation"]
    assert len(marks) == 4, statuses(held.root)
    assert all(m is not None and m <= mark for m in marks), (marks, mark)
