"""How a target's pending ends resolve from what the readers report (server-free: a
scripted fetcher stands in for the shard reader; the servers' side is covered by
``test_stream_source.py``)."""

from __future__ import annotations

import asyncio

from streamkit_kinesis.retrieval.fetcher import ReaderMetrics
from streamkit_kinesis.retrieval.polling import CaughtUp
from streamkit_kinesis.source.tip_watch import UNRESOLVED, TipWatches, WatchedFetcher
from streamkit_kinesis.types import KinesisRecord, RecordBatch


def record(seq: int) -> KinesisRecord:
    return KinesisRecord(b"x", "k", str(seq))


class Scripted:
    """A fetcher returning scripted batches, each with the caught-up read it reports."""

    def __init__(self, script: list[tuple[RecordBatch, CaughtUp | None]]) -> None:
        self.script = script
        self.caught_up: CaughtUp | None = None
        self.hurried = 0

    def hurry(self) -> None:
        self.hurried += 1

    async def next_batch(self) -> RecordBatch:
        batch, self.caught_up = self.script.pop(0)
        return batch

    def metrics(self) -> ReaderMetrics:
        return ReaderMetrics("s", 0, 0, 0, 0, 0, None)

    async def close(self) -> None:
        pass


def test_only_an_empty_read_sent_after_t0_resolves_and_never_below_the_floor() -> None:
    async def run() -> None:
        watches = TipWatches()
        early = CaughtUp(sent=5.0, last_sequence="7")
        inner = Scripted(
            [
                (RecordBatch("s", (record(8), record(9)), 0), early),  # records: not the tip
                (RecordBatch("s", (), 0), CaughtUp(sent=11.0, last_sequence="9")),
            ]
        )
        fetcher = WatchedFetcher(inner, "s", watches)
        inner.caught_up = early
        target = watches.open(10.0, {"s": "8", "t": "50"}, {"s": fetcher}, ended=())
        assert target == {"s": "?0", "t": "?0"}
        assert watches.end("?0", "s") is UNRESOLVED  # the read before t0 does not count
        assert inner.hurried == 1
        await fetcher.next_batch()
        assert watches.end("?0", "s") is UNRESOLVED
        assert watches.pending("s")
        await fetcher.next_batch()
        assert watches.end("?0", "s") == "9"
        assert not watches.pending("s")
        assert watches.resolved(target) is None  # "t" not read yet
        assert inner.hurried == 3  # at open, then before each read while pending

    asyncio.run(run())


def test_the_end_of_a_shard_resolves_at_any_time_and_at_open() -> None:
    async def run() -> None:
        watches = TipWatches()
        inner = Scripted([(RecordBatch("s", (record(4),), None, shard_ended=True), None)])
        fetcher = WatchedFetcher(inner, "s", watches)
        first = watches.open(10.0, {"s": None, "u": "3", "v": None}, {"s": fetcher}, ended={"u"})
        await fetcher.next_batch()
        assert watches.resolved(first) is None  # "v" is pending
        assert watches.end("?0", "s") == "4"
        assert watches.end("?0", "u") == "3"
        later = watches.open(20.0, {"s": "2"}, {"s": fetcher}, ended=())
        assert watches.resolved(later) == {"s": "4"}  # the fetcher had returned the end

    asyncio.run(run())


def test_an_empty_end_means_nothing_to_wait_for_unless_the_source_holds_a_position() -> None:
    """A reader that found nothing (e.g. one re-reading from an older lease checkpoint)
    ends the shard at the source's own position, or at nothing when it has none."""

    async def run() -> None:
        watches = TipWatches()
        nothing = (RecordBatch("s", (), 0), CaughtUp(sent=2.0, last_sequence=None))
        s, t = (WatchedFetcher(Scripted([nothing]), k, watches) for k in ("s", "t"))
        target = watches.open(1.0, {"s": None, "t": "8"}, {"s": s, "t": t}, ended=())
        await s.next_batch()
        await t.next_batch()
        assert watches.resolved(target) == {"t": "8"}

    asyncio.run(run())
