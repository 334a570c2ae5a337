"""Kinesis: producer, stream admin, and a KCL-style consumer with DynamoDB leases.

>>> from streamkit.connectors.kinesis import KinesisProducer, KinesisConsumer, ConsumerConfig
"""

from streamkit.connectors.kinesis.admin import StreamAdmin, StreamDescription
from streamkit.connectors.kinesis.consumer import (
    BaseRecordProcessor,
    ConsumerConfig,
    InitialPosition,
    KinesisConsumer,
    RecordProcessor,
)
from streamkit.connectors.kinesis.errors import (
    CredentialsError,
    EndpointUnreachableError,
    KinesisError,
    PutRecordsFailedError,
    RecordTooLargeError,
    StreamNotFoundError,
)
from streamkit.connectors.kinesis.producer import KinesisProducer, ProducerMetrics
from streamkit.connectors.kinesis.reader import IteratorStart, ShardReader
from streamkit.connectors.kinesis.types import KinesisRecord, RecordBatch, ShardInfo

__all__ = [
    "BaseRecordProcessor",
    "ConsumerConfig",
    "CredentialsError",
    "EndpointUnreachableError",
    "InitialPosition",
    "IteratorStart",
    "KinesisConsumer",
    "KinesisError",
    "KinesisProducer",
    "KinesisRecord",
    "ProducerMetrics",
    "PutRecordsFailedError",
    "RecordBatch",
    "RecordProcessor",
    "RecordTooLargeError",
    "ShardInfo",
    "ShardReader",
    "StreamAdmin",
    "StreamDescription",
    "StreamNotFoundError",
]
