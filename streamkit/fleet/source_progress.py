"""Per source shard, which exchange chunk an aggregation task applies next.

Shards are known by :attr:`~streamkit.fleet.chunk.ChunkHeader.key` (stream and shard id:
the shards of a join's two streams may share ids). Guarantee (steps 2 and 3 of
:mod:`~streamkit.fleet.aggregation_stage`): a chunk at or before a shard's last applied
``(range end, part)`` is a duplicate and changes nothing but its arrival time; the next
chunk must be the next part of the same range, or part 0 of a range that starts where the
last one ended, else :class:`ChunkOrderError`. A range's event-time maximum and end flag
count only once its last part is applied. An idle marker (the reader found nothing new
at the shard's tip) flags the shard idle unless a later range was applied already (then it
is a previous owner's, stale); any range chunk (a duplicate too: a new owner re-reading)
or start marker clears the flag: that shard has a reader who will say when it is idle.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from streamkit.errors import StreamkitError

from .chunk import ChunkHeader

NOTHING = -1
""":attr:`SourceProgress.last` of a shard heard of by its start marker only: no range
applied (the order rules then accept any first range, as for a shard not known)."""

Outcome = Literal["marker", "duplicate", "applied"]
"""What :func:`advance` did with a chunk: a start, end or idle marker taken note of, a
duplicate dropped, or a range part applied."""


class ChunkOrderError(StreamkitError):
    """A source shard's chunks reached an aggregation task with a gap or out of order."""


@dataclass(frozen=True)
class SourceProgress:
    """What an aggregation task knows of one source shard."""

    last: int
    """Range end of the last applied chunk (:data:`NOTHING`: none yet)."""
    part: int
    parts: int
    max_event: int | None
    ended: bool
    seen: float | None
    """Clock reading of its last chunk (None: restored, not seen since)."""
    idle: bool = False
    """Its reader's last word was an idle marker: it holds no watermark back."""

    def to_json(self) -> dict[str, Any]:
        return {"last": str(self.last), "part": self.part, "parts": self.parts,
                "max_event": self.max_event, "ended": self.ended, "idle": self.idle}  # fmt: skip

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> SourceProgress:
        return cls(int(body["last"]), int(body["part"]), int(body["parts"]),
                   body["max_event"], bool(body["ended"]), None,
                   bool(body.get("idle", False)))  # fmt: skip


def advance(sources: dict[str, SourceProgress], h: ChunkHeader, now: float) -> Outcome:
    """Record chunk ``h``, read at clock reading ``now``, in ``sources`` (updated in
    place); raises :class:`ChunkOrderError` (``sources`` possibly updated for earlier
    chunks only) for a gap or a reordering."""
    known = sources.get(h.key)
    if h.is_start:  # heard of, a reader started it: not idle; nothing applied
        if known is None:
            sources[h.key] = SourceProgress(NOTHING, 0, 1, None, False, now)
        else:
            sources[h.key] = replace(known, seen=now, idle=False)
        return "marker"
    if h.is_idle:
        if known is None:
            sources[h.key] = SourceProgress(NOTHING, 0, 1, None, False, now, idle=True)
        elif known.last == NOTHING or h.last_int >= known.last:
            sources[h.key] = replace(known, seen=now, idle=True)
        return "marker"  # (behind a range applied: a previous owner's, ignored)
    if not _next(known, h):
        if known is not None:
            sources[h.key] = replace(known, seen=now, idle=False)
        return "duplicate"
    if h.is_end:  # the shard ended after the range applied last
        sources[h.key] = (
            replace(known, ended=True, seen=now)
            if known is not None and known.last != NOTHING
            else SourceProgress(h.last_int, 0, 1, None, True, now)
        )  # fmt: skip
        return "marker"
    # a range's maximum and end count once its last part is in: the rows of the
    # parts not yet applied must not find the watermark past them
    whole = h.part == h.parts - 1
    top = known.max_event if known is not None else None
    if whole and h.max_event is not None:
        top = h.max_event if top is None else max(top, h.max_event)
    ended = (known is not None and known.ended) or (whole and h.ended)
    sources[h.key] = SourceProgress(h.last_int, h.part, h.parts, top, ended, now)
    return "applied"


def _next(known: SourceProgress | None, h: ChunkHeader) -> bool:
    """True when ``h`` is the next chunk of its shard, False when it was applied already;
    raises :class:`ChunkOrderError` for a gap or a reordering. An end marker is next when
    it follows the whole range applied last, a duplicate once the shard is ended. A
    shard known by its start marker only counts as not known."""
    if known is not None and known.last == NOTHING:
        known = None
    if h.is_end:
        return _next_end(known, h)
    key = (h.last_int, h.part)
    if known is not None and key <= (known.last, known.part):
        return False
    if known is not None and h.last_int == known.last:
        ok = h.part == known.part + 1 and h.parts == known.parts
    else:
        done = known is None or known.part == known.parts - 1
        starts = known is None or (h.first is not None and h.first.isdigit()
                                   and int(h.first) == known.last)  # fmt: skip
        ok = h.part == 0 and done and starts
    if not ok:
        was = "nothing" if known is None else f"range end {known.last} part {known.part}"
        raise ChunkOrderError(
            f"source shard {h.key!r}: chunk (range after {h.first}, end {h.last}, part "
            f"{h.part} of {h.parts}) does not follow the last one applied ({was}): records "
            "were lost or reordered on the exchange stream. Check that only one fleet with "
            "this app_name writes it and that its shard count did not change; restart the "
            "query from its checkpoint to re-read the exchange from the last commit"
        )
    return True


def _next_end(known: SourceProgress | None, h: ChunkHeader) -> bool:
    """:func:`_next` for an end marker (``h.is_end``)."""
    if known is None:
        return True  # (its ranges were applied by a state this one does not descend from)
    if known.ended or h.last_int < known.last:
        return False
    if h.last_int == known.last and known.part == known.parts - 1:
        return True
    raise ChunkOrderError(
        f"source shard {h.key!r}: end marker after {h.last} does not follow the last "
        f"chunk applied (range end {known.last} part {known.part} of {known.parts}): "
        "records were lost or reordered on the exchange stream"
    )
