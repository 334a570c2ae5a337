"""How the micro-batch loop drives each kind of source (engine side, private).

The loop talks to a :class:`Feed`: :class:`ReplayFeed` wraps a replayable source (offsets
in the checkpoint, ``commit`` after each batch commit), :class:`AckFeed` an acknowledging
one (an empty offsets entry in the checkpoint, ``ack`` after each batch commit). Both hand
the loop a :class:`Fetched` batch and finish it with :meth:`Feed.done`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

import pyarrow as pa

from streamkit.errors import StreamkitError
from streamkit.streaming.contracts import (
    BoundedSource,
    SourceBatch,
    SourceKindError,
    source_kind,
)
from streamkit.streaming.decode import empty_dead_letters

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


class ReplayError(StreamkitError):
    """A batch logged before a restart cannot be re-read exactly."""


def merge_batches(parts: list[SourceBatch], end_offsets: Offsets) -> SourceBatch:
    """One batch holding every part's rows and dead letters, ending at ``end_offsets``."""
    rows = [p.rows for p in parts]
    dead = [p.dead_letters for p in parts]
    return SourceBatch(
        rows=pa.concat_tables(rows) if rows else pa.table({}),
        dead_letters=pa.concat_tables(dead) if dead else empty_dead_letters(),
        end_offsets=end_offsets,
        partitions=tuple(q for p in parts for q in p.partitions),
        fetch_seconds=sum(p.fetch_seconds for p in parts),
        decode_seconds=sum(p.decode_seconds for p in parts),
        row_partitions=_concat_partitions(parts),
        open_partitions=next(
            (p.open_partitions for p in reversed(parts) if p.open_partitions is not None), None
        ),
        ended_partitions=frozenset().union(*(p.ended_partitions for p in parts)),
    )


def _concat_partitions(parts: list[SourceBatch]) -> pa.Array | None:
    """The parts' row partitions end to end, or None unless every part has them."""
    known = [p.row_partitions for p in parts]
    if not known or any(k is None for k in known):
        return None
    return pa.chunked_array([k.cast(pa.string()) for k in known if k is not None]).combine_chunks()


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

    @property
    def exact_replay(self) -> bool:
        """Whether a batch re-run after a restart holds exactly its first run's records."""
        ...

    def replay_to(self, target: Offsets) -> None:
        """Before ``open``: a batch ending at ``target`` was logged but not committed."""
        ...

    async def open(self, offsets: Offsets) -> None:
        """Start reading; ``offsets`` are the recovered checkpoint's (empty: fresh)."""
        ...

    async def fetch(self, max_wait: float) -> Fetched | None:
        """The next batch, or None when nothing came within ``max_wait`` s."""
        ...

    async def catch_up(self, final: bool = False) -> CaughtUp:
        """A predicate that becomes true once everything available now is committed;
        ``final``: the query ends there (``available_now``)."""
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
    """A replayable source: offsets in the checkpoint, exactly-once restarts.

    After :meth:`replay_to` (a batch logged but not committed before a restart), the first
    :meth:`fetch` returns exactly that batch's records when the source is a
    :class:`BoundedSource`; other sources simply read on from the committed offsets.
    """

    kind: SourceKind = "replayable"

    def __init__(self, source: ReplayableSource, replay_timeout: float = 300.0) -> None:
        self.source = source
        self.replay_timeout = replay_timeout
        self._start: Offsets = {}
        self._target: Offsets | None = None

    @property
    def exact_replay(self) -> bool:
        """Whether a re-run batch holds exactly its first run's records."""
        return isinstance(self.source, BoundedSource)

    def replay_to(self, target: Offsets) -> None:
        """The next fetch re-reads up to ``target`` (a logged, uncommitted batch's offsets)."""
        self._target = dict(target)

    async def open(self, offsets: Offsets) -> None:
        """Open the source after the checkpoint's offsets (None when fresh)."""
        self._start = dict(offsets)
        await self.source.open(offsets or None)

    async def fetch(self, max_wait: float) -> Fetched | None:
        """The source's next batch (the replayed batch first, after :meth:`replay_to`)."""
        if self._target is not None and isinstance(self.source, BoundedSource):
            target, self._target = self._target, None
            return Fetched(await self._replay(self.source, target, max_wait))
        self._target = None
        batch = await self.source.next_batch(max_wait)
        return None if batch is None else Fetched(batch)

    async def _replay(self, source: BoundedSource, target: Offsets, max_wait: float) -> SourceBatch:
        """Every record after the committed offsets up to ``target``, as one batch."""
        replayable = cast("ReplayableSource", source)
        offsets = dict(self._start)
        parts: list[SourceBatch] = []
        deadline = time.monotonic() + self.replay_timeout
        source.bound(target)
        try:
            while not replayable.reached(offsets, target):
                if time.monotonic() > deadline:
                    raise ReplayError(
                        f"could not re-read the uncommitted batch up to {dict(target)} within "
                        f"{self.replay_timeout:.0f} s (reached {offsets}); were records "
                        "deleted by retention? Start from a new checkpoint location"
                    )
                batch = await replayable.next_batch(max_wait)
                if batch is not None:
                    parts.append(batch)
                    offsets.update(batch.end_offsets)
        finally:
            source.bound(None)
        return merge_batches(parts, {**offsets, **target})

    async def catch_up(self, final: bool = False) -> CaughtUp:
        """True once the query's offsets reach the source's ``end_offsets`` of now; with
        ``final``, a source that has ``stop_at`` is told that the query ends there (so it
        hands out nothing past it)."""
        target = await self.source.end_offsets()
        stop_at = getattr(self.source, "stop_at", None)
        if final and callable(stop_at):
            stop_at(target)
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

    exact_replay = False
    """Messages come again after a crash, not a range: a re-run batch may differ."""

    def replay_to(self, target: Offsets) -> None:
        """Nothing to re-read by offsets (an acknowledging source logs none)."""

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

    async def catch_up(self, final: bool = False) -> CaughtUp:
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
