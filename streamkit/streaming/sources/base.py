"""What every source repeats: a bounded record of its commits, and failure propagation.

Background work of a source (a consumer task, a rebalance callback) must never fail
silently, and must not raise into a task nobody awaits. As in aiokafka, the error is
stored (:meth:`SourceBase.fail`) and re-raised, as the source's typed error with the
original as ``__cause__``, on the engine's next call (:meth:`SourceBase.raise_if_failed`
at the start of ``next_batch`` / ``end_offsets`` / ``commit`` / ``ack``).
"""

from __future__ import annotations

import logging
from collections import deque
from typing import ClassVar, Generic, TypeVar

from streamkit.errors import StreamkitError

log = logging.getLogger(__name__)

C = TypeVar("C")


class SourceFailedError(StreamkitError):
    """Background work of a source failed; ``__cause__`` holds the original error. The query
    stops; restart it (a replayable source resumes from the checkpoint, an acknowledging one
    redelivers what was not acknowledged)."""


class SourceBase(Generic[C]):
    """Base of streamkit's sources.

    :attr:`commits` holds the last :attr:`COMMITS_KEPT` things the engine committed, oldest
    first: offsets mappings for a replayable source (``SourceBase[dict[str, str]]``), ack
    tokens for an acknowledging one. Bounded, so a long-running query does not grow.
    Subclasses call ``super().__init__()`` and, at the start of every call the engine
    makes, :meth:`raise_if_failed`.
    """

    COMMITS_KEPT: ClassVar[int] = 16
    """How many commits :attr:`commits` keeps."""

    def __init__(self) -> None:
        self.commits: deque[C] = deque(maxlen=self.COMMITS_KEPT)
        """The last :attr:`COMMITS_KEPT` commits, oldest first (for tests and debugging)."""
        self._failure: BaseException | None = None

    @property
    def committed(self) -> C | None:
        """The last commit, or None."""
        return self.commits[-1] if self.commits else None

    def record_commit(self, commit: C) -> None:
        """Remember ``commit`` (the oldest one kept is dropped when full)."""
        self.commits.append(commit)

    @property
    def failure(self) -> BaseException | None:
        """The stored error of background work, if any."""
        return self._failure

    def fail(self, error: BaseException) -> None:
        """Store ``error`` of background work; the engine's next call raises it. The first
        error wins (later ones are only logged: they usually follow from it)."""
        if self._failure is None:
            self._failure = error
        elif error is not self._failure:
            log.warning("%s: further error after %r: %r", self.describe(), self._failure, error)

    def clear_failure(self) -> None:
        """Forget a stored error (a source opened again starts a fresh session)."""
        self._failure = None

    def raise_if_failed(self) -> None:
        """Raise the stored error, as :meth:`failed_error`, with the original as cause."""
        error = self._failure
        if error is not None:
            raise self.failed_error(error) from error

    def failed_error(self, error: BaseException) -> Exception:
        """The typed error raised for a stored failure; connectors override it to raise
        their own error class (e.g. ``KafkaSourceError``)."""
        return SourceFailedError(f"{self.describe()} failed: {error}")

    def describe(self) -> str:
        """A short name for messages (the class name unless overridden)."""
        return type(self).__name__
