"""``sk.read_stream.kinesis(...)``: a streaming DataFrame over a Kinesis stream.

The connector is imported only when called, so the engine keeps no AWS import at load time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streamkit.streaming.api import read_stream

if TYPE_CHECKING:
    import pyarrow as pa

    from streamkit.config import AwsEndpoint
    from streamkit.frame import DataFrame


def read_kinesis(
    stream: str,
    app_name: str,
    schema: pa.Schema | None = None,
    endpoint: AwsEndpoint | None = None,
    **options: Any,
) -> DataFrame:
    """A streaming DataFrame over the Kinesis stream ``stream``.

    ``app_name`` names the consumer application and its DynamoDB lease table (one streaming
    query per ``app_name``). Records are JSON objects decoded under ``schema`` (inferred
    from the oldest records when None); bad records go to the query's dead-letter table.
    ``endpoint`` defaults to :func:`streamkit.io.current_endpoint`. ``options`` are the
    keyword arguments of
    :class:`~streamkit.connectors.kinesis.stream_source.KinesisStreamSource`:
    ``decoder``, ``initial_position`` (``"TRIM_HORIZON"`` default, ``"LATEST"``, a
    datetime), ``worker_id``, ``failover_time``, ``max_records_per_batch``,
    ``max_buffered_records``, ``on_bad_record``, ``consumer_options``.

    Exactly-once with the memory, Parquet and ``foreach_batch`` (by batch id) sinks: the
    query's checkpoint holds the sequence numbers; lease checkpoints follow after each
    batch commit.
    """
    from streamkit.connectors.kinesis.stream_source import KinesisStreamSource

    source = KinesisStreamSource(stream, app_name, endpoint, schema=schema, **options)
    return read_stream.source(source)
