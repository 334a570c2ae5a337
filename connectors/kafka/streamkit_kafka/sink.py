"""A Kafka topic as a streaming :class:`~streamkit.streaming.contracts.Sink` (aiokafka).

Delivery: at-least-once. ``add_batch`` returns only when every record of the batch is
acknowledged (``acks="all"`` by default), so the engine commits a batch only after its
records are in Kafka; a batch re-run after a crash is sent again. Every record carries the
header ``streamkit-batch-id`` so readers can drop repeats. Order: records of one key go to
one partition in row order (aiokafka's partitioner hashes the key).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

import pyarrow as pa
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from streamkit.errors import ConfigError
from streamkit.streaming.contracts import Guarantee
from streamkit.streaming.encode import (
    Reject,
    SinkDeadLetter,
    arrow_value,
    check_format,
    json_values,
    key_bytes,
    raw_values,
)

from .errors import KafkaSinkError, TopicNotFoundError
from .support import start_client

log = logging.getLogger(__name__)

BATCH_HEADER = "streamkit-batch-id"
"""Header holding the micro-batch id (decimal ASCII) on every record the sink writes."""

__all__ = ["BATCH_HEADER", "KafkaSink"]


class KafkaSink:
    """Writes each micro-batch's rows to ``topic`` (module docstring for delivery).

    ``value_format``: ``"json"`` (one object per row), ``"raw"`` (the bytes or UTF-8 text
    of ``value_column``, default the only column), or ``"arrow"`` (the batch as Arrow IPC
    streams of at most ``arrow_rows_per_record`` rows; no key). ``key_column`` gives the
    record key (bytes as they are, other values as text). Rows that cannot be serialised,
    or whose record the broker rejects as too large, go to :attr:`dead_letters` with the
    reason; the batch still counts as written. Other send failures (after aiokafka's
    retries within ``request_timeout_ms``) raise :class:`KafkaSinkError`, failing the query
    before the batch is committed.

    ``enable_idempotence`` (default off): the idempotent producer (no duplicates from
    producer retries); Tansu does not support it, real Kafka does. ``producer_options``
    are further :class:`AIOKafkaProducer` keywords. The producer starts on the first batch
    (``connect_attempts`` tries, then :class:`~.errors.BrokerUnreachableError`).
    """

    guarantee: ClassVar[Guarantee] = Guarantee.AT_LEAST_ONCE
    """Delivery guarantee (the README sink table is tested against it)."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        key_column: str | None = None,
        value_format: str = "json",
        *,
        value_column: str | None = None,
        acks: int | str = "all",
        enable_idempotence: bool = False,
        linger_ms: int = 5,
        arrow_rows_per_record: int = 10_000,
        producer_options: Mapping[str, Any] | None = None,
        connect_attempts: int = 3,
        connect_backoff: float = 0.5,
    ) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.value_format = check_format(value_format)
        if self.value_format == "arrow" and key_column is not None:
            raise ConfigError("value_format='arrow' writes whole batches: no key_column")
        if arrow_rows_per_record < 1:
            raise ConfigError("arrow_rows_per_record must be >= 1")
        self.key_column, self.value_column = key_column, value_column
        self._arrow_rows = arrow_rows_per_record
        self._options: dict[str, Any] = {
            "acks": acks,
            "enable_idempotence": enable_idempotence,
            "linger_ms": linger_ms,
            **(producer_options or {}),
            "bootstrap_servers": bootstrap,
        }
        self._attempts, self._backoff = connect_attempts, connect_backoff
        self._producer: Any = None
        self.dead_letters: list[SinkDeadLetter] = []
        """Rows not written, with the reason, in the order met."""
        self.records_sent = 0
        """Records acknowledged by the broker."""

    async def add_batch(self, batch_id: int, table: pa.Table) -> None:
        """Send every row of ``table`` and return once all are acknowledged."""
        producer = await self._ensure_producer()
        await self._send_batch(producer, batch_id, table)

    async def _send_batch(self, producer: Any, batch_id: int, table: pa.Table) -> None:
        """Send the batch's records, flush, and sort broker rejections into dead letters;
        any other failure raises :class:`KafkaSinkError`."""
        header = [(BATCH_HEADER, str(batch_id).encode())]
        pending: list[tuple[int, asyncio.Future[Any]]] = []
        rejects: list[Reject] = []
        for row, key, value in self._records(table, rejects):
            try:
                future = await producer.send(self.topic, value, key=key, headers=header)
            except MessageSizeTooLargeError as exc:
                rejects.append(Reject(row, f"record rejected by the producer: {exc}"))
                continue
            except KafkaError as exc:
                raise KafkaSinkError(f"sending to topic {self.topic!r} failed: {exc}") from exc
            pending.append((row, future))
        await producer.flush()
        results = await asyncio.gather(*(f for _, f in pending), return_exceptions=True)
        for (row, _), result in zip(pending, results, strict=True):
            if isinstance(result, MessageSizeTooLargeError):
                rejects.append(Reject(row, f"record rejected by the broker: {result}"))
            elif isinstance(result, BaseException):
                raise KafkaSinkError(
                    f"batch {batch_id}: a record to topic {self.topic!r} was not acknowledged "
                    f"after the producer's retries: {result!r}"
                ) from result
        self.records_sent += len(pending) - sum(isinstance(r, BaseException) for r in results)
        self._keep(batch_id, table, rejects)

    async def close(self) -> None:
        """Flush and stop the producer."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    # -- internals -------------------------------------------------------------------------

    def _records(
        self, table: pa.Table, rejects: list[Reject]
    ) -> list[tuple[int, bytes | None, bytes]]:
        """``(row, key, value)`` per record to send; unserialisable rows go to ``rejects``."""
        if self.value_format == "arrow":
            step = self._arrow_rows
            return [
                (start, None, arrow_value(table.slice(start, step)))
                for start in range(0, table.num_rows, step)
            ]
        keys = key_bytes(table, self.key_column)
        if self.value_format == "json":
            values, bad = json_values(table.to_pylist())
        else:
            values, bad = raw_values(table, self.value_column)
        rejects += bad
        return [
            (i, k, v) for i, (k, v) in enumerate(zip(keys, values, strict=True)) if v is not None
        ]

    def _keep(self, batch_id: int, table: pa.Table, rejects: list[Reject]) -> None:
        for reject in sorted(rejects, key=lambda r: r.row):
            row = table.slice(reject.row, 1).to_pylist()[0] if self.value_format != "arrow" else {}
            self.dead_letters.append(SinkDeadLetter(batch_id, row, reject.reason))
            log.warning("kafka sink %s: batch %d row %d dead-lettered: %s",
                        self.topic, batch_id, reject.row, reject.reason)  # fmt: skip

    async def _ensure_producer(self) -> Any:
        if self._producer is not None:
            return self._producer
        producer = await start_client(
            lambda: AIOKafkaProducer(**self._options),
            self.bootstrap,
            attempts=self._attempts,
            backoff=self._backoff,
        )
        try:
            metadata = await producer.client.fetch_all_metadata()
            if self.topic not in metadata.topics():
                raise TopicNotFoundError([self.topic], self.bootstrap)
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer
        return producer
