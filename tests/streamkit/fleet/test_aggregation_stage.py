"""One aggregation stage, driven by hand: the fleet watermark (min over shards, idleness as
the shards' readers declare it, never from silence on the injected clock, ended shards),
late partial states, ordering errors and damaged chunks. Expected values are worked out by
hand in the comments (10-minute tumbling windows, 5-minute delay, times in minutes after
T0)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.fleet import AggregationStage, ChunkError, ChunkOrderError, FleetPlan, SourceStage
from streamkit.streaming.checkpoint import CheckpointDamagedError, CheckpointLog
from streamkit.streaming.checkpoint_store import LocalCheckpointStore

from .sim import MIN_US, SCHEMA, T0, T0_US


def fleet_plan(mode: str = "append") -> FleetPlan:
    empty = pa.table({"k": pa.array([], pa.string()), "v": pa.array([], pa.int64()),
                      "t": pa.array([], pa.timestamp("us", "UTC"))})  # fmt: skip
    df = sk.from_arrow(empty).with_watermark("t", "5 minutes")
    agg = df.group_by(sk.window("t", "10 minutes"), "k").agg(sk.count().alias("n"))
    return FleetPlan.of(agg.plan, mode)  # type: ignore[arg-type]


class Shard:
    """A source shard feeding one partition: each batch is one chunk."""

    def __init__(self, name: str, fleet: FleetPlan) -> None:
        self.name, self.stage = name, SourceStage(fleet)
        self.seq = 0
        self.max_event: int | None = None

    def batch(self, *minutes: float, ended: bool = False) -> bytes:
        rows = pl.DataFrame(
            {"k": ["a"] * len(minutes), "v": [1] * len(minutes),
             "t": [T0 + timedelta(minutes=m) for m in minutes]}, schema=SCHEMA,
        )  # fmt: skip
        out = self.stage.run(rows)
        if out.max_event is not None:
            self.max_event = max(out.max_event, self.max_event or out.max_event)
        first = str(self.seq) if self.seq else None
        self.seq += 10
        ((chunk,),) = self.stage.chunks(
            out, self.name, first, str(self.seq), self.max_event, ended, 1, "q"
        )
        return chunk


def minutes(ticks: int | None) -> float | None:
    return None if ticks is None else (ticks - T0_US) / MIN_US


def windows(result: pl.DataFrame) -> list[tuple[float, int]]:
    starts = result["window"].struct.field("start").dt.epoch("us").to_list()
    return [(minutes(s) or 0.0, n) for s, n in zip(starts, result["n"].to_list(), strict=True)]


def test_the_slowest_shard_holds_the_fleet_watermark() -> None:
    fleet = fleet_plan()
    stage = AggregationStage(fleet, query="q")
    fast, slow = Shard("fast", fleet), Shard("slow", fleet)
    stage.apply([fast.batch(100), slow.batch(1)], now=0)
    # min(100, 1) - 5 = -4
    assert minutes(stage.fleet_watermark) == -4
    assert {k: minutes(v) for k, v in stage.source_watermarks.items()} == {"fast": 95, "slow": -4}
    assert stage.watermark_ms == T0_US // 1000 - 4 * 60_000


def test_an_expected_shard_that_starts_late_loses_no_rows() -> None:
    fleet = fleet_plan()
    stage = AggregationStage(fleet, query="q")
    stage.expect_sources(["fast", "slow"])
    fast, slow = Shard("fast", fleet), Shard("slow", fleet)
    stage.apply([fast.batch(100)], now=0)
    stage.apply([fast.batch(101)], now=500)  # long after idle_timeout: slow never reported
    assert stage.fleet_watermark is None
    assert stage.waiting_for == ["slow"]
    stage.apply([slow.batch(1)], now=501)  # judged against no watermark: counted
    assert minutes(stage.fleet_watermark) == -4  # min(101, 1) - 5
    assert stage.late_rows == 0
    assert stage.state_rows == 2  # [0, 10) and [100, 110), nothing emitted yet


def test_without_expected_shards_a_late_starter_finds_its_rows_late() -> None:
    fleet = fleet_plan()
    stage = AggregationStage(fleet, query="q")
    fast, slow = Shard("fast", fleet), Shard("slow", fleet)
    stage.apply([fast.batch(100)], now=0)  # only fast is known: W = 95
    stage.apply([fast.batch(101)], now=1)  # in force: 95
    stage.apply([slow.batch(1)], now=2)  # late mark 95: [0, 10) ended at 10
    assert stage.late_rows == 1


def idle_marker(shard: Shard, at: int | None = None) -> bytes:
    """``shard``'s idle marker: its reader read it up to ``at`` (default: its last range
    end) and found nothing newer at its tip for ``idle_timeout``."""
    pos = shard.seq if at is None else at
    ((chunk,),) = SourceStage.idle_chunks(shard.name, str(pos) if pos else None, 1, "q")
    return chunk


def test_a_silent_shard_holds_the_watermark_until_its_reader_says_it_is_idle() -> None:
    """The fleet join failure under load: a shard whose reader is slow or stalled is
    silent far longer than ``idle_timeout``; silence is not idleness, so it holds the
    watermark and its rows, read at last, are not late. Only its idle marker (its reader
    found nothing newer at the tip) lets the watermark go past it."""
    fleet = fleet_plan()
    stage = AggregationStage(fleet, query="q")
    fast, slow = Shard("fast", fleet), Shard("slow", fleet)
    stage.apply([fast.batch(100), slow.batch(1)], now=0)  # slow last seen at 0
    stage.apply([fast.batch(101)], now=29.9)
    assert minutes(stage.fleet_watermark) == -4  # min(101, 1) - 5
    assert minutes(stage.refresh(now=100_000)) == -4  # silent for a day: still holds
    assert stage.in_force == stage.fleet_watermark  # so no batch is owed
    stage.apply([slow.batch(2, 3)], now=100_001)  # the slow reader's rows at last
    assert stage.late_rows == 0
    assert minutes(stage.fleet_watermark) == -2  # min(101, 3) - 5
    stage.apply([idle_marker(slow)], now=100_002)  # at the tip, nothing newer: idle
    said = stage.sources["slow"]
    assert said.idle
    assert minutes(stage.fleet_watermark) == 96  # 101 - 5: slow holds no more
    assert stage.owes_batch  # the watermark moved past the one in force (-2)
    emitted = stage.run_no_data(now=100_003).output  # evicts with 96: [0, 10) of slow
    assert windows(emitted) == [(0, 3)]
    assert minutes(stage.in_force) == 96
    stage.apply([slow.batch(150)], now=100_004)  # records again: it holds again
    woken = stage.sources["slow"]
    assert not woken.idle
    stage.apply([fast.batch(200)], now=100_005)
    assert minutes(stage.fleet_watermark) == 145  # min(200, 150) - 5


def test_a_range_sent_again_wakes_an_idle_shard_and_an_idle_marker_alone_is_heard() -> None:
    """A new owner re-reading a pending range (its chunk a duplicate, dropped) is reading
    the shard: the shard holds again until that reader says it is idle. A shard heard of
    first by its idle marker (no start marker reached this partition) does not hold."""
    fleet = fleet_plan()
    stage = AggregationStage(fleet, query="q")
    stage.expect_sources(["fast", "slow", "quiet"])
    fast, slow, quiet = Shard("fast", fleet), Shard("slow", fleet), Shard("quiet", fleet)
    again = slow.batch(1)
    stage.apply([fast.batch(100), again, idle_marker(quiet)], now=0)
    assert minutes(stage.fleet_watermark) == -4  # min(100, 1) - 5: quiet holds nothing
    stage.apply([idle_marker(slow)], now=1)
    assert minutes(stage.fleet_watermark) == 95
    stage.apply([again], now=2)  # sent again by a new owner: a duplicate
    assert stage.duplicates_dropped == 1
    woken = stage.sources["slow"]
    assert not woken.idle
    stage.apply([fast.batch(200), slow.batch(150)], now=3)
    assert minutes(stage.fleet_watermark) == 145  # min(200, 150) - 5: slow holds again


def test_an_idle_marker_behind_an_applied_range_is_a_previous_owners_and_ignored() -> None:
    """A previous owner's idle marker (its position behind a range the next owner sent
    already) arriving late: the shard has a live reader past it, so it stays active."""
    fleet = fleet_plan()
    stage = AggregationStage(fleet, query="q")
    fast, slow = Shard("fast", fleet), Shard("slow", fleet)
    stage.apply([fast.batch(100), slow.batch(1), slow.batch(2)], now=0)  # slow at 20
    stage.apply([idle_marker(slow, at=10)], now=1)
    assert not stage.sources["slow"].idle
    assert minutes(stage.fleet_watermark) == -3  # min(100, 2) - 5
    stage.apply([idle_marker(slow, at=20)], now=2)  # the current one: believed
    assert minutes(stage.fleet_watermark) == 95


def test_a_shard_whose_lease_changes_hands_is_not_taken_for_idle() -> None:
    """The fleet membership failure under load: a worker dies; its shard is silent longer
    than idle_timeout while its lease expires and is taken over; the next owner then sends
    the rows the dead one never emitted. While the lease changes hands the shard holds the
    watermark, so those rows are not late."""
    fleet = fleet_plan()
    stage = AggregationStage(fleet, query="q")
    fast, slow = Shard("fast", fleet), Shard("slow", fleet)
    stage.apply([fast.batch(100), slow.batch(1)], now=0)
    stage.hold_sources(["slow"])  # its owner died: no renewals, then a new owner
    stage.apply([fast.batch(101), idle_marker(slow)], now=40)  # the dead owner's last word
    assert minutes(stage.refresh(now=60)) == -4  # min(101, 1) - 5: slow still counts
    assert not stage.owes_batch
    stage.hold_sources([])  # the new owner settled in and sends what the dead one held
    stage.apply([slow.batch(2, 3)], now=61)
    assert stage.late_rows == 0
    assert not stage.sources["slow"].idle
    assert minutes(stage.fleet_watermark) == -2  # min(101, 3) - 5


def test_a_shard_that_ended_stops_holding_the_watermark_at_once() -> None:
    fleet = fleet_plan()
    stage = AggregationStage(fleet, query="q")
    fast, slow = Shard("fast", fleet), Shard("slow", fleet)
    stage.apply([fast.batch(100), slow.batch(1)], now=0)
    stage.apply([slow.batch(2, ended=True)], now=1)
    assert minutes(stage.fleet_watermark) == 95


def end_marker(shard: Shard) -> bytes:
    """``shard``'s end marker after its last range (a source task whose last read was empty)."""
    ((chunk,),) = SourceStage.end_chunks(shard.name, str(shard.seq), 1, "q")
    return chunk


