"""Per-partition watermarks on Kafka across a restart (issue 18, point 5): partition 0
holds events nine hours newer than partition 1's; after a restart partition 1's backlog
arrives. Under the default ``"min"`` policy nothing of it is late (the watermark follows
the slow partition, and its maximum is restored from the checkpoint); under Spark's
``"global"`` policy the same records are dropped as late, which shows the test can fail."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from streamkit_kafka import KafkaStreamSource
from streamkit_kafka.testing import create_topic, produce, unique

import streamkit as sk
from streamkit.testing.events import SCHEMA

if TYPE_CHECKING:
    from pathlib import Path

    from streamkit.streaming.contracts import Offsets
    from streamkit.streaming.watermarks import WatermarkPolicy

pytestmark = pytest.mark.integration

DAY = datetime(2024, 5, 1, tzinfo=UTC)


def event(hour: int, minute: int) -> bytes:
    at = DAY + timedelta(hours=hour, minutes=minute)
    wire = {"event_time": at.isoformat().replace("+00:00", "Z"), "action": "view",
            "user_id": "u1", "value": 1}  # fmt: skip
    return json.dumps(wire).encode()


async def run(bootstrap: str, topic: str, group: str, name: str, checkpoint: Path, *,
              policy: WatermarkPolicy) -> tuple[dict[datetime, int], int]:  # fmt: skip
    """One ``available_now`` run from ``checkpoint``: (count per hour window emitted by
    this run, late rows)."""
    source = KafkaStreamSource(bootstrap, topic, group, schema=SCHEMA)
    df = sk.read_stream.source(source).with_watermark("event_time", "10 minutes")
    counts = df.group_by(sk.window("event_time", "1 hour")).agg(sk.count().alias("n"))
    q = (counts.write_stream.output_mode("update").watermark_policy(policy)
         .trigger(available_now=True).checkpoint(str(checkpoint)).memory(name).start())  # fmt: skip
    assert await asyncio.to_thread(q.await_termination, 120)
    table = sk.memory_table(name).to_pylist()
    late = q.late_rows.num_rows if q.late_rows is not None else 0
    return {r["window"]["start"]: r["n"] for r in table}, late


@pytest.mark.parametrize(("policy", "counted", "late"), [("min", 21, 0), ("global", None, 20)])
async def test_a_slow_partitions_backlog_after_a_restart(
    kafka_bootstrap: str, tmp_path: Path, policy: WatermarkPolicy, counted: int | None, late: int
) -> None:
    topic, group = unique("pwm"), unique("g")
    await create_topic(kafka_bootstrap, topic, partitions=2)
    fresh = [event(10, m) for m in range(6)]  # partition 0: 10:00-10:05
    await produce(kafka_bootstrap, topic, [fresh[0], event(1, 0)], partitions=2)
    await produce(kafka_bootstrap, topic, fresh[1:], partitions=1)  # all to partition 0
    first, late_first = await run(kafka_bootstrap, topic, group, unique("pwm_a"),
                                  tmp_path / "ck", policy=policy)  # fmt: skip
    assert late_first == 0
    assert first == {DAY + timedelta(hours=10): 6, DAY + timedelta(hours=1): 1}
    # The slow partition's backlog: 20 events in [01:05, 01:25), window [01:00, 02:00).
    await _produce_to(kafka_bootstrap, topic, [event(1, 5 + m) for m in range(20)], partition=1)
    second, late_second = await run(kafka_bootstrap, topic, group, unique("pwm_b"),
                                    tmp_path / "ck", policy=policy)  # fmt: skip
    # Plain arithmetic: 1 event of hour 1 before the restart + 20 after = 21 (min policy);
    # under the global policy W = 10:05 - 10 min = 09:55 >= 02:00, so all 20 are late.
    assert late_second == late
    assert second.get(DAY + timedelta(hours=1)) == counted


async def _produce_to(bootstrap: str, topic: str, values: list[bytes], *, partition: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, partition=partition)
    finally:
        await producer.stop()


class _SlowSecondPartition(KafkaStreamSource):
    """A real Kafka source whose consumer hands out only partition 0's records for the
    first ``held`` fetches (the real ``getmany`` asked for that partition alone), as when
    one partition's fetches lag behind: partition 1 has a backlog but delivers nothing."""

    def __init__(self, *args: Any, held: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.held = held
        self.partition_1_delivered_after: int | None = None
        self._fetches = 0

    async def open(self, offsets: Offsets | None) -> None:
        await super().open(offsets)
        consumer = self._consumer
        real = consumer.getmany

        async def getmany(*partitions: TopicPartition, **kwargs: Any) -> Any:
            self._fetches += 1
            if self._fetches <= self.held:
                return await real(TopicPartition(self.topics[0], 0), **kwargs)
            got = await real(*partitions, **kwargs)
            if any(tp.partition == 1 and records for tp, records in got.items()):
                self.partition_1_delivered_after = self.partition_1_delivered_after or (
                    self._fetches - 1
                )
            return got

        consumer.getmany = getmany


@pytest.mark.parametrize(("policy", "late"), [("min", 0), ("global", 20)])
async def test_an_assigned_partition_that_has_not_delivered_yet_holds_the_watermark(
    kafka_bootstrap: str, policy: WatermarkPolicy, late: int
) -> None:
    """Partition 1 holds a backlog from 01:05 but its first rows arrive only after
    partition 0 has delivered 10:00-10:29 in three batches. A partition assigned and not
    read to its end is declared to the watermarks, so it holds W back before it has
    delivered a single row: none of its rows is late. Spark's global policy drops them,
    and so would the ``min`` policy without the declaration (W would be 10:19)."""
    topic, group = unique("pwd"), unique("g")
    await create_topic(kafka_bootstrap, topic, partitions=2)
    await _produce_to(kafka_bootstrap, topic, [event(10, m) for m in range(30)], partition=0)
    await _produce_to(kafka_bootstrap, topic, [event(1, 5 + m) for m in range(20)], partition=1)
    source = _SlowSecondPartition(
        kafka_bootstrap, topic, group, schema=SCHEMA, max_records_per_batch=10, held=4
    )
    df = sk.read_stream.source(source).with_watermark("event_time", "10 minutes")
    counts = df.group_by(sk.window("event_time", "1 hour")).agg(sk.count().alias("n"))
    name = unique("pwd_sink")
    q = (counts.write_stream.output_mode("update").watermark_policy(policy)
         .trigger(available_now=True).memory(name).start())  # fmt: skip
    assert await asyncio.to_thread(q.await_termination, 120)
    # The scenario happened: partition 1 delivered nothing in the first four fetches.
    assert source.partition_1_delivered_after is not None
    assert source.partition_1_delivered_after >= source.held
    got = {r["window"]["start"]: r["n"] for r in sk.memory_table(name).to_pylist()}
    assert (q.late_rows.num_rows if q.late_rows is not None else 0) == late
    # Plain arithmetic: 30 rows in hour 10; hour 1 keeps its 20 rows unless they are late.
    expected = {DAY + timedelta(hours=10): 30}
    if late == 0:
        expected[DAY + timedelta(hours=1)] = 20
    assert got == expected


async def test_partition_maxima_are_over_the_event_time_computed_before_the_watermark(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """``event_time + 30 minutes`` before ``with_watermark`` (not a multiple of the hour
    window). Run 1: partition 0 at 10:00-10:05 (10:30-10:35 computed), partition 1 at 01:00
    (01:30): W = min(10:35, 01:30) - 10 min = 01:20 (on the column as read: 00:50). After
    a restart, partition 1's 00:25-00:29 (00:55-00:59, window [00:00, 01:00)) are late,
    kept in ``late_rows`` as read; its 01:40 (02:10) is counted."""
    topic, group = unique("pwc"), unique("g")
    await create_topic(kafka_bootstrap, topic, partitions=2)
    await _produce_to(kafka_bootstrap, topic, [event(10, m) for m in range(6)], partition=0)
    await _produce_to(kafka_bootstrap, topic, [event(1, 0)], partition=1)

    async def run_once(name: str) -> tuple[dict[datetime, int], list[datetime]]:
        source = KafkaStreamSource(kafka_bootstrap, topic, group, schema=SCHEMA)
        df = sk.read_stream.source(source)
        df = df.with_column("event_time", sk.col("event_time") + timedelta(minutes=30))
        df = df.with_watermark("event_time", "10 minutes")
        counts = df.group_by(sk.window("event_time", "1 hour")).agg(sk.count().alias("n"))
        q = (counts.write_stream.output_mode("update").trigger(available_now=True)
             .checkpoint(str(tmp_path / "ck")).memory(name).start())  # fmt: skip
        assert await asyncio.to_thread(q.await_termination, 120)
        assert q.exception is None
        got = {r["window"]["start"]: r["n"] for r in sk.memory_table(name).to_pylist()}
        late = q.late_rows.column("event_time").to_pylist() if q.late_rows is not None else []
        return got, sorted(late)

    first, late_first = await run_once(unique("pwc_a"))
    assert late_first == []
    assert first == {DAY + timedelta(hours=10): 6, DAY + timedelta(hours=1): 1}
    backlog = [event(0, 25 + m) for m in range(5)] + [event(1, 40)]
    await _produce_to(kafka_bootstrap, topic, backlog, partition=1)
    second, late_second = await run_once(unique("pwc_b"))
    assert late_second == [DAY + timedelta(minutes=25 + m) for m in range(5)]
    assert second == {DAY + timedelta(hours=2): 1}
