"""The sink contract, and the delivery guarantees a sink can declare."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import pyarrow as pa


class Guarantee(StrEnum):
    """What a sink guarantees together with the engine's checkpoint and a replayable
    source. Behind an acknowledging source every sink is at-least-once: a batch committed
    but not yet acknowledged is delivered again, as a new batch id. The README's sink
    table is tested against these values."""

    EXACTLY_ONCE = "exactly-once (idempotent by batch id)"
    """Writing a batch id again replaces what that id wrote (memory, Parquet, JSON)."""
    EXACTLY_ONCE_TRANSACTIONAL = (
        "exactly-once for read_committed readers (one transaction per batch)"
    )
    """Each batch and a marker of its id commit in one transaction; a re-run batch whose
    marker is there is not written again (Kafka with transactions)."""
    AT_LEAST_ONCE = "at-least-once"
    """A batch re-run after a restart is written again (console, Kafka, Kinesis)."""
    IF_FUNCTION_IDEMPOTENT = (
        "exactly-once if the function is idempotent by batch id, else at-least-once"
    )
    """As good as the user's function (``foreach_batch``)."""


class Sink(Protocol):
    """Receives each micro-batch's output once per batch id.

    Idempotent sinks (memory, Parquet) replace the output of a batch id that is written
    again after a restart, which makes the whole query exactly-once.
    """

    @property
    def guarantee(self) -> str:
        """The sink's delivery guarantee, one of the :class:`Guarantee` values; declare it
        as a class attribute, ``guarantee: ClassVar[Guarantee] = Guarantee.AT_LEAST_ONCE``."""
        ...

    async def add_batch(self, batch_id: int, table: pa.Table) -> None:
        """Write ``table`` as the output of ``batch_id``; return when it is durable."""
        ...

    async def close(self) -> None:
        """Flush and release resources."""
        ...
