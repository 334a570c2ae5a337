"""A Kafka record with invalid UTF-8 in a string field is a dead letter (with its reason and
offset), even first in the topic where the schema is inferred; it is never a group."""

from __future__ import annotations

import asyncio

import pyarrow as pa
import pytest
from streamkit_kafka import KafkaStreamSource
from streamkit_kafka.testing import create_topic, produce, unique

import streamkit as sk

pytestmark = pytest.mark.integration

BAD = b'{"page": "vi\xff\xfeew", "n": 0}'
GOOD = [b'{"page": "home", "n": 1}', b'{"page": "home", "n": 2}', b'{"page": "about", "n": 3}']


async def test_invalid_utf8_is_a_dead_letter_with_its_offset(kafka_bootstrap: str) -> None:
    topic, group, name = unique("utf8"), unique("g"), unique("kafka_utf8").replace("-", "_")
    await create_topic(kafka_bootstrap, topic, partitions=1)
    await produce(kafka_bootstrap, topic, [BAD, *GOOD], partitions=1)
    source = KafkaStreamSource(kafka_bootstrap, topic, group)
    assert source.schema == pa.schema([("page", pa.string()), ("n", pa.int64())])
    df = sk.read_stream.source(source).group_by("page").agg(sk.count().alias("n"))
    q = df.write_stream.output_mode("complete").trigger(available_now=True).memory(name).start()
    assert await asyncio.to_thread(q.await_termination, 60)
    got = sk.memory_table(name)
    got.validate(full=True)
    assert sorted(got.to_pylist(), key=lambda r: r["page"]) == [
        {"page": "about", "n": 1},
        {"page": "home", "n": 2},
    ]
    assert q.dead_letters is not None
    assert q.dead_letters.select(["raw", "partition", "position", "reason"]).to_pylist() == [
        {
            "raw": BAD,
            "partition": f"{topic}-0",
            "position": "0",
            "reason": "invalid UTF-8: byte 0xff at offset 12",
        }
    ]
