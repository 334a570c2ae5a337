"""Issue 14: ``drop_duplicates`` on a fleet of worker processes (``fleet_job.py --query
dedup``: ``with_watermark("event_time", ...).drop_duplicates()``, append mode) over a
LocalStack stream written with random partition keys, with about a third of the records
put twice, so the copies of a record land on different shards and reach the exchange from
different source tasks. The Parquet sink, read as one dataset (pyarrow), must hold exactly
DuckDB's ``SELECT DISTINCT`` over the records put: a copy emitted twice, or a row lost,
fails. Every wait is on an observable event (lease checkpoints, the sink's rows, a process
exit); deadlines are generous.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pytest

from streamkit_kinesis_tests.fleet.fleet_harness import (
    Event,
    Fleet,
    events_table,
    fleet_on_fresh_stream,
    newest,
    payloads,
    put_random_keys,
    sink_events,
    statuses,
    until,
)

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack, pytest.mark.slow]

SHARDS = 4
EVENTS = 1500
ARGS = ("--query", "dedup", "--delay", "1 hour")


def _with_copies(seed: int) -> list[bytes]:
    """``EVENTS`` records plus a copy of about a third of them, shuffled."""
    rng = random.Random(seed)
    data = payloads(EVENTS, seed=seed)
    both = data + rng.sample(data, EVENTS // 3)
    rng.shuffle(both)
    return both


def _truth(data: list[bytes]) -> list[Event]:
    """The distinct rows, computed by DuckDB from the records put."""
    con = duckdb.connect()
    con.register("events", events_table(data))
    out = con.execute(
        "SELECT DISTINCT epoch_us(event_time), action, user_id, value FROM events"
    ).fetchall()
    return sorted((int(t), str(a), u, int(v)) for t, a, u, v in out)


async def _collect(fleet: Fleet, want: int) -> None:
    def full() -> bool:
        fleet.check_alive()
        return len(sink_events(fleet.out)) >= want

    await until(f"{want} distinct rows in the sink", full, 420)


async def test_two_workers_drop_every_copy(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    ep = localstack_endpoint
    data = _with_copies(1401)
    want = _truth(data)
    assert len(want) < len(data)  # there are copies to drop
    async with fleet_on_fresh_stream(ep, tmp_path, SHARDS, "fdedup", *ARGS) as fleet:
        last = await asyncio.to_thread(put_random_keys, ep, fleet.stream, data)
        await fleet.add("w0")
        await fleet.add("w1")
        await fleet.read_all(last)
        await _collect(fleet, len(want))
        await fleet.stop()
    got = sink_events(fleet.out)
    assert got == want, f"{len(got)} rows vs {len(want)}: {sorted(set(got) ^ set(want))[:10]}"


async def test_a_worker_killed_mid_run_loses_and_repeats_nothing(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    """The records in thirds, copies spread over all of them. A first worker reads the
    first third, emits its distinct rows and stops gracefully: every aggregation task holds
    keys in its checkpoint. The second third is put and a victim takes over (restoring the
    held keys), and SIGKILLs itself after the put of its second exchange batch and before
    that batch's checkpoint (``STREAMKIT_FLEET_FAULT=kill_before_checkpoint:2``); the last
    third is put and a successor takes every lease, restores the held keys again, re-reads
    the pending ranges (the chunks put again are dropped: counted in the status files) and
    reads on. A task that forgot its keys would emit a copy of an earlier row again; a lost
    chunk would lose rows: the sink must still be exactly the distinct rows."""
    ep = localstack_endpoint
    data = _with_copies(1402)
    want = _truth(data)
    third = len(data) // 3
    async with fleet_on_fresh_stream(ep, tmp_path, SHARDS, "fdedupk", *ARGS) as fleet:
        last = await asyncio.to_thread(put_random_keys, ep, fleet.stream, data[:third])
        first = await fleet.add("first")
        await fleet.read_all(last)
        await _collect(fleet, len(_truth(data[:third])))
        assert await first.terminate() == 0, fleet.tail()
        more = await asyncio.to_thread(put_random_keys, ep, fleet.stream, data[third : 2 * third])
        last = newest(last, more)
        victim = await fleet.add("victim", STREAMKIT_FLEET_FAULT="kill_before_checkpoint:2")
        await until("the victim's kill", lambda: victim.proc.returncode is not None, 300)
        assert victim.proc.returncode == -9, fleet.tail()
        more = await asyncio.to_thread(put_random_keys, ep, fleet.stream, data[2 * third :])
        await fleet.add("successor")
        await fleet.read_all(newest(last, more))
        await _collect(fleet, len(want))
        await fleet.stop()
    got = sink_events(fleet.out)
    assert got == want, f"{len(got)} rows vs {len(want)}: {sorted(set(got) ^ set(want))[:10]}"
    dropped = sum(
        s["duplicates_dropped"] for s in statuses(fleet.root) if s["kind"] == "aggregation"
    )
    assert dropped > 0, statuses(fleet.root)
