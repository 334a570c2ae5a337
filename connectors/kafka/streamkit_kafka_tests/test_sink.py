"""The Kafka sink on a real Apache Kafka broker (or ``$STREAMKIT_KAFKA_BOOTSTRAP``): a streaming
query writes a topic that the Kafka source reads back; raw and Arrow values; dead letters
for rows that cannot be serialised; an unknown topic."""

from __future__ import annotations

import asyncio
import json
import math

import pyarrow as pa
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from streamkit_kafka import (
    BrokerUnreachableError,
    KafkaStreamSource,
    TopicNotFoundError,
)
from streamkit_kafka.sink import BATCH_HEADER, KafkaSink
from streamkit_kafka.testing import create_topic, read_all, unique

import streamkit as sk
from streamkit.streaming.sources.memory import MemoryStream
from streamkit.testing.events import SCHEMA, make_events
from streamkit.testing.tables import assert_table_equal

pytestmark = pytest.mark.integration

ROW_ORDER = ["event_time", "action", "user_id", "value"]


async def test_query_to_kafka_and_back_through_the_source(any_kafka: str) -> None:
    topic, group = unique("sink"), unique("g")
    await create_topic(any_kafka, topic, partitions=3)
    truth, _ = make_events(500, seed=11)
    memory = MemoryStream(schema=SCHEMA, max_records_per_batch=120)
    memory.add_rows(truth)
    sink = KafkaSink(any_kafka, topic, key_column="user_id")
    q = sk.read_stream.source(memory).write_stream.trigger(available_now=True).to(sink).start()
    assert await asyncio.to_thread(q.await_termination, 60)
    assert sink.records_sent == 500
    assert sink.dead_letters == []
    assert len(q.recent_progress) == 5  # 5 batches of <= 120 rows

    source = KafkaStreamSource(any_kafka, topic, group, schema=SCHEMA)
    await source.open(None)
    rows: list[pa.Table] = []
    try:
        while sum(t.num_rows for t in rows) < 500:
            batch = await asyncio.wait_for(source.next_batch(1.0), 30)
            if batch is not None:
                assert batch.dead_letters.num_rows == 0
                rows.append(batch.rows)
    finally:
        await source.close()
    assert_table_equal(pa.concat_tables(rows), truth, sort_by=ROW_ORDER)

    records = await read_all(any_kafka, topic, 500)
    by_key: dict[bytes, set[int]] = {}
    for partition, _, key, _ in records:
        assert key is not None
        by_key.setdefault(key, set()).add(partition)
    assert all(len(parts) == 1 for parts in by_key.values())  # one key, one partition
    assert len(by_key) == len(set(truth["user_id"].to_pylist()))


async def test_unserialisable_rows_are_dead_letters_not_a_crash(kafka_bootstrap: str) -> None:
    topic = unique("dead")
    await create_topic(kafka_bootstrap, topic)
    table = pa.table(
        {
            "id": pa.array([1, 2, 3, 4], pa.int64()),
            "score": pa.array([0.5, math.nan, 1.5, math.inf], pa.float64()),
        }
    )
    sink = KafkaSink(kafka_bootstrap, topic, key_column="id")
    try:
        await sink.add_batch(7, table)
    finally:
        await sink.close()
    assert [(d.batch_id, d.row["id"]) for d in sink.dead_letters] == [(7, 2), (7, 4)]
    assert all("JSON" in d.reason for d in sink.dead_letters)
    records = await read_all(kafka_bootstrap, topic, 2)
    assert sorted((k, v) for _, _, k, v in records) == [
        (b"1", b'{"id":1,"score":0.5}'),
        (b"3", b'{"id":3,"score":1.5}'),
    ]


async def test_raw_values_with_batch_header_and_null_dead_letter(kafka_bootstrap: str) -> None:
    topic = unique("raw")
    await create_topic(kafka_bootstrap, topic)
    table = pa.table({"data": pa.array([b"a", None, b"\x00\xff", b"t"], pa.binary())})
    sink = KafkaSink(kafka_bootstrap, topic, value_format="raw")
    try:
        await sink.add_batch(3, table)
    finally:
        await sink.close()
    assert [(d.row, d.reason) for d in sink.dead_letters] == [
        ({"data": None}, "column 'data' is null, not bytes or str")
    ]
    records = await read_all(kafka_bootstrap, topic, 3)
    assert [v for _, _, _, v in sorted(records, key=lambda r: r[1])] == [b"a", b"\x00\xff", b"t"]
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.seek_to_beginning()
        data = await consumer.getmany(timeout_ms=5000)
    finally:
        await consumer.stop()
    headers = [dict(r.headers) for rs in data.values() for r in rs]
    assert headers == [{BATCH_HEADER: b"3"}] * 3


async def test_arrow_values_round_trip(kafka_bootstrap: str) -> None:
    topic = unique("arrow")
    await create_topic(kafka_bootstrap, topic)
    truth, _ = make_events(250, seed=12)
    sink = KafkaSink(kafka_bootstrap, topic, value_format="arrow", arrow_rows_per_record=100)
    try:
        await sink.add_batch(0, truth)
    finally:
        await sink.close()
    records = sorted(await read_all(kafka_bootstrap, topic, 3), key=lambda r: r[1])
    assert len(records) == 3
    tables = [pa.ipc.open_stream(v).read_all() for _, _, _, v in records if v is not None]
    assert [t.num_rows for t in tables] == [100, 100, 50]
    assert pa.concat_tables(tables).equals(truth)


async def test_unknown_topic_is_named_on_the_first_batch(kafka_bootstrap: str) -> None:
    topic = unique("nosuch")
    sink = KafkaSink(kafka_bootstrap, topic)
    with pytest.raises(TopicNotFoundError, match=topic):
        await sink.add_batch(0, pa.table({"x": [1]}))
    await sink.close()


async def test_unreachable_broker_fails_after_bounded_retries() -> None:
    from streamkit.testing.servers import free_port

    bootstrap = f"127.0.0.1:{free_port()}"
    sink = KafkaSink(bootstrap, "t", connect_attempts=2, connect_backoff=0.1)
    with pytest.raises(BrokerUnreachableError, match="after 2 attempt"):
        await sink.add_batch(0, pa.table({"x": [1]}))
    await sink.close()


async def test_idempotent_producer_round_trip(kafka_bootstrap: str) -> None:
    """Every row once, with its key, in per-key order, and nothing more up to the end
    offsets. (A forced retry is not provoked: the broker advertises its own address, so a
    connection-cutting proxy would need a broker of its own.)"""
    topic = unique("idem")
    await create_topic(kafka_bootstrap, topic, partitions=3)
    truth, _ = make_events(300, seed=13)
    sink = KafkaSink(kafka_bootstrap, topic, key_column="user_id", enable_idempotence=True)
    try:
        await sink.add_batch(0, truth.slice(0, 150))
        await sink.add_batch(1, truth.slice(150))
    finally:
        await sink.close()
    assert sink.records_sent == 300
    got = await read_all(kafka_bootstrap, topic, 10**9, timeout=10)  # everything there is
    assert len(got) == 300, "no record twice, none missing"
    by_key: dict[bytes | None, list[object]] = {}
    for _, _, key, value in sorted(got, key=lambda r: (r[0], r[1])):
        assert value is not None
        by_key.setdefault(key, []).append(json.loads(value)["value"])
    want: dict[bytes | None, list[object]] = {}
    for row in truth.to_pylist():
        key = None if row["user_id"] is None else row["user_id"].encode()
        want.setdefault(key, []).append(row["value"])
    assert by_key == want
