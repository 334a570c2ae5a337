"""The end of each shard for ``available_now`` / ``process_all_available``, found by the
consumer's own readers (polling, or Enhanced Fan-Out), so the backlog is read once.

A target taken at ``t0`` (``time.monotonic()`` when the call began) with a cut time ``cut``
(the server's clock at the call, plus a clock-skew margin: :func:`~.tips.server_cut`)
holds, per shard, a pending end ``?<token>`` that resolves on the first of:

- a batch the reader returns, after the target opened, that holds a record whose
  ``ApproximateArrivalTimestamp`` is after ``cut``: the end is the record just before the
  first such record (in the batch, else the last one returned before it);
- a read of that shard sent after ``t0`` that came back empty and caught up
  (``MillisBehindLatest`` 0 or absent; :attr:`~.polling.ShardReader.caught_up`; with
  fan-out, the reader's tip probe, :attr:`~.fanout.FanoutReader.caught_up`): the end is
  the last record the reader returned before that read;
- the reader reaching the end of the closed shard: the last record it returned;
- at :meth:`TipWatches.open`, a shard whose end was already returned, or a read already
  made since ``t0``.

The end is never before the source's own position at ``t0`` (its ``floor``); a shard whose
end is None has nothing to wait for.

Guarantee: every record put (acknowledged) in the shard before ``t0`` is at or before the
end. The reader returns the shard's records in order, each once, from the lease
checkpoint, which the source's position is at or past. An empty read sent after ``t0``
that finds nothing after the reader's position means every record stored before ``t0`` was
returned before it (an empty answer is required: ``MillisBehindLatest`` 0 alone proves
nothing, kinesalite reports 0 on every read, backlog or not). A record that arrived after
``cut`` arrived after every record acknowledged before ``t0`` (their arrival is at or before
the server's time at ``t0``, which ``cut`` is at or past), so, arrival times being
non-decreasing in shard order (sequence numbers are assigned in arrival order; true of
kinesalite, LocalStack and moto), every such record comes before it. The second rule is
what ends a shard that a producer keeps writing to: no read of it ever comes back empty.
Cost: one more GetRecords per idle shard (a read that skips the idle wait,
:meth:`~.polling.ShardReader.hurry`); no record is read twice.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from streamkit_kinesis.retrieval.record_columns import RecordColumns
from streamkit_kinesis.source.errors import KinesisSourceError
from streamkit_kinesis.source.positions import later

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from datetime import datetime

    from streamkit_kinesis.retrieval.fetcher import ReaderMetrics, RecordFetcher
    from streamkit_kinesis.retrieval.polling import CaughtUp
    from streamkit_kinesis.types import KinesisRecord, RecordBatch

PENDING = "?"
"""Prefix of a target value whose end the readers have not found yet."""
KEEP = 64
"""Targets remembered (the oldest is forgotten; a query waits on one at a time)."""


@dataclass
class _Target:
    t0: float
    cut: datetime | None
    floors: dict[str, str | None]
    ends: dict[str, str | None] = field(default_factory=dict)


class Unresolved:
    """The end of a shard not found yet (:meth:`TipWatches.end`)."""


UNRESOLVED = Unresolved()


class TipWatches:
    """The targets being resolved, fed by every :class:`WatchedFetcher` (event loop only;
    :meth:`end` may be read from any thread)."""

    def __init__(self, keep: int = KEEP) -> None:
        self._targets: OrderedDict[int, _Target] = OrderedDict()
        self._keep = keep
        self._next = 0

    def open(
        self,
        t0: float,
        cut: datetime | None,
        floors: Mapping[str, str | None],
        fetchers: Mapping[str, RecordFetcher],
        ended: Mapping[str, str | None],
    ) -> dict[str, str]:
        """A target for the shards of ``floors`` (each with the source's position at
        ``t0``; a record arriving after ``cut`` ends a shard, None: no cut), resolving at
        once what ``ended`` shards tell (seen to end, each with the source's position read
        now, after every await: its last record, even one accepted after the floor was
        taken) and reads already made since ``t0``; the latest readers of the others are
        hurried."""
        token, self._next = self._next, self._next + 1
        target = self._targets[token] = _Target(t0, cut, dict(floors))
        while len(self._targets) > self._keep:
            self._targets.popitem(last=False)
        for shard_id, floor in floors.items():
            fetcher = fetchers.get(shard_id)
            if shard_id in ended:
                target.ends[shard_id] = later(ended[shard_id], floor)
            elif isinstance(fetcher, WatchedFetcher) and fetcher.ended:
                target.ends[shard_id] = later(fetcher.last, floor)
            elif fetcher is not None:
                returned = fetcher.last if isinstance(fetcher, WatchedFetcher) else None
                self._check(target, shard_id, _caught_up(fetcher), returned)
                if shard_id not in target.ends:
                    _hurry(fetcher)
        return dict.fromkeys(floors, f"{PENDING}{token}")

    def pending(self, shard_id: str) -> bool:
        """True while some target waits for the end of ``shard_id``."""
        return any(shard_id in t.floors and shard_id not in t.ends for t in self._live())

    def seen(
        self,
        shard_id: str,
        fetcher: RecordFetcher,
        batch: RecordBatch,
        before: str | None,
        last: str | None,
    ) -> None:
        """``fetcher`` of ``shard_id`` returned ``batch`` (``before``: the last record it
        returned before it; ``last``: the last one now): resolve what it tells."""
        for target in self._live():
            if shard_id not in target.floors or shard_id in target.ends:
                continue
            floor = target.floors[shard_id]
            cut = first_after(batch.records, target.cut)
            if cut is not None:
                end = _sequence_number(batch.records, cut - 1) if cut else before
                target.ends[shard_id] = later(end, floor)
            elif batch.shard_ended:
                target.ends[shard_id] = later(last, floor)
            else:
                self._check(target, shard_id, _caught_up(fetcher))

    def end(self, value: str, shard_id: str) -> str | Unresolved | None:
        """The end of ``shard_id`` in the target that gave ``value`` (None: nothing to wait
        for; :data:`UNRESOLVED`: not found yet)."""
        target = self._targets.get(int(value[len(PENDING) :]))
        if target is None:
            raise KinesisSourceError(
                f"the end-offsets target {value} was forgotten (only the {self._keep} most "
                "recent are kept); ask end_offsets again"
            )
        return target.ends.get(shard_id, UNRESOLVED)

    def resolved(self, target: Mapping[str, str]) -> dict[str, str] | None:
        """``target`` with every pending end replaced by what was found (shards with
        nothing to wait for left out), or None while some end is not found yet."""
        out: dict[str, str] = {}
        for shard_id, value in target.items():
            found = self.end(value, shard_id) if value.startswith(PENDING) else value
            if isinstance(found, Unresolved):
                return None
            if found is not None:
                out[shard_id] = found
        return out

    def _live(self) -> list[_Target]:
        return [t for t in self._targets.values() if len(t.ends) < len(t.floors)]

    @staticmethod
    def _check(
        target: _Target, shard_id: str, read: CaughtUp | None, returned: str | None = None
    ) -> None:
        """End the shard at ``read`` if it was sent after ``t0``; at ``returned`` (the last
        record returned by now) when that is later: records returned after that read
        (before the target opened) may be in the buffers already, and the end covers them."""
        if read is not None and read.sent > target.t0:
            end = later(read.last_sequence, returned)
            target.ends[shard_id] = later(end, target.floors[shard_id])


class WatchedFetcher:
    """``inner``, telling ``watches`` about every batch it returns and skipping its idle
    wait while a target waits for this shard."""

    def __init__(self, inner: RecordFetcher, shard_id: str, watches: TipWatches) -> None:
        self.inner = inner
        self._shard_id = shard_id
        self._watches = watches
        self.last: str | None = None
        """The last record returned (None: none)."""
        self.ended = False
        """True once the end of the shard was returned."""

    @property
    def caught_up(self) -> CaughtUp | None:
        """The inner fetcher's latest empty, caught-up read."""
        return _caught_up(self.inner)

    def hurry(self) -> None:
        """Let the inner fetcher's next read skip its idle wait."""
        _hurry(self.inner)

    async def next_batch(self) -> RecordBatch:
        """The inner fetcher's next batch (see the class docstring)."""
        if self._watches.pending(self._shard_id):
            _hurry(self.inner)
        batch = await self.inner.next_batch()
        before = self.last
        if batch.records:
            self.last = batch.records[-1].sequence_number
        self.ended = batch.shard_ended
        self._watches.seen(self._shard_id, self.inner, batch, before, self.last)
        return batch

    def metrics(self) -> ReaderMetrics:
        """The inner fetcher's counters."""
        return self.inner.metrics()

    async def close(self) -> None:
        """Close the inner fetcher."""
        await self.inner.close()


