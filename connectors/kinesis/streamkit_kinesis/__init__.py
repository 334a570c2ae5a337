"""Kinesis: producer, stream admin, and a KCL-style consumer with DynamoDB leases.

>>> from streamkit_kinesis import KinesisProducer, KinesisConsumer, ConsumerConfig
"""

from streamkit_kinesis.admin import StreamAdmin, StreamDescription
from streamkit_kinesis.consumer import (
    BaseRecordProcessor,
    ConsumerConfig,
    InitialPosition,
    KinesisConsumer,
    RecordProcessor,
)
from streamkit_kinesis.errors import (
    CredentialsError,
    EndpointUnreachableError,
    KinesisError,
    PutRecordsFailedError,
    RecordTooLargeError,
    StreamNotFoundError,
)
from streamkit_kinesis.producer.producer import KinesisProducer, ProducerMetrics
from streamkit_kinesis.retrieval import IteratorStart, RecordFetcher, ShardReader
from streamkit_kinesis.types import KinesisRecord, RecordBatch, ShardInfo

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
    "RecordFetcher",
    "RecordProcessor",
    "RecordTooLargeError",
    "ShardInfo",
    "ShardReader",
    "StreamAdmin",
    "StreamDescription",
    "StreamNotFoundError",
]
