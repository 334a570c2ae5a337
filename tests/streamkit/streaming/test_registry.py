"""The connector registry: entry points of installed connectors, and hand registration."""

from __future__ import annotations

import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.errors import MissingDependencyError, PlanError
from streamkit.streaming.registry import Registry, registry
from streamkit.streaming.sinks import MemorySink
from streamkit.streaming.sources.memory import MemoryStream

SCHEMA = pa.schema([("v", pa.int64())])


def test_installed_connectors_register_through_entry_points() -> None:
    fresh = Registry()
    sources, sinks = fresh.names()
    assert {"kinesis", "kafka"} <= set(sources)
    assert {"kinesis", "kafka"} <= set(sinks)
    from streamkit_kafka.source import KafkaStreamSource
    from streamkit_kinesis.sink import KinesisSink

    assert fresh.source("kafka") is KafkaStreamSource
    assert fresh.sink("kinesis") is KinesisSink


def test_a_source_registered_by_hand_is_readable_by_name() -> None:
    made: list[MemoryStream] = []

    def factory(schema: pa.Schema) -> MemoryStream:
        made.append(MemoryStream(schema=schema))
        return made[-1]

    registry.add_source("test-memory", factory)
    registry.add_sink("test-memory", lambda name: MemorySink(name, mode="append", keys=[]))
    df = sk.read_stream.connector("test-memory", SCHEMA)
    q = df.write_stream.connector("test-memory", "registry_out").start()
    try:
        made[0].add_rows([{"v": 1}, {"v": 2}])
        q.process_all_available()
        assert sorted(sk.memory_table("registry_out").column("v").to_pylist()) == [1, 2]
    finally:
        q.stop()


def test_unknown_names_fail_with_what_to_do() -> None:
    fresh = Registry()
    with pytest.raises(PlanError, match="no connector provides a source called 'sqs'"):
        fresh.source("sqs")
    empty = Registry()
    empty._loaded = True  # as if no connector distribution were installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'streamkit\[kafka\]'"):
        empty.sink("kafka")
