"""MemoryQueue on its own: visibility timeout, redelivery on reopen, stale acks."""

from __future__ import annotations

import pyarrow as pa
import pytest

from streamkit.errors import ConfigError, SchemaError
from streamkit.streaming.contracts import SourceKindError, source_kind
from streamkit.streaming.sources import FileStreamSource, MemoryQueue, MemoryStream

SCHEMA = pa.schema([("id", pa.int64())])


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def ids(table: pa.Table) -> list[int]:
    return list(table.column("id").to_pylist())


async def test_unacked_messages_come_back_after_the_visibility_timeout() -> None:
    clock = Clock()
    queue = MemoryQueue(SCHEMA, visibility_timeout=30, clock=clock)
    await queue.open()
    queue.add_rows([{"id": i} for i in range(3)])
    first = await queue.next_batch(0)
    assert first is not None
    assert ids(first.rows) == [0, 1, 2]
    clock.now = 29.0
    assert await queue.next_batch(0) is None  # still in flight
    queue.add_rows([{"id": 3}])
    clock.now = 30.0
    again = await queue.next_batch(0)
    assert again is not None
    assert ids(again.rows) == [0, 1, 2, 3]
    await queue.ack(first.token)  # too late: ignored
    assert (queue.stale_acks, queue.acked, queue.in_flight) == (1, 0, 4)
    await queue.ack(again.token)
    assert (queue.acked, queue.in_flight, queue.visible) == (4, 0, 0)
    assert queue.committed == again.token


async def test_reopening_redelivers_what_was_in_flight_in_order() -> None:
    queue = MemoryQueue(SCHEMA, max_messages_per_batch=2)
    queue.add_rows([{"id": i} for i in range(5)])
    await queue.open()
    a = await queue.next_batch(0)
    b = await queue.next_batch(0)
    assert a is not None
    assert b is not None
    await queue.ack(a.token)
    await queue.close()  # the consumer goes away with b in flight
    await queue.open()
    c = await queue.next_batch(0)
    d = await queue.next_batch(0)
    assert c is not None
    assert d is not None
    assert (ids(c.rows), ids(d.rows)) == ([2, 3], [4])
    assert (queue.redelivered, queue.acked) == (2, 2)


async def test_an_empty_queue_waits_then_returns_none() -> None:
    queue = MemoryQueue(SCHEMA)
    await queue.open()
    assert await queue.next_batch(0.02) is None


def test_the_queue_checks_its_arguments_and_rows() -> None:
    with pytest.raises(ConfigError):
        MemoryQueue(SCHEMA, max_messages_per_batch=0)
    with pytest.raises(SchemaError):
        MemoryQueue().schema  # noqa: B018 - the property raises
    with pytest.raises(SchemaError):
        MemoryQueue(SCHEMA).add_rows([{"id": "not a number"}])


def test_source_kind_tells_the_two_contracts_apart_and_names_what_is_missing() -> None:
    assert source_kind(MemoryStream(SCHEMA)) == "replayable"
    assert source_kind(FileStreamSource("/nonexistent", schema=SCHEMA)) == "replayable"
    assert source_kind(MemoryQueue(SCHEMA)) == "acknowledging"
    with pytest.raises(SourceKindError, match="lacks open, next_batch, end_offsets"):
        source_kind(object())

    class Both(MemoryStream):
        async def ack(self, token: object) -> None: ...

    with pytest.raises(SourceKindError, match="implement exactly one"):
        source_kind(Both(SCHEMA))
