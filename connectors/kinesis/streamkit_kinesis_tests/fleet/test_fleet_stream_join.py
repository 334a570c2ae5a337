"""Issue 14: joins of two streams on a fleet of worker processes (LocalStack,
``fleet_job.py --query stream_left`` / ``stream_right`` / ``stream_full`` /
``stream_inner_counted`` with ``--right-stream``).

The left stream's shards are source tasks of the lease table ``<app>``, the right
stream's of ``<app>-right``; each runs its side's plan and routes its rows by ``user_id``
through the exchange; the aggregation tasks join (and count). Records carry random
partition keys, so every user is on every shard of both streams. The expected rows are
DuckDB's join of the records put to the two streams; the sink is read as one Parquet
dataset (pyarrow), as the README says.

- ``stream_left``: a left outer join on ``user_id`` and a one-minute event-time range, in
  append mode; a worker SIGKILLs itself between the put of its second exchange batch and
  that checkpoint while a second worker runs, and a successor takes over: exactly DuckDB's
  rows (each pair once, each unmatched left row once, null-extended), the re-emitted
  chunks seen and dropped (``duplicates_dropped`` > 0), and the status files name both
  streams' shards (``left/<id>``, ``right/<id>``);
- ``stream_inner_counted``: the inner join's rows counted per (1-minute window,
  ``user_id``), two workers: exactly DuckDB's counts; their ``/api/worker`` reports name
  every shard of both streams as a source task (``left/<id>``, ``right/<id>``);
- ``stream_right`` / ``stream_full``: a right and a full outer join, two workers: exactly
  DuckDB's ``RIGHT JOIN`` / ``FULL JOIN`` (each unmatched row of a preserved side once,
  null-extended, emitted when the watermark passes it, as the single-process engine does);
- ``stream_full`` with one of two workers stopping gracefully (SIGTERM, exit 0) once its
  aggregation tasks hold buffered rows and a watermark; the other takes them over from
  their checkpoint (buffers and matched flags): exactly DuckDB's rows;
- ``stream_full`` with one of two workers SIGKILLed at the same moment (no fault hook: it
  dies wherever it is); the survivor and a successor started after the kill take its
  tasks over from their checkpoint: exactly DuckDB's rows;
- ``stream_left`` with a worker joining mid-join: one worker reads the first half of
  the records, then a second joins and takes leases of both source tables and of the
  exchange table before the rest are put: exactly DuckDB's rows;
- ``stream_left_distinct``: ``drop_duplicates`` above the left join (per left row its
  columns and whether it met a right row, keyed by the four columns), one of two workers
  SIGKILLed as above, then copies of the left records of the first half's last minute put
  again before the rest: exactly DuckDB's ``SELECT DISTINCT`` of the left join's rows.

Every data row's event time is passed by the watermark once the closing records are read
(a day later on every shard of both streams), and no row is late (each shard's records
are in event-time order), so the streaming join's append output is the whole batch join
of the records put.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow.dataset as ds
import pytest
from streamkit_kinesis.testing.streams import fresh_stream, unique

from streamkit_kinesis_tests.fleet.fleet_harness import (
    Fleet,
    checkpointed,
    closers,
    drop_fleet_tables,
    events_table,
    lease_owners,
    newest,
    payloads,
    put_every_shard,
    put_random_keys,
    statuses,
    until,
)

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack, pytest.mark.slow]

SHARDS = 2
EVENTS = 1000
"""Per stream: 50 users over 30 minutes, so about two thirds of the left rows match."""

JOIN = (
    "FROM l LEFT JOIN r ON l.user_id = r.user_id AND r.event_time >= l.event_time "
    "AND r.event_time <= l.event_time + INTERVAL 1 minute"
)


def _con(left: list[bytes], right: list[bytes]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.register("l", events_table(left))
    con.register("r", events_table(right))
    return con


def _us(t: datetime | None) -> int | None:
    return None if t is None else int(t.timestamp()) * 1_000_000 + t.microsecond


def _order(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(("", -1) if v is None else (str(v), v if isinstance(v, int) else 0) for v in row)


def _truth(left: list[bytes], right: list[bytes], sql: str) -> list[tuple[Any, ...]]:
    """DuckDB's answer to ``sql`` over the records put, sorted."""
    return sorted(_con(left, right).execute(sql).fetchall(), key=_order)


