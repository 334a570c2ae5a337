"""Registers the Kinesis source and sink with streamkit (entry point ``streamkit.connectors``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamkit.streaming.registry import Registry


def register(registry: Registry) -> None:
    """Add ``kinesis`` as a source (``sk.read_stream.kinesis``) and a sink
    (``df.write_stream.kinesis``); the connector's modules are imported here."""
    from streamkit_kinesis.metrics_cloudwatch import install as install_cloudwatch
    from streamkit_kinesis.metrics_prometheus import install as install_metrics
    from streamkit_kinesis.sink import KinesisSink
    from streamkit_kinesis.source import KinesisStreamSource
    from streamkit_kinesis.ui_panel import install as install_ui_panel

    registry.add_source("kinesis", KinesisStreamSource)
    registry.add_sink("kinesis", KinesisSink)
    install_metrics()  # the consumer's leases, calls and shards in sk.metrics (when served)
    install_cloudwatch()  # the KCL's metrics of the consumer, when publishing to CloudWatch
    install_ui_panel()  # the lease table (every worker, its shards) on the query's UI page