def test_an_end_marker_ends_a_shard_once_its_lease_is_no_longer_expected() -> None:
    """A split parent read to its end before the split: its last read held no records, so
    its end comes as a marker. While the lease table read last still lists the parent
    (read before its SHARD_END checkpoint, it may not list the children yet) the parent
    holds; once it is gone from the expected shards, it holds no more, idle or not."""
    fleet = fleet_plan()
    stage = AggregationStage(fleet, query="q")
    stage.expect_sources(["fast", "parent"])
    fast, parent = Shard("fast", fleet), Shard("parent", fleet)
    stage.apply([fast.batch(100), parent.batch(1)], now=0)
    stage.apply([end_marker(parent)], now=1)
    assert minutes(stage.fleet_watermark) == -4  # min(100, 1) - 5: still expected
    assert stage.sources["parent"].ended
    stage.expect_sources(["fast", "child"])  # the parent finished, its child is leased
    assert minutes(stage.refresh(now=2)) == -4  # the child, never heard from, holds
    child = Shard("child", fleet)
    stage.apply([child.batch(50)], now=3)
    assert minutes(stage.fleet_watermark) == 45  # min(100, 50) - 5: the parent is out
    assert stage.late_rows == 0
    assert stage.duplicates_dropped == 0


def test_an_end_marker_sent_again_is_a_duplicate_and_one_after_a_partial_range_a_gap() -> None:
    fleet = fleet_plan()
    stage = AggregationStage(fleet, query="q")
    shard = Shard("s", fleet)
    stage.apply([shard.batch(1)], now=0)
    stage.apply([end_marker(shard), end_marker(shard)], now=1)  # a takeover sent it again
    assert stage.duplicates_dropped == 1
    assert stage.sources["s"].ended
    ahead = Shard("t", fleet)
    stage.apply([ahead.batch(1)], now=2)
    ahead.seq += 10  # a range of it never arrived
    with pytest.raises(ChunkOrderError):
        stage.apply([end_marker(ahead)], now=3)


