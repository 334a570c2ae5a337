"""Transactional input on Apache Kafka under ``read_committed`` (review finding 7): every
transaction ends with a commit or abort marker that takes an offset but is never handed
to the consumer. A partition read up to a marker has nothing left to deliver: it must not
stay declared to the per-partition watermarks, ``available_now`` must end, and the
checkpointed offset is the consumer's position past the marker (a restart there neither
skips nor repeats a record). A partition with an *open* transaction may still deliver
those records (when the writer commits), so it keeps holding the watermark back.

The watermark runs use ``idle_timeout`` of one hour: only the partition's declaration can
decide them. Expected values are plain arithmetic over the records produced."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from streamkit_kafka import KafkaStreamSource
from streamkit_kafka.testing import create_topic, unique

import streamkit as sk
from streamkit.testing.events import SCHEMA

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from streamkit.streaming.query import StreamingQuery

pytestmark = pytest.mark.integration

DAY = datetime(2024, 5, 1, tzinfo=UTC)
A, B = 0, 1
"""Partition A holds the transactions (old events), B plain records (newer events)."""
NEWER = [(10, m) for m in range(6)] + [(12, 0)]
"""B's events: six in hour 10, one at 12:00, so W = 12:00 - 10 min = 11:50."""
OLD = [(1, m) for m in range(5)]
"""A's events, in hour 1."""


def event(hour: int, minute: int) -> bytes:
    at = DAY + timedelta(hours=hour, minutes=minute)
    wire = {"event_time": at.isoformat().replace("+00:00", "Z"), "action": "view",
            "user_id": "u1", "value": 1}  # fmt: skip
    return json.dumps(wire).encode()


async def transactional(bootstrap: str) -> AIOKafkaProducer:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=unique("tx"))
    await producer.start()
    return producer


async def in_transaction(
    bootstrap: str, topic: str, events: list[tuple[int, int]], end: Literal["commit", "abort"]
) -> None:
    """``events`` to partition A in one transaction, committed or aborted."""
    producer = await transactional(bootstrap)
    try:
        await producer.begin_transaction()
        for hour, minute in events:
            await producer.send_and_wait(topic, event(hour, minute), partition=A)
        await (producer.commit_transaction() if end == "commit" else producer.abort_transaction())
    finally:
        await producer.stop()