def _sink(out: Path) -> list[dict[str, Any]]:
    """The Parquet sink's rows as the README reads them (none before a first file)."""
    if not out.exists() or not any(out.glob("*.parquet")):
        return []
    rows: list[dict[str, Any]] = ds.dataset(str(out), format="parquet").to_table().to_pylist()
    return rows


def _joined_truth(
    left: list[bytes], right: list[bytes], how: str = "LEFT"
) -> list[tuple[Any, ...]]:
    """DuckDB's ``how`` (LEFT, RIGHT, FULL) join's rows, as :func:`_joined_sink` reads them."""
    return _truth(left, right,
                  "SELECT epoch_us(l.event_time), l.action, l.user_id, l.value, r.user_id, "
                  f"epoch_us(r.event_time), r.value {JOIN.replace('LEFT', how)}")  # fmt: skip


def _joined_sink(out: Path) -> list[tuple[Any, ...]]:
    rows = [(_us(r["event_time"]), r["action"], r["user_id"], r["value"], r["ruser"],
             _us(r["rtime"]), r["rvalue"]) for r in _sink(out)]  # fmt: skip
    return sorted(rows, key=_order)


def _counted_truth(left: list[bytes], right: list[bytes]) -> list[tuple[Any, ...]]:
    inner = JOIN.replace("LEFT JOIN", "JOIN")
    return _truth(left, right,
                  "SELECT epoch_us(time_bucket(INTERVAL 1 minute, l.event_time)), l.user_id, "
                  f"count(*), sum(r.value) {inner} GROUP BY ALL")  # fmt: skip


def _counted_sink(out: Path) -> list[tuple[Any, ...]]:
    rows = [(_us(r["window"]["start"]), r["user_id"], r["n"], r["total"]) for r in _sink(out)]
    return sorted(rows, key=_order)


def _reported_source_tasks(root: Path) -> set[str]:
    """The source leases the workers report on ``/api/worker`` (each worker's URL from its
    advertisement under ``<root>/fleet/workers/``), over every worker."""
    out: set[str] = set()
    for advert in sorted((root / "fleet" / "workers").glob("*.json")):
        url = json.loads(advert.read_text())["url"]
        with urllib.request.urlopen(url + "api/worker", timeout=10) as reply:
            out |= set(json.loads(reply.read())["leases"]["source"])
    return out


@contextlib.asynccontextmanager
async def _two_streams(
    ep: AwsEndpoint, tmp: Path, prefix: str, *extra: str
) -> AsyncIterator[tuple[Fleet, str]]:
    """A fleet (no worker yet) joining two new streams of :data:`SHARDS` shards: its
    stream is the left one; the right one's name is returned with it."""
    async with (
        fresh_stream(ep, SHARDS, f"{prefix}l") as (left, _),
        fresh_stream(ep, SHARDS, f"{prefix}r") as (right, _),
    ):
        fleet = Fleet(ep, left, unique(prefix), tmp, "--right-stream", right, *extra)
        try:
            yield fleet, right
        finally:
            await fleet.kill_all()
            await drop_fleet_tables(ep, fleet.app)


async def _read_all(fleet: Fleet, left: dict[str, int], right: dict[str, int]) -> None:
    """Until every lease of both source tables is checkpointed at its shard's last record."""

    async def done() -> bool:
        fleet.check_alive()
        return await checkpointed(fleet.ep, fleet.app, left) and await checkpointed(
            fleet.ep, f"{fleet.app}-right", right
        )

    await until(f"{fleet.app}: every shard of both streams read", done, 420)


async def _close(fleet: Fleet, right: str) -> list[bytes]:
    """The closing record put once to every shard of both streams (it moves both sides'
    watermarks a day on); the records put to each stream."""
    data = closers()[0]
    for stream in (fleet.stream, right):
        await asyncio.to_thread(put_every_shard, fleet.ep, stream, data)
    return [data] * SHARDS


