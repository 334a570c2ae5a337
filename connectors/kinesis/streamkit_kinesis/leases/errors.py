"""Typed errors of the lease subsystem.

``LeaseLostError`` means *this worker no longer owns a lease it thought it held* (renew,
release or checkpoint rejected); the others cover the outcomes a caller must tell apart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamkit.errors import StreamkitError

if TYPE_CHECKING:
    from .model import Lease


class LeaseLostError(StreamkitError):
    """This worker no longer owns the lease; stop processing the shard, do not checkpoint."""


class LeaseConflictError(StreamkitError):
    """A take or create lost a race: the lease changed (or exists) since it was read.

    Not a failure of the caller's own lease; the caller simply did not win this one.
    ``current`` is the lease as the store holds it now, when known (``None`` if it is gone).
    """

    def __init__(self, message: str, lease_key: str, current: Lease | None = None) -> None:
        super().__init__(message)
        self.lease_key = lease_key
        self.current = current


class CheckpointOrderError(StreamkitError, ValueError):
    """A checkpoint would move backwards (or leave SHARD_END); nothing was written.

    Checkpoints only move forward so a restart never re-reads acknowledged records twice and
    never skips unacknowledged ones. Pass a sequence number at or after the stored checkpoint.
    """


class LeaseNotFoundError(StreamkitError, KeyError):
    """The lease does not exist in the lease table (deleted, or never created by shard sync)."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else "lease not found"


class LeaseStoreUnavailableError(StreamkitError):
    """The lease store is temporarily unavailable (throttled, timed out, unreachable).

    Transient: callers retry on their next cycle. The renewer keeps a lease through such errors
    until it has gone ``failover_time`` without a successful renewal, then reports it lost.
    """


class LeaseStoreError(StreamkitError):
    """A non-transient lease store failure (missing table, bad credentials, invalid request)."""
