"""How the micro-batch loop drives each kind of source (engine side, private).

The loop talks to a :class:`Feed`: :class:`ReplayFeed` wraps a replayable source (offsets
in the checkpoint, ``commit`` after each batch commit), :class:`AckFeed` an acknowledging
one (an empty offsets entry in the checkpoint, ``ack`` after each batch commit). Both hand
the loop a :class:`Fetched` batch and finish it with :meth:`Feed.done`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from streamkit.streaming.contracts import SourceBatch, SourceKindError, source_kind

if TYPE_CHECKING:
    from streamkit.streaming.contracts import (
        AcknowledgingSource,
        Offsets,
        ReplayableSource,
        SourceKind,
        StreamSource,
    )

CaughtUp = Callable[["Offsets"], bool]
"""Given the query's committed offsets: has it processed everything there was when the
predicate was made?"""


@dataclass(frozen=True)
class Fetched:
    """A batch for the loop; an acknowledging source's has empty ``end_offsets``."""

    batch: SourceBatch
    token: Any = None
    """The ack token (acknowledging sources only)."""

    @property
    def records(self) -> int:
        """Rows plus dead letters: a batch without either is not run."""
        return int(self.batch.rows.num_rows + self.batch.dead_letters.num_rows)


class Feed(Protocol):
    """The loop's view of its source, whichever kind it is."""

    kind: SourceKind

    async def open(self, offsets: Offsets) -> None:
        """Start reading; ``offsets`` are the recovered checkpoint's (empty: fresh)."""
        ...

    async def fetch(self, max_wait: float) -> Fetched | None:
        """The next batch, or None when nothing came within ``max_wait`` s."""
        ...

    async def catch_up(self) -> CaughtUp:
        """A predicate that becomes true once everything available now is committed."""
        ...

    async def done(self, fetched: Fetched, offsets: Offsets) -> None:
        """``fetched`` is committed (sink, state, ``commits/N``): tell the source."""
        ...

    async def close(self) -> None:
        """Close the source."""
        ...


def feed_for(source: StreamSource) -> Feed:
    """The feed for ``source``'s kind (:func:`source_kind`; raises SourceKindError)."""
    if source_kind(source) == "acknowledging":
        return AckFeed(cast("AcknowledgingSource[Any]", source))
    return ReplayFeed(cast("ReplayableSource", source))


class ReplayFeed:
    """A replayable source: today's exactly-once path, unchanged."""

    kind: SourceKind = "replayable"

    def __init__(self, source: ReplayableSource) -> None:
        self.source = source

    async def open(self, offsets: Offsets) -> None:
        """Open the source after the checkpoint's offsets (None when fresh)."""
        await self.source.open(offsets or None)

    async def fetch(self, max_wait: float) -> Fetched | None:
        """The source's next batch."""
        batch = await self.source.next_batch(max_wait)
        return None if batch is None else Fetched(batch)

    async def catch_up(self) -> CaughtUp:
        """True once the query's offsets reach the source's ``end_offsets`` of now."""
        target = await self.source.end_offsets()
        return lambda offsets: self.source.reached(offsets, target)

    async def done(self, fetched: Fetched, offsets: Offsets) -> None:
        """Commit ``offsets`` to the source (after ``commits/N``)."""
        await self.source.commit(offsets)

    async def close(self) -> None:
        """Close the source."""
        await self.source.close()


class AckFeed:
    """An acknowledging source: batches come with a token, acknowledged after the commit.

    ``catch_up`` cannot compare offsets (there are none): it is true once a fetch that
    started after it was made came back empty and every batch handed out before that is
    acknowledged, i.e. the source was drained and everything it gave is committed.
    """

    kind: SourceKind = "acknowledging"

    def __init__(self, source: AcknowledgingSource[Any]) -> None:
        self.source = source
        self._fetches = 0
        """Fetches started so far."""
        self._empty = -1
        """Number (0-based) of the latest fetch that came back empty."""
        self._handed = self._acked = 0

    async def open(self, offsets: Offsets) -> None:
        """Open the source; refuses a checkpoint written by a replayable source (it holds
        offsets this source cannot resume from)."""
        if offsets:
            name = type(self.source).__name__
            raise SourceKindError(
                f"the checkpoint holds source offsets ({sorted(offsets)}) written by a "
                f"replayable source, but {name} is an acknowledging source that cannot "
                "resume from offsets; use a new checkpoint location for it"
            )
        await self.source.open()

    async def fetch(self, max_wait: float) -> Fetched | None:
        """The source's next batch as a :class:`Fetched` with empty offsets. A batch with
        neither rows nor dead letters is acknowledged at once (nothing to commit)."""
        number = self._fetches
        self._fetches += 1
        got = await self.source.next_batch(max_wait)
        if got is not None and not (got.rows.num_rows or got.dead_letters.num_rows):
            await self.source.ack(got.token)
            got = None
        if got is None:
            self._empty = max(self._empty, number)
            return None
        self._handed += 1
        batch = SourceBatch(
            rows=got.rows,
            dead_letters=got.dead_letters,
            end_offsets={},
            partitions=got.partitions,
            fetch_seconds=got.fetch_seconds,
            decode_seconds=got.decode_seconds,
        )
        return Fetched(batch, got.token)

    async def catch_up(self) -> CaughtUp:
        """Drained: see the class docstring (``offsets`` are ignored)."""
        mark = self._fetches
        return lambda _offsets: self._empty >= mark and self._acked == self._handed

    async def done(self, fetched: Fetched, offsets: Offsets) -> None:
        """Acknowledge the batch. Ordering: the loop calls this only after the batch's
        output is durable in the sink, ``state/N`` and ``commits/N`` are written, and in
        batch order; so a crash at any point before it leaves the messages unacknowledged
        and the source delivers them again (at-least-once)."""
        await self.source.ack(fetched.token)
        self._acked += 1

    async def close(self) -> None:
        """Close the source (unacknowledged messages will be delivered again)."""
        await self.source.close()
