"""What a consumer worker tells listeners (logging, tests, dashboards)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class ConsumerEventKind(StrEnum):
    """Kinds of :class:`ConsumerEvent`."""

    LEASE_GAINED = "lease_gained"
    """A take cycle won this shard's lease."""
    LEASE_LOST = "lease_lost"
    """The lease was lost; the shard was stopped at once, without checkpointing."""
    LEASE_RELEASED = "lease_released"
    """The lease was released on purpose (SHARD_END or graceful shutdown)."""
    TAKE_CYCLE = "take_cycle"
    """A take cycle completed; ``detail`` gives the leases held after it."""
    SHARD_STARTED = "shard_started"
    """Parents are done; reading starts at ``detail`` (the lease checkpoint)."""
    SHARD_ENDED = "shard_ended"
    """The shard was read to its end and checkpointed at SHARD_END (``detail`` says
    ``vanished`` when the shard was no longer in the stream)."""
    SHARD_SYNCED = "shard_synced"
    """A shard sync (ListShards) completed; ``detail`` lists the leases it created."""
    LEASES_AUDITED = "leases_audited"
    """The leader checked the hash ranges of the leases; ``detail`` says ``complete`` or
    names the hole and how many audits in a row saw it."""
    LEADER_CHANGED = "leader_changed"
    """A take cycle made this worker the leader (``detail`` ``leader``) or a follower."""
    CHILDREN_CREATED = "children_created"
    """A shard reached its end; ``detail`` lists the child leases created for it."""
    LEASES_CLEANED = "leases_cleaned"
    """A lease cleanup deleted leases; ``detail`` lists them by rule."""
    STOPPING = "stopping"
    """Graceful shutdown began."""
    STOPPED = "stopped"
    """Every lease was released (or lost) and the worker stopped."""


@dataclass(frozen=True)
class ConsumerEvent:
    """One thing that happened in a consumer worker."""

    kind: ConsumerEventKind
    """What happened."""
    shard_id: str | None = None
    """The shard concerned, if any."""
    detail: str = ""
    """Human-readable detail (reason of a loss, held count, start position, ...)."""
    held: int = 0
    """Leases held by this worker right after the event."""


ConsumerListener = Callable[[ConsumerEvent], None]
"""Called synchronously in the event loop for every :class:`ConsumerEvent`; keep it quick."""
