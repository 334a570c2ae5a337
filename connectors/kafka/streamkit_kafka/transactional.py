"""A Kafka sink that writes each micro-batch in one Kafka transaction: exactly-once for
``read_committed`` readers, across crashes and restarts of the query.

Protocol, per batch ``N`` (the engine calls :meth:`TransactionalKafkaSink.add_batch` after
``offsets/N`` and before ``commits/N``):

1. On start the producer registers its ``transactional_id`` (``init_transactions``): the
   broker aborts any transaction an earlier incarnation left open (a process killed
   mid-batch) and fences that incarnation, so a zombie can never commit after it.
2. The sink reads the last batch id it committed, stored by Kafka as the committed offset
   of the marker group ``streamkit-sink.<transactional_id>`` on partition 0 of the
   output topic (offset = batch id + 1).
3. A batch id at or below it was already committed (the query crashed between the sink and
   ``commits/N``, and re-runs batch ``N``): nothing is written again.
4. Otherwise, in one transaction: every record of the batch, and the marker offset
   ``N + 1`` (``send_offsets_to_transaction``); then commit. Records and marker become
   visible together or not at all.

Readers with ``isolation_level="read_committed"`` see every batch exactly once; readers
with ``read_uncommitted`` may also see records of aborted transactions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, ClassVar

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, ProducerFenced

from streamkit.errors import ConfigError
from streamkit.streaming.contracts import Guarantee

from .errors import KafkaSinkError
from .sink import KafkaSink

if TYPE_CHECKING:
    from collections.abc import Mapping

    import pyarrow as pa

log = logging.getLogger(__name__)

MARKER_GROUP_PREFIX = "streamkit-sink."
"""Prefix of the consumer group whose committed offset records the last batch written."""


class TransactionalKafkaSink(KafkaSink):
    """:class:`KafkaSink` with one Kafka transaction per micro-batch (module docstring).

    ``transactional_id`` names this writer: give each query its own and keep it across
    restarts, since that is what fences the previous incarnation and finds the last batch
    it committed. A query has one writer (it runs in one process, batches in order; a
    fleet refuses this sink), so one id per query covers all its work. Needs a broker
    with transactions (Apache Kafka; not Tansu). Rows rejected by the producer before
    sending (too large) are dead letters; a record the broker rejects aborts the batch's
    transaction and fails the query with :class:`KafkaSinkError`, nothing half-written.
    """

    guarantee: ClassVar[Guarantee] = Guarantee.EXACTLY_ONCE_TRANSACTIONAL
    """Delivery guarantee (the README sink table is tested against it)."""
    requires_exact_replay: ClassVar[bool] = True
    """A skipped re-run must hold exactly the committed run's records: the query refuses
    a source that cannot re-read a batch exactly (not a ``BoundedSource``)."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        transactional_id: str,
        key_column: str | None = None,
        value_format: str = "json",
        *,
        producer_options: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        if not transactional_id:
            raise ConfigError("transactional_id must be a non-empty string")
        extra = {**(producer_options or {}), "transactional_id": transactional_id}
        super().__init__(bootstrap, topic, key_column, value_format, acks="all",
                         enable_idempotence=True, producer_options=extra,
                         **options)  # fmt: skip
        self.transactional_id = transactional_id
        self.marker_group = MARKER_GROUP_PREFIX + transactional_id
        self._marker = TopicPartition(topic, 0)
        self._last: int | None = None
        self._loaded = False
        self.marker_timeout = 60.0
        """Seconds to keep retrying retriable errors while reading the marker."""
        self.skipped_batches: list[int] = []
        """Batch ids found already committed by an earlier incarnation (not written again)."""

    async def add_batch(self, batch_id: int, table: pa.Table) -> None:
        """Write the batch in one transaction with its marker; skip it if already committed."""
        producer = await self._ensure_producer()
        last = await self.last_committed_batch()
        if last is not None and batch_id <= last:
            self.skipped_batches.append(batch_id)
            log.info("kafka sink %s: batch %d was committed before a restart; not rewritten",
                     self.topic, batch_id)  # fmt: skip
            return
        try:
            async with producer.transaction():
                await self._send_batch(producer, batch_id, table)
                await producer.send_offsets_to_transaction(
                    {self._marker: batch_id + 1}, self.marker_group
                )
        except (ProducerFenced, KafkaSinkError) as exc:
            if not _fenced(exc):
                raise
            raise KafkaSinkError(
                f"transactional id {self.transactional_id!r} was taken over by another "
                f"writer (a second copy of this query?); batch {batch_id} was not committed"
            ) from exc
        except KafkaError as exc:
            raise KafkaSinkError(
                f"batch {batch_id}: the transaction to topic {self.topic!r} failed and was "
                f"aborted: {exc!r}"
            ) from exc
        self._last = batch_id

    async def last_committed_batch(self) -> int | None:
        """The last batch id committed under this transactional id (read once per start;
        retriable broker errors, e.g. a group coordinator still loading, are retried for
        up to ``marker_timeout`` s).

        Read after this incarnation's ``init_transactions``: Kafka answers a commit before
        its markers are written, and answers ``InitProducerId`` only once the previous
        transaction of the id is complete (``CONCURRENT_TRANSACTIONS``, retried by the
        client, while it is ``PrepareCommit``/``PrepareAbort``), so the marker read then
        is the committed one. Read before it, a marker committed just before could be
        missed (aiokafka's ``OffsetFetch`` cannot ask for stable offsets)."""
        if not self._loaded:
            marker = (await self._marker_offsets()).get(self._marker)
            self._last = marker.offset - 1 if marker is not None and marker.offset > 0 else None
            self._loaded = True
        return self._last

    async def _marker_offsets(self) -> dict[TopicPartition, Any]:
        deadline = time.monotonic() + self.marker_timeout
        delay = 0.1
        while True:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            try:
                await admin.start()
                await self._ensure_producer()  # InitProducerId first (see above)
                offsets: dict[TopicPartition, Any] = await admin.list_consumer_group_offsets(
                    self.marker_group
                )
                return offsets
            except KafkaError as exc:
                if not getattr(exc, "retriable", False) or time.monotonic() > deadline:
                    raise KafkaSinkError(
                        f"cannot read the last committed batch of transactional id "
                        f"{self.transactional_id!r} (group {self.marker_group!r}): {exc!r}"
                    ) from exc
            finally:
                await admin.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


def _fenced(exc: BaseException) -> bool:
    """Whether ``exc`` or an error it was raised from is :class:`ProducerFenced`."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ProducerFenced):
            return True
        seen = seen.__cause__
    return False
