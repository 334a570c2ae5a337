"""ShardBuffers under a bound (exact replay of a batch logged before a restart)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from streamkit_kinesis.source.buffers import ShardBuffers
from streamkit_kinesis.source.positions import END
from streamkit_kinesis.types import KinesisRecord

from streamkit.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


def record(seq: int) -> KinesisRecord:
    return KinesisRecord(f"r{seq}".encode(), "k", str(seq))


async def filled() -> ShardBuffers:
    buffers = ShardBuffers(capacity=100)
    await buffers.accept("shard-a", [record(s) for s in (10, 11, 12, 13)], lag=0)
    await buffers.accept("shard-b", [record(s) for s in (20, 21)], lag=0)
    buffers.end("shard-b")
    return buffers


def seqs(taken: Mapping[str, Sequence[KinesisRecord]]) -> dict[str, list[str]]:
    return {k: [r.sequence_number for r in v] for k, v in taken.items()}


async def test_nothing_past_the_bound_and_nothing_from_shards_outside_it() -> None:
    buffers = await filled()
    taken = buffers.take(100, bound={"shard-a": "11"})
    assert seqs(taken.records) == {"shard-a": ["10", "11"]}
    assert buffers.offsets() == {"shard-a": "11"}, "shard-b's SHARD_END is not handed either"
    again = buffers.take(100, bound={"shard-a": "11"})
    assert not again.changed
    assert not buffers.data.is_set(), "nothing more may be taken: wait for deliveries"
    rest = buffers.take(100)
    assert seqs(rest.records) == {"shard-a": ["12", "13"], "shard-b": ["20", "21"]}
    assert buffers.offsets() == {"shard-a": "13", "shard-b": END}


async def test_a_bound_at_shard_end_takes_the_end_too() -> None:
    buffers = await filled()
    taken = buffers.take(100, bound={"shard-b": END})
    assert seqs(taken.records) == {"shard-b": ["20", "21"]}
    assert buffers.offsets() == {"shard-b": END}


async def test_the_cap_still_applies_under_a_bound() -> None:
    buffers = await filled()
    first = buffers.take(3, bound={"shard-a": "13", "shard-b": "21"})
    second = buffers.take(3, bound={"shard-a": "13", "shard-b": "21"})
    together = seqs(first.records)
    for k, v in seqs(second.records).items():
        together[k] = together.get(k, []) + v
    assert together == {"shard-a": ["10", "11", "12", "13"], "shard-b": ["20", "21"]}
    assert buffers.offsets() == {"shard-a": "13", "shard-b": "21"}


async def test_a_shard_holding_its_share_waits_while_the_others_are_accepted() -> None:
    """capacity 8 over two open shards: 4 each. shard-a at its share waits (though the
    buffer has room) until a take frees some of it; shard-b is accepted meanwhile."""
    buffers = ShardBuffers(capacity=8)
    await buffers.accept("shard-a", [record(s) for s in range(10, 14)], lag=0)
    await buffers.accept("shard-b", [record(20)], lag=0)
    assert buffers.shard_budget() == 4
    blocked = asyncio.create_task(buffers.accept("shard-a", [record(14)], lag=0))
    await asyncio.sleep(0)  # let it run up to its wait (no timing involved)
    assert not blocked.done()
    assert await buffers.accept("shard-b", [record(21)], lag=0) == 1
    assert not blocked.done()
    taken = buffers.take(2)
    assert seqs(taken.records) == {"shard-a": ["10"], "shard-b": ["20"]}, "shared fairly"
    assert await asyncio.wait_for(blocked, 30) == 1
    assert [r.sequence_number for r in buffers.state("shard-a").queue] == ["11", "12", "13", "14"]


async def test_a_shard_at_shard_end_leaves_its_share_to_the_open_shards() -> None:
    buffers = ShardBuffers(capacity=8)
    await buffers.accept("shard-a", [record(s) for s in range(10, 14)], lag=0)
    await buffers.accept("shard-b", [record(20)], lag=0)
    blocked = asyncio.create_task(buffers.accept("shard-a", [record(14)], lag=0))
    await asyncio.sleep(0)
    assert not blocked.done()
    buffers.end("shard-b")
    assert buffers.shard_budget() == 8
    assert await asyncio.wait_for(blocked, 30) == 1


async def test_a_truncated_shard_never_hands_out_or_drains_to_shard_end() -> None:
    """A shard whose records past the query's final end were dropped (``stop_at``) gives
    its queued records but never SHARD_END, and is never drained (no SHARD_END
    checkpoint), though it ended and everything accepted is committed."""
    buffers = await filled()
    buffers.state("shard-b").truncated = True
    taken = buffers.take(100)
    assert seqs(taken.records) == {"shard-a": ["10", "11", "12", "13"], "shard-b": ["20", "21"]}
    assert buffers.offsets() == {"shard-a": "13", "shard-b": "21"}
    assert not buffers.take(100).changed
    state = buffers.state("shard-b")
    state.committed = state.accepted
    assert not state.drained


async def test_a_resumed_offset_with_leading_zeros_is_read_as_its_number() -> None:
    """An offsets log edited to ``007``: the records after sequence number 7 are new (a
    text comparison by length would call 8 and 9 re-reads); non-ASCII digits are refused."""
    buffers = ShardBuffers(capacity=100)
    buffers.resume({"shard-a": "007"})
    assert buffers.known("shard-a") == "7"
    added = await buffers.accept("shard-a", [record(s) for s in (7, 8, 9, 10)], lag=0)
    assert added == 3
    assert seqs(buffers.take(100).records) == {"shard-a": ["8", "9", "10"]}
    with pytest.raises(ConfigError, match="neither a sequence number"):
        ShardBuffers(capacity=100).resume({"shard-a": "\u00b2"})
