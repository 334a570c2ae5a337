"""Kafka connector (aiokafka): a stream source on the common source contract, and a sink."""

from .errors import (
    BrokerUnreachableError,
    KafkaConnectorError,
    KafkaSinkError,
    KafkaSourceError,
    TopicNotFoundError,
)
from .source import KafkaStreamSource

__all__ = [
    "BrokerUnreachableError",
    "KafkaConnectorError",
    "KafkaSinkError",
    "KafkaSourceError",
    "KafkaStreamSource",
    "TopicNotFoundError",
]
