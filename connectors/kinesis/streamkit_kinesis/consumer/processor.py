"""The record-processor contract: what the consumer calls for each shard it holds.

One processor instance serves one shard for as long as this worker holds its lease (the
consumer calls the factory again when it gains the shard later). Calls on one processor
never overlap and happen in this order::

    initialize(shard_id, start)   # or initialize_with(InitializationInput), if defined
    process_records(batch, checkpointer)   # zero or more times, in shard order
    then exactly one of:
        shard_ended(shard_id, checkpointer)         # the shard was read to its end
        shutdown_requested(shard_id, checkpointer)  # graceful stop of the consumer
        lease_lost(shard_id)                        # another worker owns the shard now

A processor that defines ``async def at_tip(self, shard_id: str)`` is also called, between
those, after each read that found nothing new at the shard's tip (no records,
``MillisBehindLatest`` 0; about every ``idle_time`` while the shard is quiet): only its
reader knows a quiet shard from a slow read (the fleet's source tasks declare idleness
by it).

``lease_lost`` is called after the in-flight ``process_records`` (or read) was cancelled;
the processor must not checkpoint any more (it cannot: the checkpointer raises
:class:`~streamkit_kinesis.leases.LeaseLostError`). Delivery is at least once: records after the
last checkpoint are delivered again to the next owner of the shard.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from streamkit_kinesis.leases import Checkpointer
    from streamkit_kinesis.types import ExtendedSequenceNumber, RecordBatch


@dataclass(frozen=True)
class InitializationInput:
    """What a processor learns when it starts a shard (KCL's ``InitializationInput``).

    A processor that defines ``async def initialize_with(self, init: InitializationInput)``
    gets this instead of the ``initialize(shard_id, start)`` call (the consumer prefers
    ``initialize_with`` when present, so existing processors keep working unchanged).
    """

    shard_id: str
    """The shard this processor serves."""
    start: ExtendedSequenceNumber
    """The lease checkpoint reading resumes from (records strictly after it, or a start
    sentinel) [KCL: ``extendedSequenceNumber``]."""
    pending_checkpoint: ExtendedSequenceNumber | None = None
    """A prepared checkpoint the previous owner left (it may have acted on records up to
    here without checkpointing them), or None [KCL: ``pendingCheckpointSequenceNumber``]."""
    lease_counter: int | None = None
    """The lease's counter as this worker last wrote it (None: no longer held): a later
    owner's take always writes a higher one, so it can serve as a fencing token."""


@runtime_checkable
class RecordProcessor(Protocol):
    """Processes the records of one shard (KCL's ``ShardRecordProcessor``)."""

    async def initialize(self, shard_id: str, start: ExtendedSequenceNumber) -> None:
        """Called once before the first batch; ``start`` is the lease checkpoint the reader
        resumes from (a sequence number: records strictly after it; or a start sentinel)."""
        ...

    async def process_records(self, batch: RecordBatch, checkpointer: Checkpointer) -> None:
        """Handle one non-empty batch (records in shard order).

        ``await checkpointer.checkpoint()`` stores the position after this batch's last
        record; pass a sequence number to checkpoint part of it. Raising stops the whole
        consumer: the error is re-raised by :meth:`KinesisConsumer.run`.
        """
        ...

    async def lease_lost(self, shard_id: str) -> None:
        """The lease was lost (stolen, expired, or a checkpoint was rejected). Clean up only."""
        ...

    async def shard_ended(self, shard_id: str, checkpointer: Checkpointer) -> None:
        """Every record of the closed shard was delivered; ``checkpointer.checkpoint()``
        writes SHARD_END. If the processor does not, the consumer does it right after (as
        KCL requires), so the shard's children can start."""
        ...

    async def shutdown_requested(self, shard_id: str, checkpointer: Checkpointer) -> None:
        """The consumer is stopping gracefully: checkpoint what was processed (KCL leaves
        this to the processor; ``checkpointer.checkpoint()`` = the last delivered record).
        The lease is released right after this returns."""
        ...


ProcessorFactory = Callable[[], RecordProcessor]
"""Builds one processor per shard (called each time this worker starts a shard)."""


class BaseRecordProcessor:
    """Convenience base: override :meth:`process_records`; the rest have safe defaults.

    Defaults: ``initialize`` and ``lease_lost`` do nothing; ``shard_ended`` checkpoints
    SHARD_END; ``shutdown_requested`` checkpoints the last delivered record, so a graceful
    hand-off re-delivers nothing.
    """

    async def initialize(self, shard_id: str, start: ExtendedSequenceNumber) -> None:
        """Nothing to do by default."""

    async def process_records(self, batch: RecordBatch, checkpointer: Checkpointer) -> None:
        """Override this."""
        raise NotImplementedError("subclasses of BaseRecordProcessor implement process_records")

    async def lease_lost(self, shard_id: str) -> None:
        """Nothing to do by default."""

    async def shard_ended(self, shard_id: str, checkpointer: Checkpointer) -> None:
        """Checkpoint SHARD_END."""
        await checkpointer.checkpoint()

    async def shutdown_requested(self, shard_id: str, checkpointer: Checkpointer) -> None:
        """Checkpoint the last delivered record."""
        await checkpointer.checkpoint()
