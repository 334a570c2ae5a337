"""Consumer tests 3 and 5: a worker process killed with SIGKILL, and one stopped with SIGTERM.

Two worker processes share a 4-shard stream on LocalStack. Records are written only once
the 2/2 split is stable, so every duplicate comes from the event under test.
"""

from __future__ import annotations

import signal
from collections import Counter
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import pytest
from streamkit_kinesis.testing.streams import fresh_stream, unique

from streamkit_kinesis_tests.consumer.consumer_support import (
    BackgroundProducer,
    WorkerProcess,
    drop_table,
    last_lease_writes,
    owners,
    poll_table,
    wait_until,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack, pytest.mark.slow]

FAILOVER = 3.0
TAKE = 0.5


def processed(workers: list[WorkerProcess]) -> Counter[str]:
    """How often each payload was processed, over all workers."""
    return Counter(r["data"] for w in workers for r in w.records())


def position(checkpoint: str) -> int:
    """A checkpoint as a number: TRIM_HORIZON (nothing checkpointed yet) is before all."""
    return -1 if checkpoint == "TRIM_HORIZON" else int(checkpoint)


def cycle_started_after(ends: list[float], t: float) -> float:
    """End time of the first logged take cycle that started after ``t``.

    Cycles are logged when they end and run one after another, so the second cycle that
    ends after ``t`` started after it.
    """
    later = [end for end in ends if end > t]
    assert len(later) >= 2, f"fewer than two take cycles logged after {t}: {ends}"
    return later[1]


def cycles_between(ends: list[float], start: float, gained: float) -> int:
    """Take cycles that ended after ``start`` and before ``gained``: at most one of them (the
    one in flight at ``start``) may have missed a lease that was takeable from ``start``."""
    return sum(1 for end in ends if start < end < gained)


async def written_after(producer: BackgroundProducer, more: int = 60) -> None:
    """Keep writing a little after the takeover: until ``more`` records (a second's worth)
    were written since now, however slowly the producer runs."""
    n = len(producer.sent)
    await wait_until(lambda: len(producer.sent) >= n + more, 60, f"{more} more records")


@asynccontextmanager
async def two_workers(
    ep: AwsEndpoint, tmp_path: Path, **opts: Any
) -> AsyncIterator[tuple[str, str, list[WorkerProcess], BackgroundProducer]]:
    """A 4-shard stream, workers A and B at a stable 2/2 split, a producer writing."""
    async with fresh_stream(ep, 4, "failover") as (stream, _):
        app = unique("app")
        settings = {"failover": FAILOVER, "take_interval": TAKE, **opts}
        workers = [WorkerProcess(ep, stream, app, w, tmp_path, **settings) for w in "AB"]
        producer = BackgroundProducer(ep, stream)
        try:
            await poll_table(ep, app, lambda t: owners(t) == {"A": 2, "B": 2}, 60, "2/2")
            cycles = [w.take_cycles() for w in workers]
            await wait_until(
                lambda: all(w.take_cycles() >= c + 3 for w, c in zip(workers, cycles, strict=True)),
                60,
                "three more take cycles",
            )
            table, _ = await poll_table(ep, app, lambda t: True, 60, "a read")
            assert owners(table) == {"A": 2, "B": 2}, "the split must be stable before writing"
            producer.start()
            yield stream, app, workers, producer
        finally:
            await producer.stop()
            for w in workers:
                w.close()
            await drop_table(ep, app)


