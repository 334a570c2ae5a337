"""KPL de-aggregation on bytes assembled here by hand (no server, no KPL).

The protobuf encoder below is written from the KPL's ``messages.proto`` independently of
:mod:`streamkit_kinesis.kpl.protobuf` (it only encodes), and one literal is spelt out byte
by byte. Expected user records are what the test put in.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from streamkit_kinesis.kpl import (
    MAGIC,
    DeaggregatingFetcher,
    DeaggregationStats,
    UserRecord,
    deaggregate,
    position,
)
from streamkit_kinesis.retrieval.fetcher import ReaderMetrics
from streamkit_kinesis.types import ExtendedSequenceNumber, KinesisRecord, RecordBatch

ARRIVAL = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def tag(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def ld(number: int, payload: bytes) -> bytes:
    return tag(number, 2) + varint(len(payload)) + payload


def uint(number: int, value: int) -> bytes:
    return tag(number, 0) + varint(value)


def sub_record(
    pk_index: int, data: bytes, ehk_index: int | None = None, tags: bytes = b""
) -> bytes:
    ehk = b"" if ehk_index is None else uint(2, ehk_index)
    return uint(1, pk_index) + ehk + ld(3, data) + tags


def aggregated(keys: list[str], hashes: list[str], records: list[bytes]) -> bytes:
    body = b"".join(
        [*(ld(1, k.encode()) for k in keys), *(ld(2, h.encode()) for h in hashes)]
        + [ld(3, r) for r in records]
    )
    return framed(body)


def framed(body: bytes) -> bytes:
    return MAGIC + body + hashlib.md5(body).digest()


def kinesis(data: bytes, seq: str, pk: str = "outer") -> KinesisRecord:
    return KinesisRecord(data, pk, seq, ARRIVAL)


def triples(records: list[KinesisRecord]) -> list[tuple[str, int, str, bytes]]:
    return [(r.sequence_number, r.sub_sequence_number, r.partition_key, r.data) for r in records]


def test_literal_bytes_one_user_record() -> None:
    # AggregatedRecord{partition_key_table: ["a"], records: [{pk index 0, data "x"}]}
    body = bytes.fromhex("0a01611a0508001a0178")
    out = deaggregate([kinesis(framed(body), "49")])
    assert triples(out) == [("49", 0, "a", b"x")]
    assert isinstance(out[0], UserRecord)
    assert out[0].explicit_hash_key is None
    assert out[0].approximate_arrival == ARRIVAL


def test_many_user_records_keep_order_keys_and_sub_sequence_numbers() -> None:
    keys = ["alpha", "beta", "gamma"]
    hashes = ["340282366920938463463374607431768211455"]
    payloads = [bytes([i % 256]) * (i * 7 % 300) for i in range(300)]  # 0..299 bytes
    encoded = [
        sub_record(i % 3, p, 0 if i % 5 == 0 else None, ld(4, ld(1, b"tag") + ld(2, b"v")))
        for i, p in enumerate(payloads)
    ]
    before, after = kinesis(b"plain-1", "10"), kinesis(b"plain-2", "30")
    out = deaggregate([before, kinesis(aggregated(keys, hashes, encoded), "20"), after])
    assert out[0] is before
    assert out[-1] is after
    users = out[1:-1]
    assert triples(users) == [("20", i, keys[i % 3], p) for i, p in enumerate(payloads)]
    ehks = [u.explicit_hash_key for u in users if isinstance(u, UserRecord)]
    assert ehks == [hashes[0] if i % 5 == 0 else None for i in range(300)]
    assert [position(u) for u in users[:2]] == [
        ExtendedSequenceNumber("20", 0),
        ExtendedSequenceNumber("20", 1),
    ]


def good_record() -> bytes:
    return aggregated(["k"], [], [sub_record(0, b"one"), sub_record(0, b"two")])


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(good_record()[:-1] + bytes([good_record()[-1] ^ 1]), id="bad-md5"),
        pytest.param(good_record()[:-5], id="truncated-record"),
        pytest.param(
            framed(aggregated(["k"], [], [sub_record(0, b"one")])[4:-20]), id="truncated-protobuf"
        ),
        pytest.param(framed(ld(1, b"k") + ld(3, sub_record(1, b"x"))), id="pk-index-out-of-range"),
        pytest.param(
            framed(ld(1, b"k") + ld(3, sub_record(0, b"x", 0))), id="ehk-index-out-of-range"
        ),
        pytest.param(framed(ld(1, b"k") + ld(3, uint(1, 0))), id="no-data"),
        pytest.param(framed(ld(1, b"k") + tag(3, 3)), id="bad-wire-type"),
    ],
)
def test_malformed_aggregate_is_handed_on_whole(data: bytes) -> None:
    record = kinesis(data, "7")
    stats = DeaggregationStats()
    out = deaggregate([record, kinesis(good_record(), "8")], stats)
    assert out[0] is record
    assert triples(out[1:]) == [("8", 0, "k", b"one"), ("8", 1, "k", b"two")]
    assert (stats.malformed, stats.aggregated, stats.user_records) == (1, 1, 2)


def test_short_or_unmarked_records_are_plain() -> None:
    plain = [kinesis(MAGIC, "1"), kinesis(MAGIC + b"\0" * 15, "2"), kinesis(b"\xf3\x89\x9a", "3")]
    stats = DeaggregationStats()
    assert deaggregate(plain, stats) == plain
    assert stats == DeaggregationStats()


@dataclass
class Batches:
    """A RecordFetcher handing out prepared batches (stands in for a shard reader)."""

    batches: list[RecordBatch]
    closed: bool = False
    calls: list[int] = field(default_factory=list)

    async def next_batch(self) -> RecordBatch:
        self.calls.append(1)
        return self.batches.pop(0)

    def metrics(self) -> ReaderMetrics:
        return ReaderMetrics("s", 0, 0, len(self.calls), 0, 0, None)

    async def close(self) -> None:
        self.closed = True


def five_users(seq: str) -> KinesisRecord:
    return kinesis(aggregated(["p"], [], [sub_record(0, bytes([i])) for i in range(5)]), seq)


@pytest.mark.parametrize(
    ("floor", "expected"),
    [
        (ExtendedSequenceNumber("100", 2), [("100", 3), ("100", 4), ("200", 0)]),
        (ExtendedSequenceNumber("100", 0), [("100", i) for i in range(1, 5)] + [("200", 0)]),
        (ExtendedSequenceNumber("100", 4), [("200", 0)]),
    ],
)
async def test_fetcher_resumes_after_a_sub_sequence_checkpoint(
    floor: ExtendedSequenceNumber, expected: list[tuple[str, int]]
) -> None:
    inner = Batches(
        [RecordBatch("s", (five_users("100"),)), RecordBatch("s", (kinesis(b"z", "200"),))]
    )
    fetcher = DeaggregatingFetcher(inner, floor)
    got = [*(await fetcher.next_batch()).records, *(await fetcher.next_batch()).records]
    assert [(r.sequence_number, r.sub_sequence_number) for r in got] == expected
    await fetcher.close()
    assert inner.closed
    assert fetcher.stats.user_records == 5


async def test_fetcher_floor_waits_through_empty_batches_and_then_stops_filtering() -> None:
    # The floor's record may come after an empty read; after it nothing more is dropped.
    inner = Batches(
        [
            RecordBatch("s", ()),
            RecordBatch("s", (five_users("100"),)),
            RecordBatch("s", (five_users("300"),)),
        ]
    )
    fetcher = DeaggregatingFetcher(inner, ExtendedSequenceNumber("100", 3))
    assert (await fetcher.next_batch()).records == ()
    assert [r.sub_sequence_number for r in (await fetcher.next_batch()).records] == [4]
    assert [r.sub_sequence_number for r in (await fetcher.next_batch()).records] == [0, 1, 2, 3, 4]


async def test_source_buffers_take_an_aggregate_whole_and_drop_it_when_re_read() -> None:
    # The stream source's offsets are sequence numbers: a micro-batch must hold all or none
    # of an aggregate's user records, and a re-read of a taken aggregate (a consumer resumed
    # from the lease, AT the record) must be dropped whole.
    from streamkit_kinesis.source.buffers import ShardBuffers

    users = deaggregate([five_users("100"), kinesis(b"z", "200")])
    buffers = ShardBuffers(capacity=100)
    assert await buffers.accept("s", users, lag=0) == 6
    first = buffers.take(2).records["s"]
    assert [(r.sequence_number, r.sub_sequence_number) for r in first] == [
        ("100", i) for i in range(5)
    ]
    assert buffers.offsets() == {"s": "100"}
    resumed = ShardBuffers(capacity=100)
    resumed.resume(buffers.offsets())
    assert await resumed.accept("s", users[1:], lag=0) == 1
    assert [r.sequence_number for r in resumed.take(10).records["s"]] == ["200"]
