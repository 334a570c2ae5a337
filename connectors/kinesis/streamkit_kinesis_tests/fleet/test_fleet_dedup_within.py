"""Issue 14: ``drop_duplicates_within_watermark(["user_id"])`` on a fleet of worker processes
(``fleet_job.py --query dedup_within``, watermark 10 minutes behind, append mode) over a
4-shard LocalStack stream written with random partition keys, so the rows of one user reach
the exchange from different source tasks.

Spark's rule (``StreamingDeduplicateWithinWatermarkExec``; the engine's
``streamkit/streaming/dedup.py``): a row at or before the watermark is late and dropped; the
first row of a key not held is emitted and the key is held until the watermark reaches the
first row's event time plus the delay; every other row of a held key is dropped.

The records are put in phases; the watermark each phase sees is fixed by "advancers" (one
row of a fresh user per shard, put after the phase's rows, so per shard every row of a
phase comes before them): with random partition keys the fleet watermark is the advancers'
time minus the delay once every shard's advancer is applied, and the test waits for every
aggregation task to report it (status files) before the next phase, so eviction (the batch
a moved watermark owes, run before any later delivery) has happened.

- A: one row per user, event times in the first 5 minutes, a third put twice; advancers at
  +12 min: watermark +2 min. (A row of a user first seen at +1 min is held until +11 min.)
- B (within the window): a third of the users again at their time + 5 min, some twice:
  all dropped; an expiry without the delay would have let those first seen before +2 min
  through. A victim worker takes every task over (restoring the held users), is SIGKILLed
  between the put of its second exchange batch and its checkpoint; a successor restores the
  users again and re-reads the pending ranges.
- C: advancers at +30 min: watermark +20 min, past every user's first time + 10 min.
- D (beyond the window): a third of the users again at their time + 25 min, some twice:
  each emitted once more; then advancers at +60 min (their rows emitted).

The expected rows are computed in plain Python from the records put and the phase
watermarks (:func:`_within_watermark`), not by streamkit; the Parquet sink, read as one
dataset (pyarrow), must equal them.
"""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from streamkit_kinesis.client import kinesis_client

from streamkit_kinesis_tests.fleet.fleet_harness import (
    Event,
    Fleet,
    fleet_on_fresh_stream,
    put_random_keys,
    sink_events,
    statuses,
    until,
)

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack, pytest.mark.slow]

SHARDS = 4
USERS = 450
DELAY = timedelta(minutes=10)
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
ARGS = ("--query", "dedup_within", "--delay", "10 minutes")
ACTIONS = ("view", "click", "cart", "buy", "share")


def _row(t: datetime, user: str, action: str, value: int) -> dict[str, Any]:
    return {"event_time": t.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "action": action,
            "user_id": user, "value": value}  # fmt: skip


def _bytes(rows: list[dict[str, Any]]) -> list[bytes]:
    return [json.dumps(r).encode() for r in rows]


def _advancers(tag: str, minutes: int) -> list[dict[str, Any]]:
    """One row of a fresh user per shard at ``T0 + minutes``."""
    t = T0 + timedelta(minutes=minutes)
    return [_row(t, f"{tag}{i}", "view", 0) for i in range(SHARDS)]


