"""Issue 14: a source shard whose reader holds its lease but emits nothing for long (a
starved, throttled or stalled worker) is silent, not idle: it holds the fleet watermark
however long the silence lasts, so its rows, emitted at last, are not late.

The load-run failure this guards against (a fleet join lost rows after a SIGKILL on a
machine with both cores busy): the aggregation tasks took a shard whose new owner had not
emitted for ``idle_timeout`` after settling in for idle, the watermark moved on with the
other shards, and the shard's rows, read at last, were dropped as late. Here one worker
reads two shards with ``idle_timeout`` two seconds; the first batch of records one of its
source tasks gets waits 40 s (``STREAMKIT_FLEET_FAULT=stall_first_batch:40``) while the
other shard's records (the same 30 minutes of event time; each shard's records in
event-time order, watermark 2 minutes behind) are read, routed and aggregated. Then the
closing records (a day later) go to both shards: the sink must be exactly DuckDB's windows
over every record put, none lost as late.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

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

SHARDS = 2
EVENTS = 1000
STALL = 40
"""Seconds the stalled reader emits nothing: twenty times ``idle_timeout``."""


async def test_a_stalled_reader_holds_the_fleet_watermark_however_long_it_is_silent(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    ep = localstack_endpoint
    data = payloads(EVENTS, seed=4101, ordered=True)
    want = truth(data)
    args = ("--idle", "2 seconds", "--delay", "2 minutes")
    async with fleet_on_fresh_stream(ep, tmp_path, SHARDS, "fleetst", *args) as fleet:
        worker = await fleet.add("w1", STREAMKIT_FLEET_FAULT=f"stall_first_batch:{STALL}")
        last = await asyncio.to_thread(put_random_keys, ep, fleet.stream, data)
        assert len(last) == SHARDS  # records on both shards
        await fleet.read_all(last)
        await close_and_collect(ep, fleet.stream, [fleet], len(want))
        await fleet.stop()
    stalled = [line for line in worker.lines if line.startswith("fault: ")]
    assert [s.split()[1] for s in stalled] == ["stalled", "unstalled"], fleet.tail()
    got = sink_rows(fleet.out)
    assert same(got, want), f"{len(got)} rows vs {len(want)}: {sorted(set(got) ^ set(want))[:6]}"
