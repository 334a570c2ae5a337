"""The acknowledging source contract (SQS, Pub/Sub, an in-memory queue): at-least-once.

Such a source cannot seek: it hands out messages, and forgets a message only when it is
acknowledged. The engine acknowledges a batch after the batch is committed, so a crash
before that makes the source deliver the batch's messages again (at-least-once; with an
idempotent sink a redelivery before the commit replaces the uncommitted batch, one after
the commit but before the ack is processed twice). There are no offsets and no end to
read to: ``available_now`` is refused at start (see
:class:`~streamkit.streaming.contracts.kinds.AvailableNowUnsupportedError`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    import pyarrow as pa

    from streamkit.streaming.contracts.batches import AckBatch

T = TypeVar("T")


class AcknowledgingSource(Protocol[T]):
    """A source of micro-batches that are acknowledged, not replayed from offsets.

    Guarantee required by at-least-once: every message handed out in a batch whose token
    is not passed to :meth:`ack` is handed out again, in a later batch of this or a later
    run (after a visibility timeout, or when the source is opened again); a message whose
    batch was acknowledged is never handed out again.
    """

    @property
    def schema(self) -> pa.Schema:
        """Schema of decoded rows (declared, or inferred once and then enforced)."""
        ...

    async def open(self) -> None:
        """Start receiving. Messages handed out earlier and never acknowledged (by a run
        that crashed) are delivered again, now or when their visibility timeout ends."""
        ...

    async def next_batch(self, max_wait: float) -> AckBatch[T] | None:
        """Messages received now (waiting at most ``max_wait`` s) with the token that
        acknowledges them, or None if none."""
        ...

    async def ack(self, token: T) -> None:
        """Forget the messages of the batch ``token`` came with; durable on return.

        Ordering: the engine calls this only after the batch's output is durable in the
        sink and ``commits/N`` is written, and in batch order. A token from a batch the
        source has meanwhile redelivered (visibility timeout passed) may be ignored.
        """
        ...

    async def close(self) -> None:
        """Release resources. Unacknowledged messages are redelivered later."""
        ...
