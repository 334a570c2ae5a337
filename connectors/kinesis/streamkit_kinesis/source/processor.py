"""The record processor the stream source gives its consumer, one per shard.

It hands records to the source and never checkpoints by itself: the source checkpoints
after the engine's commit (:mod:`.lease_checkpoints`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from streamkit_kinesis.source.errors import KinesisSourceError
from streamkit_kinesis.source.positions import END
from streamkit_kinesis.types import TRIM_HORIZON

if TYPE_CHECKING:
    from streamkit_kinesis.leases import Checkpointer
    from streamkit_kinesis.source.buffers import ShardBuffers
    from streamkit_kinesis.types import ExtendedSequenceNumber, RecordBatch

log = logging.getLogger(__name__)


class ProcessorHost(Protocol):
    """What a shard processor calls on its source."""

    def _started(self, shard_id: str, start: ExtendedSequenceNumber) -> None: ...

    async def _delivered(self, batch: RecordBatch) -> None: ...

    async def _shard_ended(self, shard_id: str) -> None: ...

    async def _flush(self, shard_id: str) -> None: ...


def check_start(buffers: ShardBuffers, shard_id: str, start: ExtendedSequenceNumber) -> None:
    """Refuse a start the query's position cannot follow (records would be skipped)."""
    floor = buffers.state(shard_id).accepted
    if floor is None or floor == END or start == TRIM_HORIZON:
        return
    if start.is_sentinel or int(start.sequence_number) > int(floor):
        raise KinesisSourceError(
            f"shard {shard_id}: the lease starts at {start.sequence_number}, past the "
            f"query's position {floor}; another query or worker checkpointed this "
            "app_name's lease. One streaming query per app_name"
        )


class ShardProcessor:
    """The record processor of one shard (see the module docstring)."""

    def __init__(self, source: ProcessorHost) -> None:
        self._source = source

    async def initialize(self, shard_id: str, start: ExtendedSequenceNumber) -> None:
        self._source._started(shard_id, start)

    async def process_records(self, batch: RecordBatch, checkpointer: Checkpointer) -> None:
        await self._source._delivered(batch)

    async def lease_lost(self, shard_id: str) -> None:
        log.info("shard %s: lease lost; its queued records stay valid", shard_id)

    async def shard_ended(self, shard_id: str, checkpointer: Checkpointer) -> None:
        await self._source._shard_ended(shard_id)

    async def shutdown_requested(self, shard_id: str, checkpointer: Checkpointer) -> None:
        """Before the lease is released (graceful stop): write the last committed offset if
        a coalesced checkpoint is pending. Only committed positions are checkpointed."""
        await self._source._flush(shard_id)
