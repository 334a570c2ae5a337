"""Kafka connector (aiokafka): a stream source on the common source contract, and a sink."""

from streamkit.streaming.encode import SinkDeadLetter

from .errors import (
    BrokerUnreachableError,
    KafkaConnectorError,
    KafkaSinkError,
    KafkaSourceError,
    TopicNotFoundError,
)
from .sink import BATCH_HEADER, KafkaSink
from .source import KafkaStreamSource
from .transactional import TransactionalKafkaSink

__all__ = [
    "BATCH_HEADER",
    "BrokerUnreachableError",
    "KafkaConnectorError",
    "KafkaSink",
    "KafkaSinkError",
    "KafkaSourceError",
    "KafkaStreamSource",
    "SinkDeadLetter",
    "TopicNotFoundError",
    "TransactionalKafkaSink",
]
