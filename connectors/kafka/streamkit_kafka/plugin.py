"""Registers the Kafka source and sink with streamkit (entry point ``streamkit.connectors``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamkit.streaming.registry import Registry


def register(registry: Registry) -> None:
    """Add ``kafka`` as a source (``sk.read_stream.kafka``) and a sink
    (``df.write_stream.kafka``); the connector's modules are imported here."""
    from streamkit_kafka.sink import KafkaSink
    from streamkit_kafka.source import KafkaStreamSource

    registry.add_source("kafka", KafkaStreamSource)
    registry.add_sink("kafka", KafkaSink)
