"""Exactly-once across the exchange: KCL's two-phase checkpoint around the put.

A source task's batch covers the source shard's records after the lease checkpoint up to
and including ``last``. :func:`emit_exactly_once` does

1. prepare: ``pendingCheckpoint = last`` on the source lease (conditional on owning it);
2. put: every partition's chunk parts, in order (:class:`~.writer.ExchangeWriter`);
3. checkpoint ``last`` (which removes the pending checkpoint).

A worker killed after 1 leaves the pending checkpoint; whoever takes the lease next sees it
(``Lease.pending_checkpoint``, or ``InitializationInput.pending_checkpoint`` in a
processor) and must re-read exactly (checkpoint, pending] as one batch before anything
else (:func:`replay_range`; a source task cuts it with :mod:`.record_split`), so the chunks
it puts again carry the same range end as any that may already be in the exchange; the
aggregation side drops a chunk whose (source shard, range end, part) it already applied.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from streamkit_kinesis.leases import LeaseStoreUnavailableError
from streamkit_kinesis.leases.model import to_position
from streamkit_kinesis.retry import OUTAGE_BACKOFF, Backoff, RetryState, Sleep
from streamkit_kinesis.types import SHARD_END

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from streamkit_kinesis.leases import Checkpointer, Lease
    from streamkit_kinesis.types import ExtendedSequenceNumber

    from .writer import ExchangeWriter


async def _until_stored(
    write: Callable[[], Awaitable[Lease]], backoff: Backoff, sleep: Sleep
) -> Lease:
    """``write()`` retried while the lease store is unavailable (throttled, unreachable)."""
    state = RetryState(backoff, rng=random.random)
    while True:
        try:
            return await write()
        except LeaseStoreUnavailableError as e:
            await sleep(state.failed(e))


async def emit_exactly_once(
    checkpointer: Checkpointer,
    last: ExtendedSequenceNumber | str,
    writer: ExchangeWriter,
    parts: Sequence[Sequence[bytes]],
    *,
    after_put: Callable[[], Awaitable[None]] | None = None,
    backoff: Backoff = OUTAGE_BACKOFF,
    sleep: Sleep = asyncio.sleep,
) -> list[list[str]]:
    """Prepare ``last``, put ``parts`` (one list of chunk parts per exchange partition,
    partition key = the checkpointer's shard), then checkpoint ``last``.

    Returns the exchange sequence numbers (per partition, per part). Guarantees: nothing
    is put unless the pending checkpoint is stored; the checkpoint is written only after
    every part is acknowledged. A lost lease raises LeaseLostError at the step it is
    detected (stop the task: the next owner re-emits from the pending checkpoint); an
    unavailable lease store is retried with backoff for ever, as are the writer's
    outages. ``after_put`` runs between put and checkpoint (tests use it to die there).
    """
    position = to_position(last)
    await _until_stored(lambda: checkpointer.prepare_checkpoint(position), backoff, sleep)
    sequence_numbers = await writer.put_batch(parts, checkpointer.shard_id)
    if after_put is not None:
        await after_put()
    await _until_stored(lambda: checkpointer.checkpoint(position), backoff, sleep)
    return sequence_numbers


def _key(position: ExtendedSequenceNumber) -> tuple[int, int]:
    return position.as_int(), position.sub_sequence_number


@dataclass(frozen=True)
class ReplayRange:
    """The records a taking worker must re-read first: after ``after`` (the lease
    checkpoint, possibly a start sentinel) up to and including ``through`` (the pending
    checkpoint), emitted as one batch whose range end is ``through``."""

    after: ExtendedSequenceNumber
    """Where reading resumes (exclusive): the lease checkpoint."""
    through: ExtendedSequenceNumber
    """The last record of the replayed batch (inclusive): the pending checkpoint."""


def replay_range(
    checkpoint: ExtendedSequenceNumber, pending: ExtendedSequenceNumber | None
) -> ReplayRange | None:
    """The range to re-read before anything else on a lease taken with ``checkpoint`` and
    ``pending`` (``Lease.checkpoint`` / ``Lease.pending_checkpoint``), or None when there is
    nothing to replay (no pending checkpoint, or one not after the checkpoint)."""
    if pending is None or pending.is_sentinel or checkpoint == SHARD_END:
        return None
    if not checkpoint.is_sentinel and _key(pending) <= _key(checkpoint):
        return None
    return ReplayRange(checkpoint, pending)


def lease_replay_range(lease: Lease) -> ReplayRange | None:
    """:func:`replay_range` of a lease."""
    return replay_range(lease.checkpoint, lease.pending_checkpoint)
