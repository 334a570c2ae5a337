"""Registers the Kafka source and sink with streamkit (entry point ``streamkit.connectors``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamkit.streaming.registry import Registry
    from streamkit_kafka.sink import KafkaSink


def make_sink(
    bootstrap: str,
    topic: str,
    key_column: str | None = None,
    value_format: str = "json",
    *,
    transactional_id: str | None = None,
    **options: Any,
) -> KafkaSink:
    """A :class:`~streamkit_kafka.sink.KafkaSink` (at-least-once), or with
    ``transactional_id`` a :class:`~streamkit_kafka.transactional.TransactionalKafkaSink`
    (one transaction per batch: exactly-once for ``read_committed`` readers)."""
    from streamkit_kafka.sink import KafkaSink
    from streamkit_kafka.transactional import TransactionalKafkaSink

    if transactional_id is not None:
        return TransactionalKafkaSink(bootstrap, topic, transactional_id, key_column,
                                      value_format, **options)  # fmt: skip
    return KafkaSink(bootstrap, topic, key_column, value_format, **options)


def register(registry: Registry) -> None:
    """Add ``kafka`` as a source (``sk.read_stream.kafka``) and a sink
    (``df.write_stream.kafka``); the connector's modules are imported here."""
    from streamkit_kafka.source import KafkaStreamSource

    registry.add_source("kafka", KafkaStreamSource)
    registry.add_sink("kafka", make_sink)
