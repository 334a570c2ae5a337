"""Writing to Kinesis: :class:`KinesisProducer` (batched, retried ``PutRecords``) and the
pure batching rules it follows (:mod:`.batching`)."""

from streamkit_kinesis.producer.producer import KinesisProducer, ProducerMetrics

__all__ = ["KinesisProducer", "ProducerMetrics"]
