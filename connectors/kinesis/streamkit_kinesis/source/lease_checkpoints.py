"""Step 3 of the stream source: lease checkpoints of the offsets the query committed.

A committed offset is written to its shard's lease at most once per ``interval`` seconds
(coalesced: the query's checkpoint log stays authoritative, so a lagging lease checkpoint
loses nothing, see :mod:`.stream_source`); a graceful stop writes every pending one.
The interval is counted from the session's first start of the shard: the consumer starts
a shard at its lease checkpoint, so lease and query agree then, and a write at the first
commit would only move the lease by one batch (one conditional ``UpdateItem`` per shard
per open, ~1.8 ms of CPU each; a query stopped within ``interval`` writes each lease once,
at the stop). SHARD_END is never written here: the consumer writes it once the shard is
drained.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from streamkit.errors import StreamkitError
from streamkit_kinesis.source.positions import END, later

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from streamkit_kinesis.consumer import KinesisConsumer
    from streamkit_kinesis.source.buffers import ShardBuffers

log = logging.getLogger(__name__)

CHECKPOINT_INTERVAL = 60.0
"""Default least time between lease checkpoints of a shard: once a minute, as the KCL's
sample record processors do (``CHECKPOINT_INTERVAL_MILLIS = 60000L``); KCL itself leaves
the frequency to the application."""


class LeaseCheckpoints:
    """Coalesced lease checkpoints of one source session (see the module docstring)."""

    def __init__(
        self, buffers: ShardBuffers, interval: float, clock: Callable[[], float], app_name: str
    ) -> None:
        self._buffers = buffers
        self.interval = interval
        """Least time between two lease checkpoints of one shard (seconds)."""
        self._clock = clock
        self._app = app_name
        self._at: dict[str, float] = {}

    def started(self, shard_id: str) -> None:
        """The consumer starts ``shard_id`` from its lease checkpoint: its first lease
        checkpoint of this session waits ``interval`` from here (a later start of the
        same shard in the session keeps the clock: the lag stays within ``interval``)."""
        self._at.setdefault(shard_id, self._clock())

    async def commit(self, consumer: KinesisConsumer, offsets: Mapping[str, str]) -> None:
        """The query committed ``offsets``: record them, and write each held shard's lease
        checkpoint unless it was written (or the shard started) less than ``interval``
        ago."""
        held = consumer.held_shard_ids()
        now, writes = self._clock(), []
        for shard_id, value in offsets.items():
            state = self._buffers.state(shard_id)
            state.committed = later(state.committed, value)
            last = self._at.get(shard_id, float("-inf"))
            if shard_id in held and now - last >= self.interval:
                writes.append(self.flush(consumer, shard_id))
        await asyncio.gather(*writes)

    async def flush_all(self, consumer: KinesisConsumer) -> None:
        """Write every held shard's pending (coalesced) lease checkpoint."""
        held = consumer.held_shard_ids()
        try:
            await asyncio.gather(*(self.flush(consumer, shard_id) for shard_id in sorted(held)))
        except Exception as e:
            log.warning("kinesis source %s: final lease checkpoints: %r", self._app, e)

    async def flush(self, consumer: KinesisConsumer, shard_id: str) -> None:
        """Write the shard's last committed offset to its lease, if it is not there yet
        (never SHARD_END: the consumer writes that once the shard is drained)."""
        state = self._buffers.state(shard_id)
        value = state.committed
        if value is None or value in (END, state.checkpointed):
            return
        try:
            await consumer.coordinator.checkpointer(shard_id).checkpoint(value)
            state.checkpointed = value
            self._at[shard_id] = self._clock()
        except StreamkitError as e:
            log.warning("shard %s: lease checkpoint %s skipped: %s", shard_id, value, e)
