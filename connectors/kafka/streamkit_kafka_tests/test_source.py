"""The Kafka stream source on a real Apache Kafka broker (or ``$STREAMKIT_KAFKA_BOOTSTRAP``):
round trip with dead letters, a windowed query equal to the batch result, a group shared
by two sources, a restart from the query checkpoint, and start-up errors."""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from streamkit_kafka import (
    BrokerUnreachableError,
    KafkaStreamSource,
    TopicNotFoundError,
)
from streamkit_kafka.testing import create_topic, produce, unique

import streamkit as sk
from streamkit.streaming.contracts import Offsets
from streamkit.streaming.decode import FunctionDecoder
from streamkit.testing.events import SCHEMA, counts, make_events
from streamkit.testing.tables import assert_table_equal
from streamkit.testing.waits import HANG

if TYPE_CHECKING:
    from pathlib import Path

    from streamkit.streaming.query import StreamingQuery

pytestmark = pytest.mark.integration

KEYS = ["window", "action"]
ROW_ORDER = ["event_time", "action", "user_id", "value"]


def payloads(n: int, seed: int, start: int = 0) -> tuple[pa.Table, list[bytes]]:
    truth, records = make_events(n, seed, start)
    return truth, [data for data, _ in records]


def expected(table: pa.Table) -> pa.Table:
    return counts(sk.from_arrow(table)).to_arrow()