def start_marker(shard: Shard) -> bytes:
    """``shard``'s start marker: its source task starts reading after its checkpoint
    (``shard.seq``; 0: the shard's start)."""
    after = str(shard.seq) if shard.seq else None
    ((chunk,),) = SourceStage.start_chunks(shard.name, after, 1, "q")
    return chunk


def test_a_child_that_never_receives_a_record_holds_until_its_reader_says_it_is_idle() -> None:
    """Review finding 1: a split's child nothing is written to sends no chunk of records;
    its task's start marker makes it heard of, so it holds the fleet watermark however
    long it is silent, until its reader's idle marker, then no more."""
    fleet = fleet_plan()
    stage = AggregationStage(fleet, query="q")
    stage.expect_sources(["fast", "empty"])
    fast, empty = Shard("fast", fleet), Shard("empty", fleet)
    stage.apply([fast.batch(100)], now=0)
    stage.apply([start_marker(empty)], now=1)
    assert stage.fleet_watermark is None  # heard of at 1, no event time: holds
    assert stage.waiting_for == ["empty"]
    assert minutes(stage.refresh(now=100_000)) is None
    stage.apply([idle_marker(empty)], now=100_001)  # at its tip since its start: idle
    assert minutes(stage.fleet_watermark) == 95  # 100 - 5
    assert stage.duplicates_dropped == 0
    assert stage.sources["empty"].max_event is None


