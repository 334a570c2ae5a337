"""``sk.read_stream``: streaming DataFrames over sources (memory, files, Kinesis, Kafka, an
installed connector's). A streaming DataFrame is an ordinary DataFrame whose scan is a
stream (:mod:`~streamkit.streaming.stream_scan`): the same plan object runs as a batch job
(over a table) or, through ``write_stream`` (:mod:`~streamkit.streaming.api`),
incrementally.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from streamkit.frame import DataFrame
from streamkit.plan import Scan
from streamkit.streaming.registry import registry
from streamkit.streaming.stream_scan import StreamScanSource

if TYPE_CHECKING:
    import pyarrow as pa

    from streamkit.config import AwsEndpoint
    from streamkit.streaming.contracts import StreamSource


class DataStreamReader:
    """``sk.read_stream``: streaming DataFrames over sources."""

    def source(self, stream: StreamSource) -> DataFrame:
        """A streaming DataFrame over any StreamSource."""
        return DataFrame(Scan(StreamScanSource(stream)))

    def memory(
        self, schema: pa.Schema, partitions: int = 1, *, keep_committed: bool = True
    ) -> DataFrame:
        """A stream you feed from Python (``df.stream.add_rows(...)``); for tests/examples.

        The schema is needed up front because the query is type-checked when it is built.
        It keeps every added row unless ``keep_committed=False`` (then rows go once the
        query reading it has committed them; see :class:`MemoryStream`).
        """
        from streamkit.streaming.sources.memory import MemoryStream

        stream = MemoryStream(schema=schema, partitions=partitions, keep_committed=keep_committed)
        return self.source(stream)

    def files(
        self,
        path: str,
        format: str = "json",
        schema: pa.Schema | None = None,
        max_files_per_trigger: int | None = None,
        *,
        max_file_age: str | timedelta | float | None = None,
    ) -> DataFrame:
        """New files under a directory or ``s3://`` prefix, picked up in arrival order.

        ``max_file_age`` (e.g. ``"1 hour"``, a timedelta, or seconds) bounds the checkpointed
        offsets: files older than the newest file read minus ``max_file_age`` are forgotten
        once read and ignored if they show up later. None (the default) remembers every file
        name forever. See :class:`~streamkit.streaming.sources.files.FileStreamSource`.
        """
        from streamkit.streaming.sources.files import FileStreamSource

        return self.source(
            FileStreamSource(
                path,
                format=format,
                schema=schema,
                max_files_per_trigger=max_files_per_trigger,
                max_file_age=max_file_age,
            )
        )

    def kinesis(
        self,
        stream: str,
        app_name: str,
        schema: pa.Schema | None = None,
        endpoint: AwsEndpoint | None = None,
        **options: Any,
    ) -> DataFrame:
        """A Kinesis stream read by the KCL-style consumer of ``streamkit-kinesis``
        (``pip install 'streamkit[kinesis]'``).

        ``app_name`` names the consumer application and its DynamoDB lease table (one
        streaming query per ``app_name``). Records are JSON objects decoded under ``schema``
        (inferred from the oldest records when None); bad records go to the query's
        dead-letter table. ``endpoint`` defaults to :func:`streamkit.config.current_endpoint`.
        ``options`` are the keyword arguments of
        :class:`streamkit_kinesis.source.KinesisStreamSource`: ``decoder``,
        ``initial_position`` (``"TRIM_HORIZON"`` default, ``"LATEST"``, a datetime),
        ``worker_id``, ``failover_time``, ``max_records_per_batch``,
        ``max_buffered_records``, ``on_bad_record``, ``checkpoint_interval``,
        ``consumer_options``, ``retrieval`` (``"polling"`` default, or ``"fanout"``:
        Enhanced Fan-Out).

        Exactly-once with the memory, Parquet and ``foreach_batch`` (by batch id) sinks: the
        query's checkpoint holds the sequence numbers and is authoritative; lease checkpoints
        follow batch commits at most once per shard per ``checkpoint_interval`` (60 s; 0 =
        every commit) and are written in full on a graceful stop.
        """
        factory = registry.source("kinesis")
        return self.source(factory(stream, app_name, endpoint, schema=schema, **options))

    def kafka(
        self,
        bootstrap: str,
        topics: str | list[str],
        group_id: str,
        schema: pa.Schema | None = None,
        **options: Any,
    ) -> DataFrame:
        """Kafka topics read with aiokafka by ``streamkit-kafka``
        (``pip install 'streamkit[kafka]'``): partitions play shards, offsets sequence
        numbers.

        Record values are JSON objects decoded under ``schema`` (required unless a
        ``decoder`` with a schema is given); bad records go to the query's dead-letter
        table. ``options`` are the keyword arguments of
        :class:`streamkit_kafka.source.KafkaStreamSource`: ``decoder``, ``starting``
        (``"earliest"`` default, ``"latest"``), ``max_records_per_batch``,
        ``on_bad_record``, ``consumer_options`` (aiokafka consumer keywords),
        ``connect_attempts``, ``connect_backoff``, ``assignment_timeout``.

        Exactly-once with the memory, Parquet and ``foreach_batch`` (by batch id) sinks: the
        query's checkpoint holds the offsets; the group's offsets are committed after each
        batch commit.
        """
        factory = registry.source("kafka")
        return self.source(factory(bootstrap, topics, group_id, schema=schema, **options))

    def connector(self, name: str, *args: Any, **options: Any) -> DataFrame:
        """A streaming DataFrame over the source ``name`` of an installed connector
        (see :mod:`streamkit.streaming.registry`); ``args`` and ``options`` go to its factory."""
        return self.source(registry.source(name)(*args, **options))


read_stream = DataStreamReader()