async def group_committed(bootstrap: str, group: str, topic: str, parts: int) -> list[int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        return [await consumer.committed(TopicPartition(topic, p)) for p in range(parts)]
    finally:
        await consumer.stop()


async def drain(
    source: KafkaStreamSource, n: int, timeout: float = 30.0
) -> tuple[list[pa.Table], list[pa.Table], Offsets]:
    """Batches from ``source`` until ``n`` records (rows + dead letters) arrived."""
    rows: list[pa.Table] = []
    dead: list[pa.Table] = []
    offsets: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while sum(t.num_rows for t in rows + dead) < n:
        assert time.monotonic() < deadline, f"only {sum(t.num_rows for t in rows)} of {n}"
        batch = await source.next_batch(max_wait=0.5)
        if batch is not None:
            rows.append(batch.rows)
            dead.append(batch.dead_letters)
            offsets.update(batch.end_offsets)
    return rows, dead, offsets


async def wait_for_rows(name: str, total: int, timeout: float = 60.0) -> pa.Table:
    """The memory table ``name`` once its ``n`` column sums to at least ``total``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            table = sk.memory_table(name)
        except KeyError:
            table = pa.table({})
        seen = pc.sum(table["n"]).as_py() if table.num_rows else 0
        if seen >= total:
            return table
        assert time.monotonic() < deadline, f"{name}: {seen} of {total} rows counted"
        await asyncio.sleep(0.2)


async def test_round_trip_rows_dead_letters_offsets_and_group_commit(
    kafka_bootstrap: str,
) -> None:
    topic, group = unique("rt"), unique("g")
    await create_topic(kafka_bootstrap, topic, partitions=2)
    truth, values = payloads(300, seed=3)
    values[10] = b"{not json"
    values[21] = b'{"action": "view"}'  # event_time is required
    await produce(kafka_bootstrap, topic, values, partitions=2)
    source = KafkaStreamSource(kafka_bootstrap, topic, group, schema=SCHEMA,
                               max_records_per_batch=64)  # fmt: skip
    await source.open(None)
    try:
        assert source.assignment == {f"{topic}-0", f"{topic}-1"}
        rows, dead, offsets = await drain(source, 300)
        assert all(t.num_rows <= 64 for t in rows)
        assert offsets == {f"{topic}-0": "150", f"{topic}-1": "150"}
        await source.commit(offsets)
    finally:
        await source.close()
    good = [i for i in range(300) if i not in (10, 21)]
    got = pa.concat_tables(rows)
    assert got.num_rows == 298
    by_partition = {p: [i for i in good if i % 2 == p] for p in (0, 1)}
    want = pa.concat_tables([truth.take(by_partition[0]), truth.take(by_partition[1])])
    assert_table_equal(got, want, sort_by=["event_time", "action", "user_id", "value"])
    letters = pa.concat_tables(dead).to_pylist()
    assert sorted((d["partition"], d["position"], d["raw"]) for d in letters) == [
        (f"{topic}-0", "5", b"{not json"),
        (f"{topic}-1", "10", b'{"action": "view"}'),
    ]
    reasons = {d["position"]: d["reason"] for d in letters}
    assert "event_time" in reasons["10"]
    assert "malformed JSON" in reasons["5"]
    assert await group_committed(kafka_bootstrap, group, topic, 2) == [150, 150]


async def test_windowed_query_over_three_partitions_equals_the_batch_result(
    any_kafka: str,
) -> None:
    topic, group, name = unique("win"), unique("g"), unique("kafka_win").replace("-", "_")
    await create_topic(any_kafka, topic, partitions=3)
    truth, values = payloads(1500, seed=4)
    await produce(any_kafka, topic, values[:900], partitions=3)
    df = sk.read_stream.kafka(any_kafka, topic, group, SCHEMA, max_records_per_batch=250)
    q = (counts(df).write_stream.output_mode("update").trigger(processing_time=0.1)
         .memory(name).start())  # fmt: skip
    try:
        await wait_for_rows(name, 900)
        await produce(any_kafka, topic, values[900:], partitions=3)
        table = await wait_for_rows(name, 1500)
    finally:
        await asyncio.to_thread(q.stop)
    assert_table_equal(table, expected(truth), sort_by=KEYS)
    parts = {p.partition for b in q.recent_progress for p in b.partitions if p.records}
    assert parts == {f"{topic}-{i}" for i in range(3)}
    assert q.exception is None


async def test_two_sources_in_one_group_share_the_partitions(kafka_bootstrap: str) -> None:
    topic, group = unique("share"), unique("g")
    await create_topic(kafka_bootstrap, topic, partitions=4)
    a = KafkaStreamSource(kafka_bootstrap, topic, group, schema=SCHEMA)
    b = KafkaStreamSource(kafka_bootstrap, topic, group, schema=SCHEMA)
    await a.open(None)
    try:
        await b.open(None)
        deadline = time.monotonic() + 20
        while a.assignment & b.assignment or len(a.assignment | b.assignment) < 4:
            assert time.monotonic() < deadline, (a.assignment, b.assignment)
            await a.next_batch(0.1)  # nothing produced yet: only lets the rebalance settle
        assert a.assignment
        assert b.assignment
        truth, values = payloads(400, seed=5)
        await produce(kafka_bootstrap, topic, values, partitions=4)
        (ra, oa), (rb, ob) = await drain_both(a, b, 400)
        await a.commit(oa)
        await b.commit(ob)
        owned_a, owned_b = a.assignment, b.assignment
    finally:
        await asyncio.gather(a.close(), b.close())
    got_a, got_b = pa.concat_tables(ra), pa.concat_tables(rb)
    assert got_a.num_rows + got_b.num_rows == 400  # no record twice, none lost
    assert_table_equal(pa.concat_tables([got_a, got_b]), truth,
                       sort_by=["event_time", "action", "user_id", "value"])  # fmt: skip
    assert {p for p, n in oa.items() if n == "100"} == owned_a
    assert {p for p, n in ob.items() if n == "100"} == owned_b
    assert await group_committed(kafka_bootstrap, group, topic, 4) == [100] * 4


async def test_a_member_joining_mid_stream_takes_over_without_loss(
    kafka_bootstrap: str,
) -> None:
    """A reads and commits part of the topic; B joins; A's revoked partitions yield nothing
    more from A, and B resumes them at A's committed offsets: every record exactly once."""
    topic, group = unique("join"), unique("g")
    await create_topic(kafka_bootstrap, topic, partitions=4)
    truth, values = payloads(400, seed=9)
    await produce(kafka_bootstrap, topic, values, partitions=4)
    a = KafkaStreamSource(kafka_bootstrap, topic, group, schema=SCHEMA, max_records_per_batch=40)
    b = KafkaStreamSource(kafka_bootstrap, topic, group, schema=SCHEMA, max_records_per_batch=40)
    await a.open(None)
    try:
        first, _, offsets = await drain(a, 120)
        await a.commit(offsets)
        before = a.assignment
        await b.open(None)
        (ra, _), (rb, _) = await drain_both(a, b, 400 - sum(t.num_rows for t in first))
        after_a, after_b = a.assignment, b.assignment
    finally:
        await asyncio.gather(a.close(), b.close())
    assert len(before) == 4
    assert after_a
    assert after_b
    assert not after_a & after_b
    got = pa.concat_tables([*first, *ra, *rb])
    assert got.num_rows == 400
    assert_table_equal(got, truth, sort_by=["event_time", "action", "user_id", "value"])


async def drain_both(
    a: KafkaStreamSource, b: KafkaStreamSource, total: int
) -> tuple[tuple[list[pa.Table], Offsets], tuple[list[pa.Table], Offsets]]:
    """Read ``a`` and ``b`` in turn until both together returned ``total`` rows; each
    batch only holds records of its source's partitions."""
    got: dict[int, tuple[list[pa.Table], dict[str, str]]] = {id(a): ([], {}), id(b): ([], {})}
    deadline = time.monotonic() + 30
    while sum(t.num_rows for rows, _ in got.values() for t in rows) < total:
        assert time.monotonic() < deadline, "records missing"
        for source in (a, b):
            batch = await source.next_batch(max_wait=0.1)
            if batch is not None:
                assert {p.partition for p in batch.partitions if p.records} <= source.assignment
                got[id(source)][0].append(batch.rows)
                got[id(source)][1].update(batch.end_offsets)
    return got[id(a)], got[id(b)]


class _NoGroupCommit(KafkaStreamSource):
    """A crash between the engine's commit and the group commit, every time: the group
    never learns anything, only the query's checkpoint knows where the query is."""

    async def commit(self, offsets: Offsets) -> None:
        self.commits.append(dict(offsets))


def _query(source: KafkaStreamSource, name: str, checkpoint: Path) -> StreamingQuery:
    df = sk.read_stream.source(source)
    return (counts(df).write_stream.output_mode("complete").trigger(processing_time=0.1)
            .checkpoint(str(checkpoint)).memory(name).start())  # fmt: skip


async def test_restart_resumes_from_the_query_checkpoint_not_the_group(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic, group, name = unique("restart"), unique("g"), unique("kafka_rs").replace("-", "_")
    await create_topic(kafka_bootstrap, topic, partitions=3)
    truth, values = payloads(1000, seed=6)
    await produce(kafka_bootstrap, topic, values[:600], partitions=3)
    first = _NoGroupCommit(kafka_bootstrap, topic, group, schema=SCHEMA,
                           max_records_per_batch=100)  # fmt: skip
    q1 = _query(first, name, tmp_path / "ckpt")
    try:
        await wait_for_rows(name, 600)
    finally:
        await asyncio.to_thread(q1.stop)
    assert await group_committed(kafka_bootstrap, group, topic, 3) == [None] * 3
    await produce(kafka_bootstrap, topic, values[600:], partitions=3)
    second = KafkaStreamSource(kafka_bootstrap, topic, group, schema=SCHEMA,
                               max_records_per_batch=100)  # fmt: skip
    q2 = _query(second, name, tmp_path / "ckpt")
    try:
        await wait_for_rows(name, 1000)
        # Caught up (every partition read to its end offset and committed): a double count
        # of the first 600 would be in the table now.
        await asyncio.to_thread(q2.process_all_available, 60)
        table = sk.memory_table(name)
    finally:
        await asyncio.to_thread(q2.stop)
    assert_table_equal(table, expected(truth), sort_by=KEYS)
    assert sum(p.num_input_rows for p in q2.recent_progress) == 400
    assert await group_committed(kafka_bootstrap, group, topic, 3) == [334, 333, 333]


async def test_schema_inferred_from_the_oldest_records(kafka_bootstrap: str) -> None:
    topic, group = unique("infer"), unique("g")
    await create_topic(kafka_bootstrap, topic, partitions=2)
    values = [json.dumps({"id": i, "name": f"n{i}"}).encode() for i in range(20)]
    await produce(kafka_bootstrap, topic, values, partitions=2)
    source = KafkaStreamSource(kafka_bootstrap, topic, group)
    assert source.schema == pa.schema([("id", pa.int64()), ("name", pa.string())])
    await source.open(None)
    try:
        rows, _, _ = await drain(source, 20)
    finally:
        await source.close()
    assert sorted(pa.concat_tables(rows)["id"].to_pylist()) == list(range(20))


async def test_unknown_topic_is_named(kafka_bootstrap: str) -> None:
    topic = unique("missing")
    source = KafkaStreamSource(kafka_bootstrap, [topic], unique("g"), schema=SCHEMA)
    with pytest.raises(TopicNotFoundError, match=topic):
        await source.open(None)


async def test_unreachable_broker_fails_after_bounded_retries() -> None:
    from streamkit.testing.servers import free_port

    bootstrap = f"127.0.0.1:{free_port()}"
    source = KafkaStreamSource(bootstrap, "t", "g", schema=SCHEMA,
                               connect_attempts=2, connect_backoff=0.1)  # fmt: skip
    t0 = time.monotonic()
    with pytest.raises(BrokerUnreachableError, match="after 2 attempt") as info:
        await source.open(None)
    assert time.monotonic() - t0 < HANG  # two attempts, not a hang
    assert info.value.bootstrap == bootstrap


async def test_available_now_reads_to_the_end_offsets_seen_at_start(
    kafka_bootstrap: str,
) -> None:
    """Records written while the run is under way (during its first batch) are not part of
    it: the run takes exactly what was there when it started, then ends."""
    topic, group = unique("avail"), unique("g")
    await create_topic(kafka_bootstrap, topic, partitions=3)
    truth, values = payloads(900, seed=7)
    _, late = payloads(300, seed=77, start=900)
    await produce(kafka_bootstrap, topic, values, partitions=3)
    source = KafkaStreamSource(kafka_bootstrap, topic, group, schema=SCHEMA,
                               max_records_per_batch=200)  # fmt: skip
    taken: list[pa.Table] = []

    def sink(df: sk.DataFrame, batch_id: int) -> None:
        if batch_id == 0:  # the run has started: write more, on every partition
            with ThreadPoolExecutor(1) as pool:
                pool.submit(
                    asyncio.run, produce(kafka_bootstrap, topic, late, partitions=3)
                ).result()
        taken.append(df.to_arrow())

    q = (sk.read_stream.source(source).write_stream.trigger(available_now=True)
         .foreach_batch(sink).start())  # fmt: skip
    assert await asyncio.to_thread(q.await_termination, 60)
    assert len(taken) >= 5, "900 records in batches of at most 200"
    assert await topic_size(kafka_bootstrap, topic, 3) == 1200, "the late records are there"
    assert_table_equal(pa.concat_tables(taken), truth, sort_by=ROW_ORDER)


async def topic_size(bootstrap: str, topic: str, partitions: int) -> int:
    """Records in ``topic`` (sum of its end offsets; nothing is deleted in these tests)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return sum(ends.values())
    finally:
        await consumer.stop()


def test_payload_json_is_the_event() -> None:
    """The test data's wire format (sanity for the tests above)."""
    truth, values = payloads(3, seed=8)
    assert [json.loads(v)["action"] for v in values] == truth["action"].to_pylist()


async def test_starting_latest_skips_what_is_already_there(kafka_bootstrap: str) -> None:
    topic, group = unique("latest"), unique("g")
    await create_topic(kafka_bootstrap, topic, partitions=2)
    _, old = payloads(100, seed=10)
    truth, new = payloads(50, seed=10, start=100)
    await produce(kafka_bootstrap, topic, old, partitions=2)
    source = KafkaStreamSource(kafka_bootstrap, topic, group, schema=SCHEMA, starting="latest")
    await source.open(None)
    try:
        assert await source.next_batch(0.5) is not None  # the start positions, no rows
        await produce(kafka_bootstrap, topic, new, partitions=2)
        rows, _, offsets = await drain(source, 50)
    finally:
        await source.close()
    assert_table_equal(pa.concat_tables(rows), truth, sort_by=ROW_ORDER)
    assert offsets == {f"{topic}-0": "75", f"{topic}-1": "75"}


async def test_projection_pushdown_decodes_and_checks_only_the_columns_read(
    kafka_bootstrap: str,
) -> None:
    topic, group = unique("pd"), unique("g")
    await create_topic(kafka_bootstrap, topic, partitions=1)
    truth, values = payloads(50, seed=6)
    values[3] = json.dumps({**json.loads(values[3]), "value": "not a number"}).encode()
    values[7] = json.dumps({**json.loads(values[7]), "action": 42}).encode()
    await produce(kafka_bootstrap, topic, values, partitions=1)
    source = KafkaStreamSource(kafka_bootstrap, topic, group, schema=SCHEMA)
    assert source.read_only(["event_time", "action"])
    await source.open(None)
    try:
        rows, dead, _ = await drain(source, 50)
    finally:
        await source.close()
    got = pa.concat_tables([t for t in rows if t.num_rows])
    assert got.column_names == ["event_time", "action"]
    assert got.num_rows == 49  # the mistyped unread "value" is not checked
    assert [d["position"] for d in pa.concat_tables(dead).to_pylist()] == ["7"]
    keep = [i for i in range(50) if i != 7]
    assert got["event_time"].to_pylist() == truth["event_time"].take(keep).to_pylist()


def test_a_custom_decoder_cannot_project() -> None:
    decoder = FunctionDecoder(
        lambda p: pa.table({"n": [len(x) for x in p]}), pa.schema([("n", pa.int64())])
    )
    source = KafkaStreamSource("127.0.0.1:1", "t", "g", decoder=decoder)
    assert source.read_only(["n"]) is False
    assert source.read_only(None) is True