def first_after(records: Sequence[KinesisRecord], cut: datetime | None) -> int | None:
    """Index of the first record that arrived after ``cut`` (None: none, or no ``cut``).
    A binary search: arrival times are non-decreasing in shard order (see the module
    docstring); a record without one counts as arrived before."""
    if cut is None or not records:
        return None
    if isinstance(records, RecordColumns):
        found = records.first_arrived_after(cut)
    else:
        found = bisect_right(records, cut, key=_arrival_or(cut))
    return found if found < len(records) else None


def _sequence_number(records: Sequence[KinesisRecord], i: int) -> str:
    """Record ``i``'s sequence number (no record object built from columns)."""
    if isinstance(records, RecordColumns):
        return records.sequence_number(i)
    return records[i].sequence_number


def _arrival_or(cut: datetime) -> Callable[[KinesisRecord], datetime]:
    def arrival(record: KinesisRecord) -> datetime:
        return record.approximate_arrival or cut

    return arrival


def _caught_up(fetcher: object) -> CaughtUp | None:
    found: CaughtUp | None = getattr(fetcher, "caught_up", None)
    return found


def _hurry(fetcher: object) -> None:
    hurry = getattr(fetcher, "hurry", None)
    if callable(hurry):
        hurry()


def now() -> float:
    """The clock of ``t0`` and of :attr:`~.polling.CaughtUp.sent`."""
    return time.monotonic()
