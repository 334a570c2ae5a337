"""Pure parts of the Kinesis source's end of every shard: where a tip read starts, and
``reached`` as a comparison of positions (no server)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from streamkit_kinesis.consumer import InitialPosition
from streamkit_kinesis.source import KinesisStreamSource
from streamkit_kinesis.source.tips import TipStart, tip_start
from streamkit_kinesis.types import (
    AT_TIMESTAMP,
    LATEST,
    SHARD_END,
    TRIM_HORIZON,
    ExtendedSequenceNumber,
)

from streamkit.config import AwsEndpoint

WHEN = datetime(2024, 5, 1, 12, tzinfo=UTC)
HORIZON = InitialPosition.trim_horizon()


def test_the_sources_own_position_wins_and_must_be_reached() -> None:
    lease = ExtendedSequenceNumber("5")
    assert tip_start("s", "42", lease, HORIZON) == TipStart("s", ExtendedSequenceNumber("42"), "42")
    assert tip_start("s", "SHARD_END", lease, HORIZON) == TipStart("s", None)


def test_without_a_position_the_lease_checkpoint_then_the_initial_position() -> None:
    seq = ExtendedSequenceNumber("7")
    assert tip_start("s", None, seq, HORIZON) == TipStart("s", seq, None)
    assert tip_start("s", None, TRIM_HORIZON, HORIZON) == TipStart("s", TRIM_HORIZON)
    assert tip_start("s", None, None, HORIZON) == TipStart("s", TRIM_HORIZON)
    at = InitialPosition.at_timestamp(WHEN)
    assert tip_start("s", None, AT_TIMESTAMP, at) == TipStart("s", WHEN)
    assert tip_start("s", None, None, at) == TipStart("s", WHEN)


@pytest.mark.parametrize("checkpoint", [SHARD_END, LATEST])
def test_finished_and_latest_leases_have_nothing_to_wait_for(
    checkpoint: ExtendedSequenceNumber,
) -> None:
    assert tip_start("s", None, checkpoint, HORIZON) == TipStart("s", None)
    assert tip_start("s", None, None, InitialPosition.latest()) == TipStart("s", None)


def source() -> KinesisStreamSource:
    return KinesisStreamSource("stream", "app", AwsEndpoint.local("http://127.0.0.1:9"))


@pytest.mark.parametrize(
    ("offsets", "done"),
    [
        ({}, False),
        ({"a": "99", "b": "SHARD_END"}, False),
        ({"a": "100", "b": "SHARD_END"}, True),
        ({"a": "1000", "b": "20", "c": "1"}, True),
        ({"a": "SHARD_END", "b": "19"}, False),
    ],
)
def test_reached_compares_sequence_numbers_as_integers(offsets: dict[str, str], done: bool) -> None:
    assert source().reached(offsets, {"a": "100", "b": "20"}) is done


def test_an_empty_target_is_reached_at_once() -> None:
    assert source().reached({}, {})


def test_latest_is_pinned_to_the_moment_the_source_opens() -> None:
    src = KinesisStreamSource(
        "stream", "app", AwsEndpoint.local("http://127.0.0.1:9"), initial_position="LATEST",
        wall_clock=WHEN.timestamp,
    )  # fmt: skip
    assert src._pinned(src.config).initial_position == InitialPosition.at_timestamp(WHEN)
    assert source()._pinned(source().config).initial_position == HORIZON


class _Holding:
    """Stands in for the consumer: only which shards this worker holds (pure logic)."""

    def __init__(self, held: set[str]) -> None:
        self.held = held

    def held_shard_ids(self) -> frozenset[str]:
        return frozenset(self.held)


def test_a_shard_another_worker_holds_is_left_out_after_the_give_up_time() -> None:
    now = [0.0]
    src = KinesisStreamSource(
        "stream", "app", AwsEndpoint.local("http://127.0.0.1:9"), failover_time=3.0,
        consumer_options={"take_interval": 1.0}, clock=lambda: now[0],
    )  # fmt: skip
    holding = _Holding({"a"})
    src._consumer = holding  # type: ignore[assignment]
    target = {"a": "100", "b": "20"}
    src._watch(target)
    give_up = 3.0 + 2 * 1.0 + 1
    now[0] = give_up  # not yet: b has been unheld exactly the give-up time
    src._tick()
    assert not src.reached({"a": "100"}, target)
    now[0] = give_up + 0.1  # b is held elsewhere for longer: only a counts
    src._tick()
    assert src.reached({"a": "100"}, target)
    assert not src.reached({"a": "99"}, target)
    holding.held.add("b")  # taken back: b counts again
    src._tick()
    assert not src.reached({"a": "100"}, target)


def test_listed_descendants_without_a_lease_join_the_scope() -> None:
    """Children (and grandchildren) of a shard in scope that have no lease yet join it;
    a shard with a lease, or descending from no shard in scope, does not."""
    from streamkit_kinesis.source.tips import descendants
    from streamkit_kinesis.types import HashKeyRange, ShardInfo

    def shard(shard_id: str, *parents: str) -> ShardInfo:
        return ShardInfo(shard_id, parents, HashKeyRange(0, 1), "0")

    listed = {
        s.shard_id: s
        for s in (
            shard("a"), shard("b"), shard("c", "a"), shard("d", "a"), shard("e", "c"),
            shard("f", "b"), shard("g", "x", "b"), shard("h", "d", "f"),
        )
    }  # fmt: skip
    assert descendants({"a"}, listed, leased={"a", "b", "d"}) == ["c", "e"]
    assert descendants({"a", "b"}, listed, leased=set()) == ["c", "d", "e", "f", "g", "h"]


def test_children_waiting_for_a_parent_held_here_are_never_given_up() -> None:
    """A child (and grandchild) of a shard held here is not unheld however long the parent
    takes; once the parent is released its clock starts, and the give-up rule applies."""
    from streamkit_kinesis.source.unheld import UnheldShards

    unheld = UnheldShards(give_up=5.0)
    unheld.watch(["p", "c", "g", "x"], {"c": ("p",), "g": ("c", "y"), "x": ("z",)})
    unheld.tick(frozenset({"p"}), 0.0)
    unheld.tick(frozenset({"p"}), 100.0)
    assert unheld.given_up == {"x"}  # its parent z is not held here
    unheld.tick(frozenset(), 101.0)  # the parent finished: the children's clocks start
    unheld.tick(frozenset(), 106.0)
    assert unheld.given_up == {"x"}
    unheld.tick(frozenset(), 106.5)
    assert unheld.given_up == {"x", "c", "g", "p"}


def test_unheld_shards_stay_bounded_across_reshards() -> None:
    """Across 3,000 targets of a stream that reshards every time (each target: the open
    shard, its parent and two shards held elsewhere, one of them replaced each time), only
    the current target's shards are watched, clocked or kept with parents, the retired ids
    are capped, and a predicate on an older target still leaves out a shard it retired."""
    from streamkit_kinesis.source import unheld as module
    from streamkit_kinesis.source.unheld import UnheldShards

    unheld = UnheldShards(give_up=5.0)
    now = 0.0
    for n in range(1, 3001):
        target = [f"s{n}", f"s{n - 1}", "elsewhere", f"gone{n}"]
        unheld.watch(target, {f"s{n}": (f"s{n - 1}",)})
        for _ in range(3):  # gone<n> is unheld for 6 s > 5: given up
            now += 3.0
            unheld.tick(frozenset({f"s{n - 1}"}), now)
        assert unheld.watched == set(target)
        assert set(unheld._since) == {"elsewhere", f"gone{n}"}
        assert set(unheld._parents) <= {f"s{n}", f"s{n - 1}"}
        assert len(unheld._retired) <= module.RETIRED_KEPT
        assert unheld.given_up == {"elsewhere", f"gone{n}"}
        if n == 10:  # a predicate on the target of n = 2 leaves out its retired shards
            assert unheld.left_out("gone2")
            assert unheld.left_out("s0")
            assert not unheld.left_out("s10")
            assert not unheld.left_out("s9")
    assert len(unheld._retired) == module.RETIRED_KEPT
    assert not unheld.left_out("gone2")  # the oldest retired ids are forgotten
    assert unheld.left_out("gone2999")
    unheld.watch(["gone2999"])  # listed again: watched again, its clock starts anew
    assert not unheld.left_out("gone2999")
    assert unheld.watched == {"gone2999"}