async def plain(bootstrap: str, topic: str, events: list[tuple[int, int]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for hour, minute in events:
            await producer.send_and_wait(topic, event(hour, minute), partition=B)
    finally:
        await producer.stop()


async def log_ends(bootstrap: str, topic: str) -> dict[str, str]:
    """Each partition's log end offset (high watermark), markers included."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in (A, B)]
        ends = await consumer.end_offsets(tps)
        return {f"{topic}-{tp.partition}": str(ends[tp]) for tp in tps}
    finally:
        await consumer.stop()


def source(bootstrap: str, topic: str, group: str) -> KafkaStreamSource:
    return KafkaStreamSource(bootstrap, topic, group, schema=SCHEMA,
                             consumer_options={"isolation_level": "read_committed"})  # fmt: skip


def start(src: KafkaStreamSource, name: str, **trigger: object) -> StreamingQuery:
    """Hourly counts, update mode, policy ``min`` with a one-hour idle timeout."""
    df = sk.read_stream.source(src).with_watermark("event_time", "10 minutes")
    counts = df.group_by(sk.window("event_time", "1 hour")).agg(sk.count().alias("n"))
    writer = counts.write_stream.output_mode("update").watermark_policy("min", "1 hour")
    return writer.trigger(**trigger).memory(name).start()  # type: ignore[arg-type]


def hourly(name: str) -> dict[datetime, int]:
    """The latest count per hour window in the memory sink."""
    return {r["window"]["start"]: r["n"] for r in sk.memory_table(name).to_pylist()}


def late(q: StreamingQuery) -> int:
    return q.late_rows.num_rows if q.late_rows is not None else 0


async def wait_for(what: str, done: Callable[[], bool], q: StreamingQuery) -> None:
    """Poll ``done`` (generous deadline: the CI machine is loaded)."""
    deadline = time.monotonic() + 90
    while not done():
        assert q.exception is None, q.exception
        assert time.monotonic() < deadline, f"not within 90 s: {what}; {q.last_progress}"
        await asyncio.sleep(0.2)


def rows_in(q: StreamingQuery, name: str) -> int:
    """Rows counted in the sink so far, plus late ones."""
    return sum(hourly(name).values()) + late(q)


async def test_available_now_checkpoint_restart_neither_skips_nor_repeats(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Restart from a checkpoint that ends past A's commit marker: the next transaction's
    records (the first at the offset right after the marker) are counted once each."""
    topic, group = unique("txr"), unique("g")
    await create_topic(kafka_bootstrap, topic, partitions=2)
    await in_transaction(kafka_bootstrap, topic, OLD[:3], "commit")
    await plain(kafka_bootstrap, topic, NEWER[:6])
    ck = str(tmp_path / "ck")

    def run(name: str) -> StreamingQuery:
        src = source(kafka_bootstrap, topic, group)
        df = sk.read_stream.source(src).with_watermark("event_time", "10 minutes")
        counts = df.group_by(sk.window("event_time", "1 hour")).agg(sk.count().alias("n"))
        return (counts.write_stream.output_mode("update").watermark_policy("min", "1 hour")
                .trigger(available_now=True).checkpoint(ck).memory(name).start())  # fmt: skip

    first = run(unique("txr_a"))
    assert await asyncio.to_thread(first.await_termination, 120), "available_now did not end"
    assert first.committed[1] == await log_ends(kafka_bootstrap, topic)
    await in_transaction(kafka_bootstrap, topic, OLD[3:], "commit")  # offsets 4-5, marker 6
    name = unique("txr_b")
    second = run(name)
    assert await asyncio.to_thread(second.await_termination, 120), "available_now did not end"
    # Plain arithmetic: 3 events of hour 1 before the restart + 2 after = 5.
    assert hourly(name) == {DAY + timedelta(hours=1): 5}
    assert second.committed[1] == await log_ends(kafka_bootstrap, topic)
    assert sum(p.num_input_rows for p in second.recent_progress) == 2


async def test_a_partition_with_only_an_aborted_transaction_does_not_hold_the_watermark(
    kafka_bootstrap: str,
) -> None:
    """A is empty until a transaction is aborted on it while the query runs: A delivers
    no row and has nothing left to deliver, so W follows B: 12:00 - 10 min = 11:50."""
    topic, group = unique("txw"), unique("g")
    await create_topic(kafka_bootstrap, topic, partitions=2)
    await plain(kafka_bootstrap, topic, NEWER[:6])
    name = unique("txw_q")
    q = start(source(kafka_bootstrap, topic, group), name, processing_time=0.2)
    try:
        await wait_for("B's 6 rows", lambda: rows_in(q, name) == 6, q)
        await in_transaction(kafka_bootstrap, topic, OLD, "abort")
        await plain(kafka_bootstrap, topic, NEWER[6:])
        await wait_for("B's 7th row", lambda: rows_in(q, name) == 7, q)
        want = DAY + timedelta(hours=11, minutes=50)
        await wait_for("W = 11:50", lambda: (p := q.last_progress) is not None
                       and p.watermark == want, q)  # fmt: skip
    finally:
        await asyncio.to_thread(q.stop)
    assert late(q) == 0
    assert hourly(name) == {DAY + timedelta(hours=10): 6, DAY + timedelta(hours=12): 1}
    assert q.committed[1] == await log_ends(kafka_bootstrap, topic)


async def test_an_open_transaction_holds_the_watermark_until_it_commits(
    kafka_bootstrap: str,
) -> None:
    """A's transaction is open while B delivers in several batches: its records may still
    be committed, so A stays declared and W stays unset (B alone gives 11:50, then 11:51,
    and A's hour-1 rows would be late). Once committed they are counted, none late."""
    topic, group = unique("txo"), unique("g")
    await create_topic(kafka_bootstrap, topic, partitions=2)
    writer = await transactional(kafka_bootstrap)
    try:
        await writer.begin_transaction()
        for hour, minute in OLD:
            await writer.send_and_wait(topic, event(hour, minute), partition=A)
        await plain(kafka_bootstrap, topic, NEWER)
        name = unique("txo_q")
        q = start(source(kafka_bootstrap, topic, group), name, processing_time=0.2)
        try:
            await wait_for("B's 7 rows", lambda: rows_in(q, name) == len(NEWER), q)
            await plain(kafka_bootstrap, topic, [(12, 1)])  # one more batch of B, A known
            await wait_for("B's 8th row", lambda: rows_in(q, name) == len(NEWER) + 1, q)
            assert all(p.watermark is None for p in q.recent_progress), q.last_progress
            await writer.commit_transaction()
            total = len(NEWER) + 1 + len(OLD)
            await wait_for("A's 5 rows", lambda: rows_in(q, name) == total, q)
        finally:
            await asyncio.to_thread(q.stop)
    finally:
        await writer.stop()
    assert late(q) == 0
    # Plain arithmetic: 5 events in hour 1, 6 in hour 10, 2 in hour 12.
    assert hourly(name) == {DAY + timedelta(hours=1): 5, DAY + timedelta(hours=10): 6,
                            DAY + timedelta(hours=12): 2}  # fmt: skip


async def test_a_bounded_replay_ends_at_the_bound_not_past_the_markers_after_it(
    kafka_bootstrap: str,
) -> None:
    """``bound`` (exact replay of a logged batch): the partition holds a committed
    transaction (offsets 0-2, marker 3) and an aborted one (4-5, marker 6). Bounded at 4,
    no batch ends past 4 although the consumer's position passes the aborted records;
    after ``bound(None)`` the offset moves to the log end, 7, with no further row."""
    topic = unique("txb")
    await create_topic(kafka_bootstrap, topic)
    await in_transaction(kafka_bootstrap, topic, OLD[:3], "commit")
    await in_transaction(kafka_bootstrap, topic, OLD[3:], "abort")
    src = source(kafka_bootstrap, topic, unique("g"))
    pid = f"{topic}-0"
    await src.open(None)
    try:
        rows, ends = 0, list[str]()
        src.bound({pid: "4"})
        deadline = time.monotonic() + 60
        while rows < 3 or not ends or ends[-1] != "4":
            assert time.monotonic() < deadline, f"bounded read: {rows} rows, ends {ends}"
            if (batch := await src.next_batch(0.5)) is not None:
                rows, ends = rows + batch.rows.num_rows, [*ends, batch.end_offsets[pid]]
            assert all(int(e) <= 4 for e in ends), ends
        src.bound(None)
        while ends[-1] != "7":
            assert time.monotonic() < deadline, f"after the bound: ends {ends}"
            if (batch := await src.next_batch(0.5)) is not None:
                rows, ends = rows + batch.rows.num_rows, [*ends, batch.end_offsets[pid]]
        assert rows == 3
    finally:
        await src.close()
