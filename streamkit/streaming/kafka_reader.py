"""``sk.read_stream.kafka(...)``: a streaming DataFrame over Kafka topics.

The connector is imported only when called, so the engine keeps no Kafka import at load time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streamkit.streaming.api import read_stream

if TYPE_CHECKING:
    import pyarrow as pa

    from streamkit.frame import DataFrame


def read_kafka(
    bootstrap: str,
    topics: str | list[str],
    group_id: str,
    schema: pa.Schema | None = None,
    **options: Any,
) -> DataFrame:
    """A streaming DataFrame over the Kafka ``topics`` read in consumer group ``group_id``.

    Record values are JSON objects decoded under ``schema`` (required unless a ``decoder``
    with a schema is given); bad records go to the query's dead-letter table. ``options``
    are the keyword arguments of
    :class:`~streamkit.connectors.kafka.source.KafkaStreamSource`: ``decoder``,
    ``starting`` (``"earliest"`` default, ``"latest"``), ``max_records_per_batch``,
    ``on_bad_record``, ``consumer_options`` (aiokafka consumer keywords),
    ``connect_attempts``, ``connect_backoff``, ``assignment_timeout``.

    Exactly-once with the memory, Parquet and ``foreach_batch`` (by batch id) sinks: the
    query's checkpoint holds the offsets; the group's offsets are committed after each
    batch commit.
    """
    from streamkit.connectors.kafka.source import KafkaStreamSource

    source = KafkaStreamSource(bootstrap, topics, group_id, schema=schema, **options)
    return read_stream.source(source)