async def test_left_join_of_two_streams_exact_across_a_kill_between_put_and_checkpoint(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    ep = localstack_endpoint
    left = payloads(EVENTS, seed=2301, ordered=True)
    right = payloads(EVENTS, seed=2302, ordered=True)
    half = EVENTS // 2
    args = ("--query", "stream_left", "--delay", "2 minutes")
    async with _two_streams(ep, tmp_path, "fsj", *args) as (fleet, other):
        await fleet.add("w1")
        victim = await fleet.add("victim", STREAMKIT_FLEET_FAULT="kill_before_checkpoint:2")

        async def two() -> bool:  # so it puts two exchange batches of the first half (with
            fleet.check_alive()  # one shard, one read can take all its records: no kill)
            owners = await _owners(fleet)
            return (owners[fleet.app] + owners[f"{fleet.app}-right"]).count("victim") >= 2

        await until("two source leases of the victim", two, 300)
        first_l, first_r = await _put(fleet, other, (left[:half], right[:half]))
        await until("the victim's kill", lambda: victim.proc.returncode is not None, 300)
        assert victim.proc.returncode == -9, fleet.tail()
        more_l, more_r = await _put(fleet, other, (left[half:], right[half:]))
        await fleet.add("successor")
        await _read_all(fleet, newest(first_l, more_l), newest(first_r, more_r))
        closing = await _close(fleet, other)
        want = _joined_truth(left + closing, right + closing)
        assert any(row[4] is None for row in want)  # unmatched left rows
        assert sum(row[4] is not None for row in want) > EVENTS // 3  # and pairs
        got = await _collect(fleet, want)
    assert got == want, _diff(got, want)
    tasks = statuses(fleet.root)
    aggregations = [s for s in tasks if s["kind"] == "aggregation"]
    # the victim's pending range was re-read and sent again: dropped, so each pair once
    assert sum(s["duplicates_dropped"] for s in aggregations) > 0, aggregations
    sources = {s["shard"] for s in tasks if s["kind"] == "source"}
    assert {s.split("/")[0] for s in sources} == {"left", "right"}, sources
    assert len(sources) == 2 * SHARDS, sources


async def test_inner_join_of_two_streams_counted_per_window_exact(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    ep = localstack_endpoint
    left = payloads(EVENTS, seed=2303, ordered=True)
    right = payloads(EVENTS, seed=2304, ordered=True)
    want = _counted_truth(left, right)  # (the closers' own window stays open)
    args = ("--query", "stream_inner_counted", "--delay", "2 minutes")
    async with _two_streams(ep, tmp_path, "fsjc", *args) as (fleet, other):
        await fleet.add("w1", STREAMKIT_UI_PORT="0")
        await fleet.add("w2", STREAMKIT_UI_PORT="0")
        last_l, last_r = await _put(fleet, other, (left, right))
        await _read_all(fleet, last_l, last_r)
        await _close(fleet, other)

        def full() -> bool:
            fleet.check_alive()
            return len(_counted_sink(fleet.out)) >= len(want)

        await until("every window in the sink", full, 420)
        held = await asyncio.to_thread(_reported_source_tasks, fleet.root)
        await fleet.stop()
    # each worker's /api/worker reports the shards of both streams it holds
    assert held == {f"{side}/shardId-{i:012d}" for side in ("left", "right")
                    for i in range(SHARDS)}, held  # fmt: skip
    got = _counted_sink(fleet.out)
    assert got == want, f"{len(got)} rows vs {len(want)}: {[r for r in got if r not in want][:5]}"


async def _put(
    fleet: Fleet, right: str, rows: tuple[list[bytes], list[bytes]]
) -> list[dict[str, int]]:
    """``rows`` (left, right) put to the two streams with random partition keys; the last
    sequence number put to each shard of each."""
    put = [asyncio.to_thread(put_random_keys, fleet.ep, s, d)
           for s, d in zip((fleet.stream, right), rows, strict=True)]  # fmt: skip
    return list(await asyncio.gather(*put))


async def _collect(
    fleet: Fleet,
    want: list[tuple[Any, ...]],
    read: Callable[[Path], list[tuple[Any, ...]]] = _joined_sink,
) -> list[tuple[Any, ...]]:
    """Once the sink holds as many rows as ``want``: every worker stopped gracefully, then
    the sink's rows (``read``). Fails with the rows missing when they do not come."""

    def full() -> bool:
        fleet.check_alive()
        return len(read(fleet.out)) >= len(want)

    try:
        await until("every row in the sink", full, 420)
    except AssertionError as e:
        raise AssertionError(f"{e}: {_diff(read(fleet.out), want)}") from None
    await fleet.stop()
    return read(fleet.out)


def _diff(got: list[tuple[Any, ...]], want: list[tuple[Any, ...]]) -> str:
    """The row counts, then some rows too many (a duplicate too) and too few."""
    extra, missing = Counter(got) - Counter(want), Counter(want) - Counter(got)
    return f"{len(got)} rows vs {len(want)}: extra {list(extra)[:3]}, missing {list(missing)[:3]}"


def _unmatched(want: list[tuple[Any, ...]]) -> tuple[int, int, int]:
    """(pairs, null-extended left rows, null-extended right rows) of a joined result."""
    return (sum(r[2] is not None and r[4] is not None for r in want),
            sum(r[4] is None for r in want), sum(r[2] is None for r in want))  # fmt: skip


@pytest.mark.parametrize("how", ["right", "full"])
async def test_outer_join_of_two_streams_exact(
    how: str, localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    ep = localstack_endpoint
    left = payloads(EVENTS, seed=2305, ordered=True)
    right = payloads(EVENTS, seed=2306, ordered=True)
    args = ("--query", f"stream_{how}", "--delay", "2 minutes")
    async with _two_streams(ep, tmp_path, f"fsj{how[0]}", *args) as (fleet, other):
        await fleet.add("w1")
        await fleet.add("w2")
        last_l, last_r = await _put(fleet, other, (left, right))
        await _read_all(fleet, last_l, last_r)
        closing = await _close(fleet, other)
        want = _joined_truth(left + closing, right + closing, how.upper())
        paired, lonely_left, lonely_right = _unmatched(want)
        assert paired > EVENTS // 3, paired
        assert lonely_right > 0, lonely_right
        assert (lonely_left > 0) == (how == "full"), lonely_left
        got = await _collect(fleet, want)
    assert got == want, _diff(got, want)


async def test_full_join_of_two_streams_exact_across_a_graceful_leave(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    ep = localstack_endpoint
    left = payloads(EVENTS, seed=2307, ordered=True)
    right = payloads(EVENTS, seed=2308, ordered=True)
    half = EVENTS // 2
    args = ("--query", "stream_full", "--delay", "2 minutes")
    async with _two_streams(ep, tmp_path, "fsjg", *args) as (fleet, other):
        await fleet.add("w1")
        leaver = await fleet.add("leaver")
        first_l, first_r = await _put(fleet, other, (left[:half], right[:half]))
        await _read_all(fleet, first_l, first_r)

        await _joining(fleet, "leaver")
        assert await leaver.terminate() == 0, fleet.tail()
        more_l, more_r = await _put(fleet, other, (left[half:], right[half:]))
        await _read_all(fleet, newest(first_l, more_l), newest(first_r, more_r))
        closing = await _close(fleet, other)
        want = _joined_truth(left + closing, right + closing, "FULL")
        got = await _collect(fleet, want)
    assert got == want, _diff(got, want)
    # every join task ran its last batches in w1, the leaver's from their checkpoint
    workers = {s["worker"] for s in statuses(fleet.root) if s["kind"] == "aggregation"}
    assert workers == {"w1"}, workers


async def _joining(fleet: Fleet, worker: str) -> None:
    """Until a join task of ``worker`` holds rows under a watermark (its status file names
    it with one)."""

    def joining() -> bool:
        fleet.check_alive()
        return any(s["kind"] == "aggregation" and s["worker"] == worker
                   and s["watermark_ms"] is not None for s in statuses(fleet.root))  # fmt: skip

    await until(f"a join task of {worker} with a watermark", joining, 300)


async def test_full_join_of_two_streams_exact_across_a_sigkill(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    ep = localstack_endpoint
    left = payloads(EVENTS, seed=2309, ordered=True)
    right = payloads(EVENTS, seed=2310, ordered=True)
    half = EVENTS // 2
    args = ("--query", "stream_full", "--delay", "2 minutes")
    async with _two_streams(ep, tmp_path, "fsjk", *args) as (fleet, other):
        await fleet.add("w1")
        victim = await fleet.add("victim")
        first_l, first_r = await _put(fleet, other, (left[:half], right[:half]))
        await _read_all(fleet, first_l, first_r)
        await _joining(fleet, "victim")
        await victim.kill()
        assert victim.proc.returncode == -9, fleet.tail()
        more_l, more_r = await _put(fleet, other, (left[half:], right[half:]))
        await fleet.add("successor")
        await _read_all(fleet, newest(first_l, more_l), newest(first_r, more_r))
        closing = await _close(fleet, other)
        want = _joined_truth(left + closing, right + closing, "FULL")
        assert min(_unmatched(want)) > 0, _unmatched(want)  # pairs, and lonely rows of each
        got = await _collect(fleet, want)
    assert got == want, _diff(got, want)
    # every join task ran its last batches in the survivor or the successor
    workers = {s["worker"] for s in statuses(fleet.root) if s["kind"] == "aggregation"}
    assert workers <= {"w1", "successor"}, workers


async def _owners(fleet: Fleet) -> dict[str, list[str | None]]:
    """Per lease table of the fleet (both source tables, the exchange table): the owner of
    each of its shard leases."""
    tables = (fleet.app, f"{fleet.app}-right", f"{fleet.app}-exchange")
    return {table: await lease_owners(fleet.ep, table) for table in tables}


async def test_left_join_of_two_streams_exact_with_a_worker_joining_mid_join(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    ep = localstack_endpoint
    left = payloads(EVENTS, seed=2311, ordered=True)
    right = payloads(EVENTS, seed=2312, ordered=True)
    half = EVENTS // 2
    args = ("--query", "stream_left", "--delay", "2 minutes")
    async with _two_streams(ep, tmp_path, "fsjj", *args) as (fleet, other):
        await fleet.add("w1")
        first_l, first_r = await _put(fleet, other, (left[:half], right[:half]))
        await _read_all(fleet, first_l, first_r)
        await _joining(fleet, "w1")
        await fleet.add("joiner")

        async def holds() -> bool:  # a lease of each table: source tasks of both streams
            fleet.check_alive()  # and join tasks changed hands
            return all("joiner" in owners for owners in (await _owners(fleet)).values())

        await until("the joiner's leases in every lease table", holds, 300)
        more_l, more_r = await _put(fleet, other, (left[half:], right[half:]))
        await _read_all(fleet, newest(first_l, more_l), newest(first_r, more_r))
        closing = await _close(fleet, other)
        want = _joined_truth(left + closing, right + closing)
        assert min(_unmatched(want)[:2]) > 0, _unmatched(want)  # pairs, lonely left rows
        got = await _collect(fleet, want)
    assert got == want, _diff(got, want)
    workers = {s["worker"] for s in statuses(fleet.root) if s["kind"] == "aggregation"}
    assert workers == {"w1", "joiner"}, workers


def _distinct_sink(out: Path) -> list[tuple[Any, ...]]:
    rows = [(_us(r["event_time"]), r["action"], r["user_id"], r["value"], r["hit"])
            for r in _sink(out)]  # fmt: skip
    return sorted(rows, key=_order)


def _when(data: bytes) -> datetime:
    return datetime.fromisoformat(json.loads(data)["event_time"])


async def test_left_join_deduplicated_exact_across_a_sigkill(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    """Spark's ``dropDuplicates`` with the event time in its keys: the first row of each
    key is emitted, later ones dropped while the key is held, and the key is held until
    the watermark the operator is given passes its event time. The join's output
    watermark lets no row of a key come after that, and every row of a key carries the
    same ``hit`` (a left row is null-extended only when it never met a right row), so the
    sink holds each distinct (left row, hit) once: DuckDB's ``SELECT DISTINCT`` of the left
    join. The copies put after the kill carry the keys the victim's checkpoint holds (their
    event times are ahead of every watermark: none is late), so the tasks taken over drop
    their rows only if the dedup keys were restored."""
    ep = localstack_endpoint
    left = payloads(EVENTS, seed=2313, ordered=True)
    right = payloads(EVENTS, seed=2314, ordered=True)
    half = EVENTS // 2
    ahead = max(_when(left[half - 1]), _when(right[half - 1])) - timedelta(minutes=2)
    copies = [d for d in left[:half] if _when(d) >= _when(left[half - 1]) - timedelta(minutes=1)]
    assert min(_when(d) for d in copies) > ahead, "a copy would be late"
    assert len(copies) > 10, len(copies)
    args = ("--query", "stream_left_distinct", "--delay", "2 minutes")
    async with _two_streams(ep, tmp_path, "fsjd", *args) as (fleet, other):
        await fleet.add("w1")
        victim = await fleet.add("victim")
        first_l, first_r = await _put(fleet, other, (left[:half], right[:half]))
        await _read_all(fleet, first_l, first_r)
        await _joining(fleet, "victim")
        await victim.kill()
        again, _ = await _put(fleet, other, (copies, []))
        more_l, more_r = await _put(fleet, other, (left[half:], right[half:]))
        await fleet.add("successor")
        await _read_all(fleet, newest(first_l, again, more_l), newest(first_r, more_r))
        closing = await _close(fleet, other)
        want = _truth(left + copies + closing, right + closing,
                      "SELECT DISTINCT epoch_us(l.event_time), l.action, l.user_id, l.value, "
                      f"r.user_id IS NOT NULL {JOIN}")  # fmt: skip
        assert {row[4] for row in want} == {True, False}, "hits and misses"
        got = await _collect(fleet, want, _distinct_sink)
    assert got == want, _diff(got, want)
