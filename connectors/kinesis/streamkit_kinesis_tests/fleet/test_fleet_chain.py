"""Issue 18/14: a chain (README rule 11) on a fleet of worker processes (LocalStack,
``fleet_job.py --query chained``): ``with_watermark`` -> ``drop_duplicates()`` -> a left
join with a static Parquet table on ``action`` -> per (1-minute window, ``user_id``,
``kind``): count, value sum and the sum of ``value * weight``, in append mode. About a
third of the records are put twice with random partition keys, so a record and its copy
reach the exchange from different source tasks; rows are routed by ``user_id`` (the
``drop_duplicates`` key the aggregation groups by), and each aggregation task runs the
deduplication, the join and the aggregation on its rows.

A worker SIGKILLs itself between the put of its second exchange batch and its checkpoint
while a second worker runs, and a successor takes over: the sink, read as one Parquet
dataset (pyarrow), must hold every window exactly once with the values DuckDB computes
from the records put and the static table (``SELECT DISTINCT``, then the join and the
aggregation). A copy counted twice, a lost row or a window emitted twice fails.
"""

from __future__ import annotations

import random
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from streamkit_kinesis_tests.fleet.fleet_harness import (
    STATIC,
    events_table,
    fleet_on_fresh_stream,
    payloads,
    statuses,
    until,
    victim_then_successor,
)

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack, pytest.mark.slow]

SHARDS = 4
EVENTS = 1500


def _with_copies(seed: int) -> list[bytes]:
    """``EVENTS`` records plus a copy of about a third of them, shuffled (the delay of an
    hour over 30 minutes of data: no row is late, the closers end every window)."""
    rng = random.Random(seed)
    data = payloads(EVENTS, seed=seed)
    both = data + rng.sample(data, EVENTS // 3)
    rng.shuffle(both)
    return both


def _truth(data: list[bytes]) -> list[tuple[Any, ...]]:
    """(window start µs, user id, kind, count, sum, weighted sum) by DuckDB, sorted."""
    con = duckdb.connect()
    con.register("events", events_table(data))
    con.register("static", STATIC)
    rows = con.execute(
        "SELECT epoch_us(time_bucket(INTERVAL 1 minute, event_time)), user_id, kind, "
        "count(*), sum(value), sum(value * weight) FROM (SELECT DISTINCT * FROM events) e "
        "LEFT JOIN static s ON e.action = s.action GROUP BY ALL"
    ).fetchall()
    return sorted(rows, key=_order)


def _sink(out: Path) -> list[tuple[Any, ...]]:
    """The sink as one dataset: the same tuples as :func:`_truth`."""
    if not out.exists() or not any(out.glob("*.parquet")):
        return []
    table = ds.dataset(str(out), format="parquet").to_table().to_pylist()
    rows = [(_us(r["window"]["start"]), r["user_id"], r["kind"], r["n"], r["total"],
             r["weighted"]) for r in table]  # fmt: skip
    return sorted(rows, key=_order)


def _us(t: datetime) -> int:
    return int(t.timestamp()) * 1_000_000 + t.microsecond


def _order(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple("" if v is None else v for v in row)


async def test_dedup_join_windows_chain_exact_across_a_kill_between_put_and_checkpoint(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    ep = localstack_endpoint
    static = tmp_path / "static.parquet"
    pq.write_table(STATIC, static)
    data = _with_copies(1821)
    want = _truth(data)
    assert any(row[2] is None for row in want)  # the unmatched action is in the data
    assert sum(row[3] for row in want) < len(data)  # there are copies to drop
    args = ("--query", "chained", "--static", str(static), "--delay", "1 hour")
    async with fleet_on_fresh_stream(ep, tmp_path, SHARDS, "fchain", *args) as fleet:
        await victim_then_successor(ep, fleet, data)

        def full() -> bool:
            fleet.check_alive()
            return len(_sink(fleet.out)) >= len(want)

        await until("every window in the sink", full, 420)
        await fleet.stop()
    got = _sink(fleet.out)
    extra = [r for r in got if r not in want][:5]
    assert got == want, f"{len(got)} rows vs {len(want)}: {extra}"
    # the victim's pending range was re-read: its chunks came twice and the second copies
    # were dropped (the counter is checkpointed, so it survives handovers)
    kinds = [s for s in statuses(fleet.root) if s["kind"] == "aggregation"]
    assert sum(s["duplicates_dropped"] for s in kinds) > 0, kinds
