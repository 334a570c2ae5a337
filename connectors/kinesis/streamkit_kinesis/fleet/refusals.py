"""A fleet task whose fence claim is refused while its worker still holds the lease.

A task's claim is refused when its fence names an epoch at or above the lease counter the
claimant took the lease with (:meth:`~streamkit.fleet.fence.TaskFence.claim`). Two causes:

- a race: a newer owner took the lease (a higher counter) and claimed first. This worker's
  next renewal fails and its consumer reports the lease lost (``lease_lost``, or a graceful
  stop): nothing to do;
- the fence is ahead of the lease table: the table was recreated (or restored from an
  older backup) while the checkpoint root was kept. The lease stays this worker's, and any
  worker taking it would be refused the same way; passing it around the fleet would only
  raise its counter until some claim passes and the task resumes a checkpoint written
  under another lease history.

So a refused task keeps its lease, reading nothing, for ``confirm_after`` seconds (enough
renewals to find a lost lease); if the lease was not reported lost by then, the worker
fails with :class:`FenceAheadError`, which says what to do. Its graceful stop releases its
leases; any other worker that takes the task fails the same way: a fleet that cannot run a
task stops loudly instead of holding the lease idle for ever.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from streamkit.errors import StreamkitError

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)


class FenceAheadError(StreamkitError):
    """A task's fence is ahead of the lease this worker still holds (module docstring)."""


class RefusedClaims:
    """The refused claims of one worker's tasks, each escalated to ``fail`` unless its
    lease is reported lost within ``confirm_after`` seconds."""

    def __init__(self, fail: Callable[[Exception], None], confirm_after: float) -> None:
        self._fail, self.confirm_after = fail, confirm_after
        self._waiting: dict[str, asyncio.Task[None]] = {}
        self.refused = 0
        """Claims refused by a fence in this worker (a metric): it only grows."""
        self.since = datetime.now(UTC).isoformat()
        """When this count began (ISO 8601, UTC): a later count of the same worker id is
        a later process's."""

    def claim_refused(self, task: str, error: Exception) -> None:
        """``task``'s claim was refused with ``error`` while its lease is held (call on
        the event loop)."""
        self.refused += 1
        self.lease_gone(task)
        confirm = self._confirm(task, error)
        self._waiting[task] = asyncio.create_task(confirm, name=f"refused-{task}")

    def lease_gone(self, task: str) -> None:
        """``task``'s lease was lost or released: its refusal was a race, forget it."""
        waiting = self._waiting.pop(task, None)
        if waiting is not None:
            waiting.cancel()

    def close(self) -> None:
        """Forget every refusal (the worker stops: its leases are released)."""
        for task in list(self._waiting):
            self.lease_gone(task)

    @property
    def waiting(self) -> frozenset[str]:
        """The tasks refused whose lease is still held."""
        return frozenset(self._waiting)

    async def _confirm(self, task: str, error: Exception) -> None:
        await asyncio.sleep(self.confirm_after)
        self._waiting.pop(task, None)
        message = (
            f"fleet task {task}: its fence claim was refused ({error}) and this worker "
            f"still holds the task's lease {self.confirm_after:g} s later, so no other worker "
            "took it over: the fence is ahead of the lease table, which was recreated (or "
            "restored from an older backup) while the checkpoint root was kept. Every worker "
            "would be refused the same way, so this worker stops. Restore the lease table "
            "that goes with this checkpoint root, or start the query with a new checkpoint "
            "root (or delete this one) to start it over"
        )
        log.error("%s", message)
        self._fail(FenceAheadError(message))