async def test_killed_worker_shards_are_taken_after_failover_duplicates_bounded(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    ep = localstack_endpoint
    async with two_workers(ep, tmp_path, checkpoint_every=25) as (_, app, workers, producer):
        a, b = workers
        await wait_until(lambda: len(a.records()) >= 60, 90, "A to process records")
        killed_at = a.signal(signal.SIGKILL)
        await a.wait_exit(60)
        table, _ = await poll_table(ep, app, lambda t: True, 60, "a read")
        a_shards = {lease.lease_key for lease in table if lease.lease_owner == "A"}
        assert len(a_shards) == 2
        await poll_table(ep, app, lambda t: owners(t) == {"B": 4}, 90, "B to own all")
        await written_after(producer)
        sent = await producer.stop()
        await wait_until(lambda: set(processed(workers)) >= set(sent), 90, "every record")

    # B took A's shards only once they had expired: FAILOVER after A's last write to each
    # lease that DynamoDB accepted (B counts from when its Scan saw that write, which came
    # after A sent it), however late A last renewed before the kill on a loaded machine.
    gained = {e["shard"]: e["t"] for e in b.events("lease_gained") if e["t"] > killed_at}
    assert set(gained) == a_shards
    wrote = last_lease_writes(a)
    early = {s: gained[s] - wrote[s] for s in a_shards if gained[s] < wrote[s] + FAILOVER}
    assert not early, f"taken less than {FAILOVER}s after A's last lease write: {early}"
    # ...and no later than B's first take cycle that started once they had expired on B's
    # clock, counted on B's own log of cycles (not in seconds: load only adds cycles' time).
    ends = [e["t"] for e in b.events("take_cycle")]
    expired_by = cycle_started_after(ends, cycle_started_after(ends, killed_at)) + FAILOVER
    assert all(cycles_between(ends, expired_by, gained[s]) <= 1 for s in a_shards), (
        gained, expired_by, ends,
    )  # fmt: skip

    # B resumed each of A's shards exactly at A's last checkpoint in the lease table...
    resumed = {
        e["shard"]: position(e["start"]) for e in b.events("initialize") if e["t"] > killed_at
    }
    at_kill = {lease.lease_key: position(str(lease.checkpoint.sequence_number)) for lease in table}
    a_logged = {e["shard"]: int(e["seq"]) for e in a.events("checkpoint") if e["shard"] in a_shards}
    assert set(resumed) == a_shards
    assert {s: resumed[s] for s in a_shards} == {s: at_kill[s] for s in a_shards}
    assert all(a_logged.get(s, -1) <= resumed[s] for s in a_shards)  # A logged after writing
    # ...so exactly the records A processed after that checkpoint came twice, nothing else.
    after_checkpoint = {
        r["data"]
        for r in a.records()
        if r["shard"] in a_shards and int(r["seq"]) > resumed[r["shard"]]
    }
    counts = processed(workers)
    duplicates = {data for data, n in counts.items() if n > 1}
    assert duplicates == after_checkpoint
    assert max(counts.values()) <= 2
    assert set(counts) == set(sent)  # nothing lost
    takeover = {s: round(gained[s] - killed_at, 2) for s in sorted(a_shards)}
    print(f"takeover after {takeover} s; {len(duplicates)} duplicates of {len(sent)} records")


async def test_sigterm_hands_every_lease_to_the_other_worker_within_2s(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    ep = localstack_endpoint
    async with two_workers(ep, tmp_path, checkpoint_every=25) as (_, app, workers, producer):
        a = workers[0]
        await wait_until(lambda: len(a.records()) >= 60, 90, "A to process records")
        sent_at = a.signal(signal.SIGTERM)
        _, owned_at = await poll_table(
            ep, app, lambda t: owners(t) == {"B": 4}, 60, "B to own all", interval=0.02
        )
        assert await a.wait_exit(60) == 0, a.log()
        await written_after(producer)
        sent = await producer.stop()
        await wait_until(lambda: set(processed(workers)) >= set(sent), 90, "every record")

    handoff = owned_at - sent_at
    released_at = {e["shard"]: e["t"] for e in a.events("lease_released") if e["t"] > sent_at}
    assert len(released_at) == 2
    # No waiting for expiry: B took each released lease by the end of its first take cycle
    # that started after the release (B's own log of cycles, robust under load).
    b_ends = [e["t"] for e in workers[1].events("take_cycle")]
    b_gained = {e["shard"]: e["t"] for e in workers[1].events("lease_gained") if e["t"] > sent_at}
    for shard, t in released_at.items():
        assert cycles_between(b_ends, t, b_gained[shard]) <= 1, (shard, t, b_gained, b_ends)
    assert not [e for e in a.events("lease_lost") if e["t"] > sent_at]
    # A checkpointed everything it processed before releasing: nothing is processed twice.
    counts = processed(workers)
    assert set(counts) == set(sent)
    assert max(counts.values()) == 1
    print(f"hand-off in {handoff:.2f}s; {len(sent)} records, each processed once")
