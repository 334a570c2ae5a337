"""Issue 14: stream-static joins on a fleet of worker processes (LocalStack,
``fleet_job.py --query joined`` / ``joined_stateless``). Each source task joins its own
rows with the static Parquet table (the same file for every worker) before
pre-aggregating (or, stateless, before its sink). The expected result is computed by
DuckDB from the records put and the static table; the sink is read as one Parquet dataset
(pyarrow), as the README says.

- ``joined``: a left join on ``action`` (one action has no row in the table: its rows get
  a null ``kind``), then per (1-minute window, ``kind``): count, value sum and the sum of
  ``value * weight``, in append mode; a worker SIGKILLs itself between the put of its
  second exchange batch and its checkpoint while a second worker runs, and a successor
  takes over: every window exactly once, with DuckDB's values;
- ``joined_stateless``: an inner join of the rows with ``value > 20``; a worker SIGKILLed
  between a batch's commit and its sink files, a successor writes that batch: exactly
  DuckDB's rows.
"""

from __future__ import annotations

import asyncio
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
    put_random_keys,
    statuses,
    until,
    victim_then_successor,
)

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack, pytest.mark.slow]

SHARDS = 4
EVENTS = 2000


def _con(data: list[bytes]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.register("events", events_table(data))
    con.register("static", STATIC)
    return con


def _truth(data: list[bytes]) -> list[tuple[Any, ...]]:
    """(window start µs, kind, count, sum, weighted sum) by DuckDB, sorted."""
    rows = (
        _con(data)
        .execute(
            "SELECT epoch_us(time_bucket(INTERVAL 1 minute, event_time)), kind, count(*), "
            "sum(value), sum(value * weight) FROM events e LEFT JOIN static s "
            "ON e.action = s.action GROUP BY ALL"
        )
        .fetchall()
    )
    return sorted(rows, key=_order)


def _sink(out: Path) -> list[tuple[Any, ...]]:
    """The aggregated sink as one dataset: the same tuples as :func:`_truth`."""
    if not out.exists() or not any(out.glob("*.parquet")):
        return []
    rows = [(_us(r["window"]["start"]), r["kind"], r["n"], r["total"], r["weighted"])
            for r in ds.dataset(str(out), format="parquet").to_table().to_pylist()]  # fmt: skip
    return sorted(rows, key=_order)


def _us(t: datetime) -> int:
    return int(t.timestamp()) * 1_000_000 + t.microsecond


def _order(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple("" if v is None else v for v in row)


async def test_left_join_then_windows_exact_across_a_kill_between_put_and_checkpoint(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    ep = localstack_endpoint
    static = tmp_path / "static.parquet"
    pq.write_table(STATIC, static)
    data = payloads(EVENTS, seed=1416, ordered=True)
    want = _truth(data)
    assert any(row[1] is None for row in want)  # the unmatched action is in the data
    args = ("--query", "joined", "--static", str(static), "--delay", "2 minutes")
    async with fleet_on_fresh_stream(ep, tmp_path, SHARDS, "fjoin", *args) as fleet:
        await victim_then_successor(ep, fleet, data)

        def full() -> bool:
            fleet.check_alive()
            return len(_sink(fleet.out)) >= len(want)

        await until("every window in the sink", full, 420)
        await fleet.stop()
    got = _sink(fleet.out)
    assert got == want, f"{len(got)} rows vs {len(want)}: {[r for r in got if r not in want][:5]}"
    # the victim's pending range was re-read and joined again: its chunks came twice and
    # the second copies were dropped (the counter is checkpointed, so it survives handovers)
    kinds = [s for s in statuses(fleet.root) if s["kind"] == "aggregation"]
    assert sum(s["duplicates_dropped"] for s in kinds) > 0, kinds


def _stateless_truth(data: list[bytes]) -> list[tuple[Any, ...]]:
    rows = (
        _con(data)
        .execute(
            "SELECT epoch_us(event_time), e.action, user_id, value, kind, weight FROM events e "
            "JOIN static s ON e.action = s.action WHERE value > 20"
        )
        .fetchall()
    )
    return sorted(rows, key=_order)


def _stateless_sink(out: Path) -> list[tuple[Any, ...]]:
    if not out.exists() or not any(out.glob("*.parquet")):
        return []
    table = ds.dataset(str(out), format="parquet").to_table().to_pylist()
    rows = [(_us(r["event_time"]), r["action"], r["user_id"], r["value"], r["kind"],
             r["weight"]) for r in table]  # fmt: skip
    return sorted(rows, key=_order)


async def test_stateless_inner_join_exact_across_a_kill_after_commit(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    ep = localstack_endpoint
    static = tmp_path / "static.parquet"
    pq.write_table(STATIC, static)
    data = payloads(EVENTS, seed=1417)
    want = _stateless_truth(data)
    third = len(data) // 3
    args = ("--query", "joined_stateless", "--static", str(static))
    async with fleet_on_fresh_stream(ep, tmp_path, 2, "fjoins", *args) as fleet:
        victim = await fleet.add("victim", STREAMKIT_FLEET_FAULT="kill_after_source_commit")
        first = await asyncio.to_thread(put_random_keys, ep, fleet.stream, data[:third])
        await fleet.read_all(first)  # batch 0 of every shard committed and checkpointed
        second = await asyncio.to_thread(put_random_keys, ep, fleet.stream, data[third:])
        await until("the victim's kill", lambda: victim.proc.returncode is not None, 300)
        assert victim.proc.returncode == -9, fleet.tail()
        await fleet.add("successor", STREAMKIT_FLEET_LOG="info")
        await fleet.read_all({s: max(first.get(s, 0), second.get(s, 0)) for s in first})

        def full() -> bool:
            fleet.check_alive()
            return len(_stateless_sink(fleet.out)) >= len(want)

        await until("every joined row in the sink", full, 120)
        await fleet.stop()
        assert "to the sink again" in fleet.tail(10**7)
    got = _stateless_sink(fleet.out)
    assert got == want, f"{len(got)} rows vs {len(want)}"
