"""Records as columns on the query path (issue 15 item 1): what the polling reader hands on
is the records put, as columns and as objects; a micro-batch decoded from columns equals
one decoded from record objects; KPL aggregates de-aggregate on the columns, resuming
inside an aggregate; the source's buffers count and take column chunks by sequence number.

Expected values come from what the tests put (payloads, keys, PutRecords' sequence
numbers) and from ``json.loads`` of the payloads, never from the code under test."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pyarrow as pa
import pytest
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.kpl import KplFetchers
from streamkit_kinesis.retrieval.polling import PollingFetchers, ShardReader
from streamkit_kinesis.retrieval.record_columns import RecordColumns
from streamkit_kinesis.shards import list_shards_blocking
from streamkit_kinesis.source.batch import decode_taken
from streamkit_kinesis.source.buffers import ChunkQueue, ShardBuffers
from streamkit_kinesis.source.tip_watch import first_after
from streamkit_kinesis.testing.streams import fresh_stream
from streamkit_kinesis.types import TRIM_HORIZON, ExtendedSequenceNumber, KinesisRecord, UserRecord

from streamkit.streaming.decode import JsonDecoder
from streamkit_kinesis_tests.test_kpl import aggregated, sub_record

if TYPE_CHECKING:
    from streamkit_kinesis.retrieval.fetcher import RecordFetcher

    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration]

SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string())])
BAD = b'{"id": "not a number"'


def payload(i: int) -> bytes:
    return json.dumps({"id": i, "name": "n" * (i % 13)}).encode()


def put(client: object, stream: str, entries: list[tuple[bytes, str]]) -> list[str]:
    """PutRecords in order, one at a time (one shard: the order is the shard's)."""
    seqs = []
    for data, key in entries:
        out = client.put_record(StreamName=stream, Data=data, PartitionKey=key)  # type: ignore[attr-defined]
        seqs.append(out["SequenceNumber"])
    return seqs


async def read_all(fetcher: RecordFetcher) -> list[RecordColumns]:
    """Every batch's records until a read comes back empty and caught up."""
    out = []
    for _ in range(100):
        batch = await fetcher.next_batch()
        if batch.records:
            assert isinstance(batch.records, RecordColumns)
            out.append(batch.records)
        elif not batch.millis_behind_latest:
            return out
    raise AssertionError("the shard did not reach its tip")


async def test_reader_batches_are_the_records_put_and_decode_as_objects_do(
    kinesalite_endpoint: AwsEndpoint,
) -> None:
    ep = kinesalite_endpoint
    entries = [(payload(i), f"key-{i % 7}") for i in range(40)]
    entries.insert(17, (BAD, "bad-key"))
    client = kinesis_client(ep)
    async with fresh_stream(ep, 1, "cols") as (stream, _):
        seqs = await asyncio.to_thread(put, client, stream, entries)
        (shard,) = list_shards_blocking(client, stream)
        reader = ShardReader(client, stream, shard, TRIM_HORIZON, idle_time=0.0, limit=15)
        batches = await read_all(reader)
    assert len(batches) >= 3  # Limit 15 over 41 records: several answers
    columns = RecordColumns.concat(batches)
    expected = [(d, k, s, 0) for (d, k), s in zip(entries, seqs, strict=True)]

    def fields(r: KinesisRecord) -> tuple[bytes, str, str, int]:
        return (r.data, r.partition_key, r.sequence_number, r.sub_sequence_number)

    assert [fields(r) for r in columns] == expected
    assert [fields(columns[i]) for i in (0, 17, -1)] == [expected[i] for i in (0, 17, -1)]
    assert all(r.approximate_arrival is not None for r in columns)
    assert [columns.sequence_number(i) for i in range(len(columns))] == seqs

    # the same micro-batch, from columns and from record objects made here
    objects = [KinesisRecord(d, k, s) for d, k, s, _ in expected]
    halves = {"shard-a": columns[:20], "shard-b": columns[20:]}
    from_columns = await decode_taken(JsonDecoder(SCHEMA), halves)
    from_objects = await decode_taken(
        JsonDecoder(SCHEMA), {"shard-a": objects[:20], "shard-b": objects[20:]}
    )
    good = [json.loads(d) for d, _ in entries if d != BAD]
    assert from_columns[0].equals(pa.Table.from_pylist(good, SCHEMA))
    assert from_columns[0].equals(from_objects[0])
    dead = from_columns[1].select(["raw", "partition", "position"]).to_pylist()
    assert dead == [{"raw": BAD, "partition": "shard-a", "position": seqs[17]}]
    assert from_columns[1].equals(from_objects[1])


async def test_kpl_aggregates_de_aggregate_on_columns_and_resume_inside_one(
    kinesalite_endpoint: AwsEndpoint,
) -> None:
    ep = kinesalite_endpoint
    hashes = ["340282366920938463463374607431768211455"]
    users = [[(f"u{a}-{i}".encode(), f"pk{i % 2}", i % 3 == 0) for i in range(5)] for a in range(2)]

    def aggregate(rows: list[tuple[bytes, str, bool]]) -> bytes:
        encoded = [sub_record(int(k[-1]), d, 0 if h else None) for d, k, h in rows]
        return aggregated(["pk0", "pk1"], hashes, encoded)

    good_agg = aggregate(users[1])
    broken = good_agg[:-1] + bytes([good_agg[-1] ^ 1])  # bad MD5: handed on whole
    entries = [
        (b"plain-0", "p"),
        (aggregate(users[0]), "outer"),
        (b"plain-1", "p"),
        (broken, "outer"),
        (aggregate(users[1]), "outer"),
        (b"plain-2", "p"),
    ]
    client = kinesis_client(ep)
    async with fresh_stream(ep, 1, "kplcols") as (stream, _):
        seqs = await asyncio.to_thread(put, client, stream, entries)
        (shard,) = list_shards_blocking(client, stream)
        polling = PollingFetchers(client, stream, idle_time=0.0)
        read = RecordColumns.concat(await read_all(KplFetchers(polling)(shard, TRIM_HORIZON)))
        floor = ExtendedSequenceNumber(seqs[4], 2)
        resumed = RecordColumns.concat(await read_all(KplFetchers(polling)(shard, floor)))

    def agg_rows(a: int, seq: str) -> list[tuple[bytes, str, str, int, str | None]]:
        return [(d, k, seq, i, hashes[0] if h else None) for i, (d, k, h) in enumerate(users[a])]

    expected = [
        (b"plain-0", "p", seqs[0], 0, None),
        *agg_rows(0, seqs[1]),
        (b"plain-1", "p", seqs[2], 0, None),
        (broken, "outer", seqs[3], 0, None),
        *agg_rows(1, seqs[4]),
        (b"plain-2", "p", seqs[5], 0, None),
    ]

    def fields(r: KinesisRecord) -> tuple[bytes, str, str, int, str | None]:
        ehk = r.explicit_hash_key if isinstance(r, UserRecord) else None
        return (r.data, r.partition_key, r.sequence_number, r.sub_sequence_number, ehk)

    assert [fields(r) for r in read] == expected
    assert [isinstance(r, UserRecord) for r in read] == [
        e[2] in (seqs[1], seqs[4]) for e in expected
    ]
    assert [fields(r) for r in resumed] == expected[-3:]  # after (seqs[4], 2)


def chunk(*positions: tuple[int, int]) -> RecordColumns:
    return RecordColumns.from_records(
        [KinesisRecord(b"x", "k", str(seq), None, sub) for seq, sub in positions]
    )


def test_sequence_numbers_compare_as_integers() -> None:
    records = chunk((9, 0), (10, 0), (99, 0), (100, 0))
    assert [records.count_at_or_before(s) for s in ("8", "9", "10", "98", "100", "1000")] == [
        0, 1, 2, 2, 4, 4,
    ]  # fmt: skip


async def test_buffers_take_across_deliveries_and_never_split_an_aggregate() -> None:
    buffers = ShardBuffers(100)
    await buffers.accept("s", chunk((50, 0)), lag=0)
    await buffers.accept("s", chunk((100, 0), (100, 1), (100, 2), (100, 3), (200, 0)), lag=0)
    assert await buffers.accept("s", chunk((100, 4), (200, 0)), lag=0) == 0  # re-reads
    assert len(buffers.state("s").queue) == 6
    first = buffers.take(2).records["s"]
    assert [(r.sequence_number, r.sub_sequence_number) for r in first] == [
        ("50", 0), *(("100", i) for i in range(4)),
    ]  # fmt: skip
    assert buffers.offsets() == {"s": "100"}
    assert "s" not in buffers.take(10, {"s": "150"}).records
    assert [r.sequence_number for r in buffers.take(10, {"s": "200"}).records["s"]] == ["200"]


def test_a_queue_pop_takes_the_rest_of_an_aggregate_from_the_next_chunk() -> None:
    queue = ChunkQueue()
    queue.push(chunk((100, 0), (100, 1)))
    queue.push(chunk((100, 2), (200, 0)))
    taken = queue.pop(1)
    assert [(r.sequence_number, r.sub_sequence_number) for r in taken] == [
        ("100", 0), ("100", 1), ("100", 2),
    ]  # fmt: skip
    assert [r.sequence_number for r in queue] == ["200"]
    assert len(queue) == 1


@pytest.mark.parametrize("lead", [0, 1, 63, 64, 65, 200, 1000])
def test_same_as_first_counts_the_leading_records_of_one_number(lead: int) -> None:
    """Across the doubling windows and across chunks of the table."""
    positions = [(7, i) for i in range(lead)] + [(8, 0), (7, 0), (9, 0)]
    records = RecordColumns.concat([chunk(*positions[:50]), chunk(*positions[50:])])
    expected = next(i for i, (seq, _) in enumerate(positions) if seq != 7)
    assert records.same_as_first("7") == expected
    assert chunk(*[(7, i) for i in range(lead)]).same_as_first("7") == lead
    assert records.same_as_first("70") == 0


def test_first_after_on_columns_is_the_bisection_over_arrival_times() -> None:
    """First record arrived after the cut (a record stamped at the cut is before it);
    none arrived after: None; a record without an arrival time counts as before."""
    base = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)

    def columns_and_objects(
        offsets: list[int | None],
    ) -> tuple[RecordColumns, list[KinesisRecord], list[datetime | None]]:
        arrivals = [None if o is None else base + timedelta(microseconds=o) for o in offsets]
        objects = [KinesisRecord(b"x", "k", str(i + 1), a) for i, a in enumerate(arrivals)]
        halves = [RecordColumns.from_records(objects[:4]), RecordColumns.from_records(objects[4:])]
        return RecordColumns.concat(halves), objects, arrivals

    records, objects, arrivals = columns_and_objects([-5, -1, 0, 0, 0, 1, 1, 2, 100])
    for shift in (-10, -5, -1, 0, 1, 2, 99, 100, 101):
        cut = base + timedelta(microseconds=shift)
        later = [i for i, a in enumerate(arrivals) if a is not None and a > cut]
        assert first_after(records, cut) == (later[0] if later else None)
        assert first_after(records, cut) == first_after(objects, cut)
    assert first_after(records, None) is None
    unstamped, _, _ = columns_and_objects([None, None, 3, 4])
    assert first_after(unstamped, base) == 2
    assert first_after(unstamped, base + timedelta(microseconds=4)) is None