def test_a_start_marker_applies_no_range_and_is_ignored_once_the_shard_is_known() -> None:
    """Sent again by every task that starts the shard (a takeover, a restart): the dedup
    map of (shard, range end) is untouched, nothing is counted as a duplicate, and the
    shard's first range (after the shard's start or after a checkpoint) follows it."""
    fleet = fleet_plan()
    stage = AggregationStage(fleet, query="q")
    late, known = Shard("late", fleet), Shard("known", fleet)
    stage.apply([start_marker(late), start_marker(late)], now=0)
    stage.apply([late.batch(1)], now=1)  # its first range: after the shard's start
    stage.apply([known.batch(2), known.batch(3)], now=1)
    stage.apply([idle_marker(known)], now=2)  # idle until a new reader starts it
    before = stage.sources["known"]
    again = start_marker(known)  # a new owner, after checkpoint 20
    stage.apply([again, start_marker(late), again], now=40)
    assert stage.sources["known"] == replace(before, seen=40, idle=False)  # a reader again
    assert stage.duplicates_dropped == 0
    stage.apply([known.batch(4), late.batch(5)], now=41)
    assert (stage.sources["known"].last, stage.sources["late"].last) == (30, 20)
    assert minutes(stage.fleet_watermark) == -1  # min(4, 5) - 5
    assert stage.late_rows == 0
    known.seq += 10  # a range lost after the marker is still a gap
    with pytest.raises(ChunkOrderError):
        stage.apply([known.batch(6)], now=42)


def test_a_shard_heard_of_by_its_start_marker_only_survives_a_restore(tmp_path: Path) -> None:
    """Checkpointed with the state: after a restore it holds until its reader's idle
    marker, then no more; an idle flag is checkpointed too (its reader said it once)."""
    fleet = fleet_plan()
    log = CheckpointLog(LocalCheckpointStore(tmp_path))
    stage = AggregationStage(fleet, query="q")
    stage.expect_sources(["fast", "empty", "quiet"])
    fast, empty, quiet = Shard("fast", fleet), Shard("empty", fleet), Shard("quiet", fleet)
    stage.apply([fast.batch(100), start_marker(empty), quiet.batch(1)], now=0)
    stage.apply([idle_marker(quiet)], now=0)
    stage.checkpoint_state(log, 1)
    heir = AggregationStage(fleet, query="q")
    heir.restore(CheckpointLog(LocalCheckpointStore(tmp_path)), 1)
    assert heir.sources["quiet"].idle
    assert heir.refresh(now=100_000) is None  # restored: empty still waited for
    heir.apply([idle_marker(empty)], now=100_001)
    assert minutes(heir.fleet_watermark) == 95  # min(100) - 5: quiet and empty idle
    heir.apply([empty.batch(200)], now=100_002)  # records after all: its first range
    assert heir.sources["empty"].last == 10


def test_the_watermark_never_decreases_when_a_slower_shard_appears() -> None:
    fleet = fleet_plan()
    stage = AggregationStage(fleet, query="q")
    stage.apply([Shard("fast", fleet).batch(100)], now=0)
    stage.apply([Shard("late-joiner", fleet).batch(1)], now=1)
    assert minutes(stage.fleet_watermark) == 95


