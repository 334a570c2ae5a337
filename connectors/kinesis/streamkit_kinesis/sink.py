"""A Kinesis stream as a streaming :class:`~streamkit.streaming.contracts.Sink`.

Delivery: at-least-once. ``add_batch`` puts every row through a
:class:`~.producer.KinesisProducer` (PutRecords batching, retry of failed entries only) and
returns after ``flush``, so the engine commits a batch only once all its records are in
the stream; a batch re-run after a crash is written again. Order: rows of one partition
key land in one shard in row order (the producer keeps key order across retries).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from streamkit.errors import ConfigError
from streamkit.streaming.encode import (
    Reject,
    SinkDeadLetter,
    check_format,
    json_values,
    key_strings,
    raw_values,
)

from .errors import InvalidRecordError, KinesisError, PutRecordsFailedError, RecordTooLargeError
from .producer import KinesisProducer

if TYPE_CHECKING:
    import pyarrow as pa

    from streamkit.config import AwsEndpoint

log = logging.getLogger(__name__)

__all__ = ["KinesisSink", "KinesisSinkError"]


class KinesisSinkError(KinesisError):
    """Records of a batch were not written after the producer's retries; the batch is not
    committed, so a restart writes it again."""


class KinesisSink:
    """Writes each micro-batch's rows to the Kinesis ``stream`` (module docstring).

    The partition key of a row is the text of ``partition_key_column``. ``value_format``:
    ``"json"`` (one object per row) or ``"raw"`` (bytes / UTF-8 text of ``value_column``,
    default the only column). Rows that cannot be serialised, with a null or empty key, or
    over the record size limit go to :attr:`dead_letters` with the reason; the batch still
    counts as written. ``producer_options`` are further :class:`KinesisProducer` keywords
    (``linger_ms``, ``max_attempts``, ``backoff``, ...). An unknown stream or an unreachable
    endpoint raises the producer's typed error on the first batch.
    """

    guarantee = "at-least-once"  # Guarantee.AT_LEAST_ONCE (streamkit.streaming.contracts)

    def __init__(
        self,
        stream: str,
        endpoint: AwsEndpoint | None,
        partition_key_column: str,
        value_format: str = "json",
        *,
        value_column: str | None = None,
        producer_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.value_format = check_format(value_format)
        if self.value_format == "arrow":
            raise ConfigError("the Kinesis sink writes 'json' or 'raw' values, not 'arrow'")
        if endpoint is None:
            from streamkit.config import current_endpoint

            endpoint = current_endpoint()
        self.stream, self.endpoint = stream, endpoint
        self.partition_key_column, self.value_column = partition_key_column, value_column
        self._options = dict(producer_options or {})
        self._producer: KinesisProducer | None = None
        self.dead_letters: list[SinkDeadLetter] = []
        """Rows not written, with the reason, in the order met."""
        self.records_sent = 0
        """Records acknowledged by Kinesis."""

    async def add_batch(self, batch_id: int, table: pa.Table) -> None:
        """Put every row of ``table`` and return once all are written (or dead-lettered)."""
        producer = self._ensure_producer()
        before = producer.metrics().records_sent
        keys = key_strings(table, self.partition_key_column)
        if self.value_format == "json":
            values, rejects = json_values(table.to_pylist())
        else:
            values, rejects = raw_values(table, self.value_column)
        for row, (key, value) in enumerate(zip(keys, values, strict=True)):
            if value is None:
                continue
            if not key:
                rejects.append(Reject(row, f"partition key {self.partition_key_column!r} is "
                                           "null or empty"))  # fmt: skip
                continue
            try:
                await producer.put(value, key)
            except (RecordTooLargeError, InvalidRecordError) as exc:
                rejects.append(Reject(row, str(exc)))
        try:
            await producer.flush()
        except PutRecordsFailedError as exc:
            raise KinesisSinkError(
                f"batch {batch_id}: {len(exc.failures)} record(s) not written to stream "
                f"{self.stream!r} after retries; the batch will be written again after a "
                f"restart ({exc})"
            ) from exc
        self.records_sent += producer.metrics().records_sent - before
        for reject in sorted(rejects, key=lambda r: r.row):
            row = table.slice(reject.row, 1).to_pylist()[0]
            self.dead_letters.append(SinkDeadLetter(batch_id, row, reject.reason))
            log.warning("kinesis sink %s: batch %d row %d dead-lettered: %s",
                        self.stream, batch_id, reject.row, reject.reason)  # fmt: skip

    async def close(self) -> None:
        """Stop the producer. Every batch was flushed by ``add_batch``, so an error here
        (already raised by the failing ``add_batch``) is only logged."""
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await producer.close()
            except KinesisError as exc:
                log.warning("kinesis sink %s: producer close: %s", self.stream, exc)

    def _ensure_producer(self) -> KinesisProducer:
        if self._producer is None:
            self._producer = KinesisProducer(self.endpoint, self.stream, **self._options)
        return self._producer
