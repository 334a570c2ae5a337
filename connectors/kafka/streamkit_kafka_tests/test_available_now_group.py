"""``available_now`` on a consumer group with another member: the target covers every
partition of the topic, so partitions another member holds are waited for (or counted as
done once that member commits them), never skipped. The kill -9 test met the skipped case:
a killed member, still in the group until its session timed out, held a partition when the
final ``available_now`` run computed its target, and 400 records were never read."""

from __future__ import annotations

import asyncio
import time

import pyarrow as pa
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from streamkit_kafka import KafkaStreamSource
from streamkit_kafka.testing import create_topic, produce, unique

import streamkit as sk
from streamkit.testing.events import SCHEMA, make_events
from streamkit.testing.tables import assert_table_equal

pytestmark = pytest.mark.integration

ROW_ORDER = ["event_time", "action", "user_id", "value"]
PARTS = 3


async def _peer(bootstrap: str, topic: str, group: str) -> AIOKafkaConsumer:
    """A plain member of ``group`` that holds its partitions and reads nothing."""
    peer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                            enable_auto_commit=False, session_timeout_ms=30_000,
                            heartbeat_interval_ms=1000)  # fmt: skip
    await peer.start()
    deadline = time.monotonic() + 30
    while not peer.assignment():
        assert time.monotonic() < deadline, "the peer got no partition"
        await asyncio.sleep(0.1)
    return peer


async def _split(source: KafkaStreamSource, peer: AIOKafkaConsumer) -> set[str]:
    """Wait until the query's source and the peer hold disjoint parts of every partition."""
    deadline = time.monotonic() + 60
    while True:
        theirs = {f"{tp.topic}-{tp.partition}" for tp in peer.assignment()}
        mine = source.assignment
        if mine and theirs and not mine & theirs and len(mine | theirs) == PARTS:
            return theirs
        assert time.monotonic() < deadline, (mine, theirs)
        await asyncio.sleep(0.1)


def _rows_of(truth: pa.Table, pids: set[str], topic: str) -> pa.Table:
    """The truth rows produced to ``pids`` (value i went to partition i % PARTS)."""
    keep = [i for i in range(truth.num_rows) if f"{topic}-{i % PARTS}" in pids]
    return truth.take(keep)


async def _wait_rows(name: str, n: int) -> None:
    deadline = time.monotonic() + 60
    while (got := sk.memory_table(name).num_rows) < n:
        assert time.monotonic() < deadline, f"{got} of {n} rows"
        await asyncio.sleep(0.1)


async def test_available_now_waits_for_a_partition_another_member_holds(
    kafka_bootstrap: str,
) -> None:
    topic, group, name = unique("an-peer"), unique("g"), unique("an_peer").replace("-", "_")
    await create_topic(kafka_bootstrap, topic, partitions=PARTS)
    truth, records = make_events(600, seed=31)
    await produce(kafka_bootstrap, topic, [v for v, _ in records], partitions=PARTS)
    peer = await _peer(kafka_bootstrap, topic, group)
    source = KafkaStreamSource(kafka_bootstrap, topic, group, schema=SCHEMA,
                               max_records_per_batch=50)  # fmt: skip
    q = (sk.read_stream.source(source).write_stream.trigger(available_now=True)
         .memory(name).start())  # fmt: skip
    try:
        theirs = await _split(source, peer)
        mine = {f"{topic}-{p}" for p in range(PARTS)} - theirs
        await _wait_rows(name, _rows_of(truth, mine, topic).num_rows)
        # Everything the query holds is read; the peer's partitions are not done.
        assert not await asyncio.to_thread(q.await_termination, 5), (
            "available_now ended while another member held unread partitions"
        )
    finally:
        await peer.stop()  # leaves the group: its partitions move to the query
    assert await asyncio.to_thread(q.await_termination, 90)
    assert_table_equal(sk.memory_table(name), truth, sort_by=ROW_ORDER)


async def test_available_now_counts_partitions_a_member_committed_as_done(
    kafka_bootstrap: str,
) -> None:
    topic, group, name = unique("an-done"), unique("g"), unique("an_done").replace("-", "_")
    await create_topic(kafka_bootstrap, topic, partitions=PARTS)
    truth, records = make_events(600, seed=32)
    await produce(kafka_bootstrap, topic, [v for v, _ in records], partitions=PARTS)
    peer = await _peer(kafka_bootstrap, topic, group)
    source = KafkaStreamSource(kafka_bootstrap, topic, group, schema=SCHEMA,
                               max_records_per_batch=50)  # fmt: skip
    q = (sk.read_stream.source(source).write_stream.trigger(available_now=True)
         .memory(name).start())  # fmt: skip
    try:
        theirs = await _split(source, peer)
        held = [TopicPartition(topic, int(p.rsplit("-", 1)[1])) for p in theirs]
        ends = await peer.end_offsets(held)
        await peer.commit({tp: ends[tp] for tp in held})  # the peer processed its share
        assert await asyncio.to_thread(q.await_termination, 90)
    finally:
        await peer.stop()
    mine = {f"{topic}-{p}" for p in range(PARTS)} - theirs
    assert_table_equal(sk.memory_table(name), _rows_of(truth, mine, topic), sort_by=ROW_ORDER)
