"""Issue 14: after a takeover, the batch without input the previous owner owed runs at once
(LocalStack, worker processes running ``fleet_job.py``, windowed count/sum/avg in append
mode).

A worker alone reads the records; then one closing record a day later is put to every
shard. The aggregation task whose batch applies the last closing chunk finds the fleet
watermark past every data window: it commits that batch and checkpoints its lease, and
owes a batch without input, which would emit the windows. There the worker SIGKILLs
itself (``STREAMKIT_FLEET_FAULT=kill_owing_after:<ms>``). No record is put afterwards, so
the successor that takes the task over gets no input for it: only a restored task that
owes the batch at once emits those windows. The sink must equal DuckDB over the records
put. Every wait is on an observable event (a process exit, the sink's rows); deadlines are
generous.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from streamkit_kinesis_tests.fleet.fleet_harness import (
    closers,
    fleet_on_fresh_stream,
    payloads,
    put_every_shard,
    put_random_keys,
    same,
    sink_rows,
    truth,
    until,
)

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack, pytest.mark.slow]

SHARDS = 2
EVENTS = 1000
PAST_DATA_MS = int(datetime(2024, 5, 2, tzinfo=UTC).timestamp() * 1000)
"""A fleet watermark past every data window (the data span 30 minutes of 2024-05-01; the
closers' watermark is a day later minus the delay)."""


async def test_successor_runs_the_batch_its_killed_predecessor_owed(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    ep = localstack_endpoint
    data = payloads(EVENTS, seed=1416)
    want = truth(data)
    assert max(r[0] for r in want) // 1000 < PAST_DATA_MS
    async with fleet_on_fresh_stream(ep, tmp_path, SHARDS, "owed") as fleet:
        last = await asyncio.to_thread(put_random_keys, ep, fleet.stream, data)
        victim = await fleet.add("victim", STREAMKIT_FLEET_FAULT=f"kill_owing_after:{PAST_DATA_MS}")
        await fleet.read_all(last)
        await asyncio.to_thread(put_every_shard, ep, fleet.stream, closers()[0])
        await until("the victim's kill", lambda: victim.proc.returncode is not None, 300)
        assert victim.proc.returncode == -9, fleet.tail()
        assert any(line.startswith("fault: killed owing") for line in victim.lines)
        await fleet.add("successor")  # no record is put from here on

        def full() -> bool:
            fleet.check_alive()
            return len(sink_rows(fleet.out)) >= len(want)

        await until("every window in the sink", full, 300)
        await fleet.stop()
    got = sink_rows(fleet.out)
    assert same(got, want), f"{len(got)} rows vs {len(want)}: {sorted(set(got) ^ set(want))[:10]}"