def test_late_partials_are_judged_against_the_previous_batchs_watermark() -> None:
    fleet = fleet_plan()
    stage = AggregationStage(fleet, query="q")
    shard = Shard("s", fleet)
    stage.apply([shard.batch(100)], now=0)  # W = 95; in force: None
    # batch 2: late mark None (in force in batch 1): the row at 3 counts, window [0, 10)
    # is evicted at once by the watermark in force (95) and emitted
    assert windows(stage.apply([shard.batch(3)], now=1).output) == [(0, 1)]
    # batch 3: late mark 95 (in force in batch 2): [0, 10) ended at 10 <= 95: dropped
    result = stage.apply([shard.batch(4, 96)], now=2)
    assert result.late_rows["__n"].sum() == 1
    assert stage.late_rows == 1
    assert stage.state_rows == 2  # [100, 110) and the row at 96's [90, 100): open (W 95)


def test_a_gap_in_a_shards_ranges_is_refused_and_changes_nothing() -> None:
    fleet = fleet_plan()
    stage = AggregationStage(fleet, query="q")
    shard = Shard("s", fleet)
    stage.apply([shard.batch(1)], now=0)
    shard.batch(2)  # put, never delivered
    with pytest.raises(ChunkOrderError, match="does not follow"):
        stage.apply([shard.batch(3)], now=1)
    assert stage.sources["s"].last == 10


def test_a_damaged_chunk_refuses_the_whole_batch_and_changes_nothing() -> None:
    fleet = fleet_plan()
    stage = AggregationStage(fleet, query="q")
    shard = Shard("s", fleet)
    good, bad = shard.batch(1), bytearray(shard.batch(2))
    bad[-60] ^= 0xFF
    with pytest.raises(ChunkError):
        stage.apply([good, bytes(bad)], now=0)
    assert stage.state_rows == 0
    assert stage.sources == {}
    stage.apply([good], now=0)
    assert stage.state_rows == 1


def test_a_chunk_of_another_query_is_refused() -> None:
    fleet = fleet_plan()
    stage = AggregationStage(fleet, query="other")
    with pytest.raises(ChunkError, match="own app_name"):
        stage.apply([Shard("s", fleet).batch(1)], now=0)


def test_checkpoints_stay_bounded_and_a_damaged_fleet_file_is_reported(tmp_path: Path) -> None:
    fleet = fleet_plan()
    store = LocalCheckpointStore(tmp_path)
    log = CheckpointLog(store, keep=5, snapshot_every=3)
    stage, shard = AggregationStage(fleet, query="q"), Shard("s", fleet)
    for bid in range(40):
        stage.apply([shard.batch(bid)], now=bid)
        stage.checkpoint_state(log, bid)
    assert len(store.list("fleet")) <= 2 * 5 + 1
    again = AggregationStage(fleet, query="q")
    again.restore(CheckpointLog(store), 39)
    assert (again.sources, again.fleet_watermark) == (
        {"s": replace(stage.sources["s"], seen=None)}, stage.fleet_watermark)  # fmt: skip
    assert again.current_result().equals(stage.current_result())
    raw = store.read_bytes("fleet/000000000039")
    assert raw is not None
    store.write_bytes("fleet/000000000039", raw.replace(b'"last"', b'"lost"'))
    with pytest.raises(CheckpointDamagedError, match="fleet/000000000039"):
        AggregationStage(fleet, query="q").restore(CheckpointLog(store), 39)


def _owes(stage: AggregationStage) -> bool:
    return stage.owes_batch


def test_a_new_owner_runs_the_no_data_batch_the_previous_owner_owed(tmp_path: Path) -> None:
    """A takeover right after a batch that moved the watermark: the previous owner died
    before the no-data batch that closes the windows; the next owner owes it at once, not
    only after its next input (which may never come: the source is read to its end)."""
    fleet = fleet_plan()
    log = CheckpointLog(LocalCheckpointStore(tmp_path))
    old, shard = AggregationStage(fleet, query="q"), Shard("s", fleet)
    old.apply([shard.batch(1)], now=0)
    old.checkpoint_state(log, 0)
    assert not windows(old.apply([shard.batch(30)], now=1).output)  # in force: -4
    old.checkpoint_state(log, 1)  # committed; the owner dies before its no-data batch
    assert old.owes_batch
    heir = AggregationStage(fleet, query="q")
    heir.restore(CheckpointLog(LocalCheckpointStore(tmp_path)), 1)
    assert heir.owes_batch
    assert windows(heir.run_no_data(now=2).output) == [(0, 1)]  # 25 closed [0, 10)
    assert not _owes(heir)
    heir.checkpoint_state(log, 2)
    again = AggregationStage(fleet, query="q")  # restored after the no-data batch: none owed
    again.restore(CheckpointLog(LocalCheckpointStore(tmp_path)), 2)
    assert not again.owes_batch
