"""The ``async for batch in consumer`` form, built on the record-processor contract.

Each shard task hands its batch to a shared channel and waits until the caller is done
with it, so at most one batch per shard is outstanding and batches of one shard are
yielded in shard order (batches of different shards interleave).

When checkpoints happen:

- ``await batch.checkpoint()`` checkpoints after the batch's last record, at once
  (raises :class:`~streamkit_kinesis.leases.errors.LeaseLostError` if this worker lost the shard);
- with ``auto_checkpoint=True`` (the default) a batch is also checkpointed when the caller
  asks for the next batch: asking for more means "the previous one is handled";
- nothing else is checkpointed: a batch that was yielded but not acknowledged when the
  loop ends or the consumer stops is delivered again to the next owner (at least once).
  Reaching SHARD_END is checkpointed by the consumer.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from streamkit_kinesis.kpl import position

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from streamkit_kinesis.leases import Checkpointer
    from streamkit_kinesis.types import (
        ExtendedSequenceNumber,
        KinesisRecord,
        RecordBatch,
    )


class ConsumedBatch:
    """A batch yielded by ``async for``: records of one shard, in shard order."""

    __slots__ = ("_acked", "_checkpointed", "batch", "checkpointer")

    def __init__(self, batch: RecordBatch, checkpointer: Checkpointer) -> None:
        self.batch = batch
        """The underlying :class:`~streamkit_kinesis.types.RecordBatch`."""
        self.checkpointer = checkpointer
        """The shard's checkpointer (checkpoint any sequence number of this batch)."""
        self._acked: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._checkpointed = False

    @property
    def shard_id(self) -> str:
        """The shard the records came from."""
        return self.batch.shard_id

    @property
    def records(self) -> tuple[KinesisRecord, ...]:
        """The records (raw payloads with partition key and sequence number), as objects
        (built here, once, when the reader handed them on as columns)."""
        records = self.batch.records
        return records if isinstance(records, tuple) else tuple(records)

    @property
    def first_sequence_number(self) -> str:
        """Sequence number of the first record."""
        return self.batch.records[0].sequence_number

    @property
    def last_sequence_number(self) -> str:
        """Sequence number of the last record."""
        return self.batch.records[-1].sequence_number

    @property
    def millis_behind_latest(self) -> int | None:
        """Lag of the shard reader when the batch was read."""
        return self.batch.millis_behind_latest

    async def checkpoint(self) -> None:
        """Durably checkpoint after this batch's last record (see module docstring)."""
        await self.checkpointer.checkpoint(position(self.batch.records[-1]))
        self._checkpointed = True

    def _resolve(self, acknowledged: bool) -> None:
        if not self._acked.done():
            self._acked.set_result(acknowledged)

    def __repr__(self) -> str:
        return (
            f"ConsumedBatch({self.shard_id}, {len(self.records)} records, "
            f"{self.first_sequence_number}..{self.last_sequence_number})"
        )


class BatchChannel:
    """Where shard tasks hand batches to the ``async for`` caller (one outstanding per shard)."""

    def __init__(self) -> None:
        self.auto_checkpoint = True
        """Checkpoint a batch when the caller asks for the next one."""
        self._ready: asyncio.Queue[ConsumedBatch] = asyncio.Queue()
        self._current: ConsumedBatch | None = None
        self._closed = asyncio.Event()

    async def deliver(self, batch: RecordBatch, checkpointer: Checkpointer) -> None:
        """Offer ``batch``; return once the caller is done with it (checkpointing it then
        if ``auto_checkpoint``), or at once if the channel is closed."""
        if self._closed.is_set():
            return
        item = ConsumedBatch(batch, checkpointer)
        self._ready.put_nowait(item)
        try:
            acknowledged = await item._acked
        finally:
            item._resolve(False)  # cancelled (lease lost): never yield it
        if acknowledged and self.auto_checkpoint and not item._checkpointed:
            await checkpointer.checkpoint(position(item.batch.records[-1]))

    def close(self) -> None:
        """Stop handing out batches: queued ones and the one being handled are released
        unacknowledged (never checkpointed by the channel)."""
        self._closed.set()
        if self._current is not None:
            self._current._resolve(False)
        while not self._ready.empty():
            self._ready.get_nowait()._resolve(False)

    async def next(self, stopped: Callable[[], Awaitable[object]]) -> ConsumedBatch | None:
        """Acknowledge the previous batch, then the next one; None once closed."""
        if self._current is not None:
            self._current._resolve(True)
            self._current = None
        while not self._closed.is_set():
            get = asyncio.ensure_future(self._ready.get())
            closed = asyncio.ensure_future(self._closed.wait())
            try:
                await asyncio.wait([get, closed], return_when=asyncio.FIRST_COMPLETED)
            finally:
                closed.cancel()
                if not get.done():
                    get.cancel()
            if get.done() and not get.cancelled():
                item = get.result()
                if item._acked.done():
                    continue  # its shard was lost while it waited
                if self._closed.is_set():
                    item._resolve(False)
                    break
                self._current = item
                return item
        await stopped()
        return None


class ChannelProcessor:
    """The record processor behind ``async for``: forwards batches to a :class:`BatchChannel`."""

    def __init__(self, channel: BatchChannel) -> None:
        self._channel = channel

    async def initialize(self, shard_id: str, start: ExtendedSequenceNumber) -> None:
        """Nothing to prepare."""

    async def process_records(self, batch: RecordBatch, checkpointer: Checkpointer) -> None:
        """Hand the batch to the caller and wait until it is handled."""
        await self._channel.deliver(batch, checkpointer)

    async def lease_lost(self, shard_id: str) -> None:
        """Nothing to clean up (a batch of this shard may still be with the caller)."""

    async def shard_ended(self, shard_id: str, checkpointer: Checkpointer) -> None:
        """Checkpoint SHARD_END."""
        await checkpointer.checkpoint()

    async def shutdown_requested(self, shard_id: str, checkpointer: Checkpointer) -> None:
        """Nothing: handled batches were checkpointed already (explicitly or when acked)."""
