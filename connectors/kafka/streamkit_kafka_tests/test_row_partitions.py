"""Each row the Kafka source hands out names its partition (``SourceBatch.row_partitions``,
what per-partition watermarks group by), also when dead letters are taken out of a batch."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import pytest
from streamkit_kafka import KafkaStreamSource
from streamkit_kafka.testing import create_topic, produce, unique

from streamkit.testing.events import SCHEMA, make_events

pytestmark = pytest.mark.integration


async def test_every_row_names_the_partition_it_was_read_from(kafka_bootstrap: str) -> None:
    topic, group = unique("rowpart"), unique("g")
    await create_topic(kafka_bootstrap, topic, partitions=3)
    _, records = make_events(240, seed=41)
    values = [v for v, _ in records]
    values[7] = b"{broken"  # dead letters inside a batch shift the rows after them
    values[50] = b'{"action": "view"}'
    await produce(kafka_bootstrap, topic, values, partitions=3)
    # Value i went to partition i % 3; (user, action, value, time) identifies a record.
    want = {_identity(json.loads(v)): f"{topic}-{i % 3}" for i, v in enumerate(values)
            if i not in (7, 50)}  # fmt: skip
    assert len(want) == 238
    source = KafkaStreamSource(kafka_bootstrap, topic, group, schema=SCHEMA,
                               max_records_per_batch=70)  # fmt: skip
    await source.open(None)
    got: dict[tuple[str, ...], str] = {}
    dead = 0
    try:
        deadline = time.monotonic() + 60
        while len(got) + dead < 240:
            assert time.monotonic() < deadline, f"{len(got)} rows, {dead} dead letters"
            batch = await source.next_batch(0.5)
            if batch is None:
                continue
            dead += batch.dead_letters.num_rows
            assert batch.row_partitions is not None
            assert len(batch.row_partitions) == batch.rows.num_rows
            names = batch.row_partitions.cast("string").to_pylist()
            got.update(zip(map(_identity, batch.rows.to_pylist()), names, strict=True))
    finally:
        await source.close()
    assert dead == 2
    assert got == want


def _identity(row: dict[str, Any]) -> tuple[str, ...]:
    instant = row["event_time"]
    if isinstance(instant, str):
        instant = datetime.fromisoformat(instant.replace("Z", "+00:00"))
    return (instant.isoformat(), row["action"], row["user_id"], str(row["value"]))