def _again(
    rng: random.Random, first: list[dict[str, Any]], shift: timedelta, bump: int
) -> list[dict[str, Any]]:
    """A third of the users of ``first`` again at their time + ``shift`` (another value),
    a third of those twice (identical copies), shuffled."""
    picked = rng.sample(first, len(first) // 3)
    rows = []
    for r in picked:
        t = datetime.fromisoformat(r["event_time"]) + shift
        rows.append(_row(t, r["user_id"], r["action"], r["value"] + bump))
    rows += rng.sample(rows, len(rows) // 3)
    rng.shuffle(rows)
    return rows


def _phases(seed: int) -> dict[str, list[dict[str, Any]]]:
    rng = random.Random(seed)
    first = [
        _row(T0 + timedelta(microseconds=rng.randrange(5 * 60 * 1_000_000)), f"u{i}",
             rng.choice(ACTIONS), rng.randrange(100))
        for i in range(USERS)
    ]  # fmt: skip
    a = first + rng.sample(first, USERS // 3)
    rng.shuffle(a)
    return {
        "A": a, "mid": _advancers("m", 12),
        "B": _again(rng, first, timedelta(minutes=5), 1000),
        "C": _advancers("c", 30),
        "D": _again(rng, first, timedelta(minutes=25), 2000), "end": _advancers("e", 60),
    }  # fmt: skip


def _us(t: datetime) -> int:
    return int(t.timestamp()) * 1_000_000 + t.microsecond


def _within_watermark(
    phases: list[tuple[list[dict[str, Any]], datetime | None]], delay: timedelta
) -> list[Event]:
    """Spark's dropDuplicatesWithinWatermark over phases of rows, each with the watermark
    in force while it is read (its keys evicted before it). Within a phase every row of a
    user is the same row, so which copy comes first does not matter."""
    held: dict[str, datetime] = {}  # user -> expires at
    out: list[Event] = []
    for rows, mark in phases:
        if mark is not None:
            held = {u: e for u, e in held.items() if e > mark}
        per_user: dict[str, dict[str, Any]] = {}
        for r in rows:
            assert per_user.setdefault(r["user_id"], r) == r, "one row per user and phase"
        for user, r in per_user.items():
            t = datetime.fromisoformat(r["event_time"])
            if (mark is not None and t <= mark) or user in held:
                continue
            held[user] = t + delay
            out.append((_us(t), r["action"], user, r["value"]))
    return sorted(out)


def _put_each_shard(ep: AwsEndpoint, stream: str, rows: list[dict[str, Any]]) -> None:
    """``rows[i]`` to the ``i``-th shard (ExplicitHashKey = its first hash key)."""
    client = kinesis_client(ep)
    shards = client.list_shards(StreamName=stream)["Shards"]
    assert len(shards) == len(rows)
    for shard, data in zip(shards, _bytes(rows), strict=True):
        key = shard["HashKeyRange"]["StartingHashKey"]
        out = client.put_records(
            StreamName=stream, Records=[{"Data": data, "PartitionKey": "x", "ExplicitHashKey": key}]
        )
        assert out.get("FailedRecordCount", 0) == 0, out


async def _put(ep: AwsEndpoint, stream: str, rows: list[dict[str, Any]]) -> dict[str, int]:
    return await asyncio.to_thread(put_random_keys, ep, stream, _bytes(rows))


async def _watermark_reached(fleet: Fleet, at: datetime) -> None:
    """Every aggregation task reported a fleet watermark at or past ``at``."""
    ms = _us(at) // 1000

    def reached() -> bool:
        fleet.check_alive()
        tasks = [s for s in statuses(fleet.root) if s["kind"] == "aggregation"]
        marks = [s["watermark_ms"] for s in tasks]
        return len(tasks) == SHARDS and all(m is not None and m >= ms for m in marks)

    await until(f"every aggregation task at watermark {at}", reached, 420)


async def test_duplicates_within_the_window_dropped_beyond_it_kept_across_a_kill(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    ep = localstack_endpoint
    ph = _phases(1403)
    a_times = [datetime.fromisoformat(r["event_time"]) for r in ph["A"]]
    assert max(a_times) - DELAY < min(a_times)  # nothing of A is late while A is read
    mid, c = T0 + timedelta(minutes=12) - DELAY, T0 + timedelta(minutes=30) - DELAY
    want = _within_watermark(
        [(ph["A"] + ph["mid"], None), (ph["B"], mid), (ph["C"], mid),
         (ph["D"], c), (ph["end"], c)], DELAY,
    )  # fmt: skip
    users = {u for _, _, u, _ in want}
    again = [e for e in want if e[3] >= 2000]
    assert len(users) == USERS + 3 * SHARDS  # every user of A and 3 advancer sets...
    assert len(again) == USERS // 3  # ...once more each user of D, none of B
    assert not [e for e in want if 1000 <= e[3] < 2000]
    async with fleet_on_fresh_stream(ep, tmp_path, SHARDS, "fdedupw", *ARGS) as fleet:
        await _put(ep, fleet.stream, ph["A"])
        await asyncio.to_thread(_put_each_shard, ep, fleet.stream, ph["mid"])
        first = await fleet.add("first")
        await _watermark_reached(fleet, mid)
        assert await first.terminate() == 0, fleet.tail()
        last = await _put(ep, fleet.stream, ph["B"])
        victim = await fleet.add("victim", STREAMKIT_FLEET_FAULT="kill_before_checkpoint:2")
        await until("the victim's kill", lambda: victim.proc.returncode is not None, 300)
        assert victim.proc.returncode == -9, fleet.tail()
        await fleet.add("successor")
        await fleet.read_all(last)
        await asyncio.to_thread(_put_each_shard, ep, fleet.stream, ph["C"])
        await _watermark_reached(fleet, c)
        await _put(ep, fleet.stream, ph["D"])
        await asyncio.to_thread(_put_each_shard, ep, fleet.stream, ph["end"])
        await _watermark_reached(fleet, T0 + timedelta(minutes=60) - DELAY)
        await fleet.stop()
    got = sink_events(fleet.out)
    assert got == want, f"{len(got)} rows vs {len(want)}: {sorted(set(got) ^ set(want))[:10]}"
    dropped = sum(
        s["duplicates_dropped"] for s in statuses(fleet.root) if s["kind"] == "aggregation"
    )
    assert dropped > 0, statuses(fleet.root)
