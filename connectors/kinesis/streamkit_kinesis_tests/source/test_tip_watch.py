"""How a target's pending ends resolve from what the readers report (server-free: a
scripted fetcher stands in for the shard reader; the servers' side is covered by
``test_stream_source.py``)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from streamkit_kinesis.retrieval.fetcher import ReaderMetrics
from streamkit_kinesis.retrieval.polling import CaughtUp
from streamkit_kinesis.source.cut_time import cut_from
from streamkit_kinesis.source.tip_watch import (
    UNRESOLVED,
    TipWatches,
    WatchedFetcher,
    first_after,
)
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
        target = watches.open(10.0, None, {"s": "8", "t": "50"}, {"s": fetcher}, ended={})
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
        first = watches.open(
            10.0, None, {"s": None, "u": "3", "v": None}, {"s": fetcher}, ended={"u": "9"}
        )
        await fetcher.next_batch()
        assert watches.resolved(first) is None  # "v" is pending
        assert watches.end("?0", "s") == "4"
        assert watches.end("?0", "u") == "9"  # the position at open, past the older floor
        later = watches.open(20.0, None, {"s": "2"}, {"s": fetcher}, ended={})
        assert watches.resolved(later) == {"s": "4"}  # the fetcher had returned the end

    asyncio.run(run())


def test_an_empty_end_means_nothing_to_wait_for_unless_the_source_holds_a_position() -> None:
    """A reader that found nothing (e.g. one re-reading from an older lease checkpoint)
    ends the shard at the source's own position, or at nothing when it has none."""

    async def run() -> None:
        watches = TipWatches()
        nothing = (RecordBatch("s", (), 0), CaughtUp(sent=2.0, last_sequence=None))
        s, t = (WatchedFetcher(Scripted([nothing]), k, watches) for k in ("s", "t"))
        target = watches.open(1.0, None, {"s": None, "t": "8"}, {"s": s, "t": t}, ended={})
        await s.next_batch()
        await t.next_batch()
        assert watches.resolved(target) == {"t": "8"}

    asyncio.run(run())


CUT = datetime(2026, 12, 5, 0, 0, 10, tzinfo=UTC)


def arrived(seq: int, seconds: float | None) -> KinesisRecord:
    """A record that arrived ``seconds`` after the cut (None: no arrival time)."""
    at = None if seconds is None else CUT + timedelta(seconds=seconds)
    return KinesisRecord(b"x", "k", str(seq), at)


def test_the_first_record_arriving_after_the_cut_ends_the_shard_before_it() -> None:
    """A record stamped exactly at the cut is in; the first one after it ends the shard
    at the record before it, even in a batch that is not empty and not caught up."""

    async def run() -> None:
        watches = TipWatches()
        inner = Scripted(
            [
                (RecordBatch("s", (arrived(5, -3), arrived(6, None)), 900), None),
                (RecordBatch("s", (arrived(7, -1), arrived(8, 0), arrived(9, 0.001)), 900), None),
            ]
        )
        fetcher = WatchedFetcher(inner, "s", watches)
        target = watches.open(10.0, CUT, {"s": "4"}, {"s": fetcher}, ended={})
        await fetcher.next_batch()
        assert watches.end(target["s"], "s") is UNRESOLVED
        await fetcher.next_batch()
        assert watches.end(target["s"], "s") == "8"
        assert first_after([arrived(1, -1), arrived(2, 0)], CUT) is None
        assert first_after([arrived(1, 5)], None) is None  # no cut: never by arrival

    asyncio.run(run())


def test_a_batch_starting_after_the_cut_ends_at_the_record_returned_before_it() -> None:
    """... or at the source's position when the reader returned nothing before it."""

    async def run() -> None:
        watches = TipWatches()
        inner = Scripted(
            [
                (RecordBatch("s", (arrived(3, -2),), 900), None),
                (RecordBatch("s", (arrived(4, 1), arrived(5, 2)), 900), None),
            ]
        )
        fetcher = WatchedFetcher(inner, "s", watches)
        target = watches.open(10.0, CUT, {"s": None}, {"s": fetcher}, ended={})
        await fetcher.next_batch()
        await fetcher.next_batch()
        assert watches.end(target["s"], "s") == "3"
        other = Scripted([(RecordBatch("t", (arrived(9, 1),), 0), None)])
        watched = WatchedFetcher(other, "t", watches)
        second = watches.open(11.0, CUT, {"t": "7"}, {"t": watched}, ended={})
        await watched.next_batch()
        assert watches.end(second["t"], "t") == "7"

    asyncio.run(run())


def test_the_cut_is_the_server_date_plus_its_resolution_plus_the_skew() -> None:
    headers = {"date": "Sat, 05 Dec 2026 00:00:08 GMT"}
    assert cut_from(headers, 1.5, wall=lambda: 0.0) == datetime(
        2026, 12, 5, 0, 0, 10, 500000, tzinfo=UTC
    )
    assert cut_from({}, 0.25, wall=lambda: 100.0) == datetime.fromtimestamp(100.25, UTC)
    assert cut_from({"date": "garbage"}, 0.0, wall=lambda: 7.0) == datetime.fromtimestamp(7, UTC)


def test_records_returned_after_the_caught_up_read_before_open_are_inside_the_end() -> None:
    """A caught-up read sent after ``t0``, then records returned before the target opened
    (possibly in the buffers already): the end covers them."""

    async def run() -> None:
        watches = TipWatches()
        empty = CaughtUp(sent=11.0, last_sequence="4")
        inner = Scripted([(RecordBatch("s", (record(5), record(6)), 0), empty)])
        fetcher = WatchedFetcher(inner, "s", watches)
        await fetcher.next_batch()
        target = watches.open(10.0, None, {"s": "3"}, {"s": fetcher}, ended={})
        assert watches.end(target["s"], "s") == "6"

    asyncio.run(run())
