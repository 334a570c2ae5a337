"""GetRecords answers as Arrow columns: the vectorised base64 decoder against the standard
library, and the raw-body path against botocore's own parse of the same records."""

from __future__ import annotations

import base64
import json
import random
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pytest
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.retrieval import columnar
from streamkit_kinesis.retrieval.columnar import (
    KPL_MAGIC,
    b64decode_column,
    get_records_columnar,
    parse_answer,
    raw_get_records,
    to_records,
)
from streamkit_kinesis.testing.streams import fresh_stream

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint


def payloads(seed: int, n: int) -> list[bytes]:
    rng = random.Random(seed)
    out = [rng.randbytes(rng.randrange(0, 70)) for _ in range(n)]
    return [*out, b"", b"a", b"ab", b"abc", KPL_MAGIC + b"rest"]


def test_base64_column_decodes_as_the_standard_library_does() -> None:
    data = payloads(1, 2000)
    encoded = pa.array([base64.b64encode(p).decode() for p in data])
    assert b64decode_column(encoded).to_pylist() == data
    assert b64decode_column(encoded.slice(7, 300)).to_pylist() == data[7:307]
    assert b64decode_column(pa.array([], pa.string())).to_pylist() == []


@pytest.mark.parametrize("bad", ["QQ==QUI=", "QQ=A", "QUJ", "Q!==", "QQ===A==", "QR==", "QUI=\n"])
def test_malformed_base64_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="base64"):
        b64decode_column(pa.array(["QUJD", bad]))


def test_an_answer_body_as_columns() -> None:
    data = payloads(2, 50)
    records = [
        {
            "Data": base64.b64encode(p).decode(),
            "PartitionKey": f"k{i}",
            "SequenceNumber": str(10**40 + i),
            "ApproximateArrivalTimestamp": 1_700_000_000.125 + i,
        }
        for i, p in enumerate(data)
    ]
    body = {"Records": records, "NextShardIterator": "it", "MillisBehindLatest": 7}
    got = parse_answer(json.dumps(body).encode())
    assert got.data.to_pylist() == data
    assert got.sequence_numbers.to_pylist() == [r["SequenceNumber"] for r in records]
    assert got.partition_keys.to_pylist() == [r["PartitionKey"] for r in records]
    assert [t.timestamp() for t in got.arrival.to_pylist()] == [
        r["ApproximateArrivalTimestamp"] for r in records
    ]
    assert (got.next_iterator, got.millis_behind_latest) == ("it", 7)
    objects = to_records(got)
    assert [(r.data, r.sequence_number) for r in objects] == [
        (p, r["SequenceNumber"]) for p, r in zip(data, records, strict=True)
    ]
    assert [r.approximate_arrival for r in objects] == [
        datetime.fromtimestamp(1_700_000_000.125 + i, UTC) for i in range(len(records))
    ]
    assert got.aggregated().to_pylist() == [p.startswith(KPL_MAGIC) for p in data]
    assert got.payload_bytes() == sum(map(len, data))
    end = parse_answer(
        json.dumps({"Records": [], "ChildShards": [{"ShardId": "c1", "ParentShards": []}]}).encode()
    )
    assert (len(end), end.next_iterator, end.child_shard_ids) == (0, None, ("c1",))


@pytest.mark.integration
async def test_raw_path_reads_what_botocore_parses(aws_endpoint: AwsEndpoint) -> None:
    ep = aws_endpoint
    data = payloads(3, 300)
    async with fresh_stream(ep, 1, "columnar") as (stream, _):
        plain = ep.client("kinesis")
        for i in range(0, len(data), 100):
            plain.put_records(
                StreamName=stream,
                Records=[{"Data": p, "PartitionKey": "k"} for p in data[i : i + 100]],
            )
        shard = plain.list_shards(StreamName=stream)["Shards"][0]["ShardId"]

        def iterator() -> str:
            out = plain.get_shard_iterator(
                StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
            )
            return str(out["ShardIterator"])

        truth = plain.get_records(ShardIterator=iterator(), Limit=10_000)["Records"]
        hooked = kinesis_client(ep)
        got = get_records_columnar(hooked, iterator(), 10_000)
        still = hooked.get_records(ShardIterator=iterator(), Limit=10_000)
        raw = raw_get_records(hooked, iterator(), 10_000)
        unhooked = raw_get_records(plain, iterator(), 10_000)
    assert raw is not None, "the hooked client hands the raw body over"
    assert unhooked is None
    assert [base64.b64decode(r["Data"]) for r in json.loads(raw)["Records"]] == data
    assert [r["Data"] for r in truth] == data
    assert got.data.to_pylist() == data
    assert got.sequence_numbers.to_pylist() == [r["SequenceNumber"] for r in truth]
    objects = to_records(got)
    assert [(r.data, r.partition_key, r.sequence_number) for r in objects] == [
        (r["Data"], r["PartitionKey"], r["SequenceNumber"]) for r in truth
    ]
    assert [r.approximate_arrival for r in objects] == [
        r["ApproximateArrivalTimestamp"] for r in truth
    ]
    assert [r["Data"] for r in still["Records"]] == data, "other callers get botocore's parse"


def test_an_answer_with_unusual_field_types_goes_the_slow_way() -> None:
    body = {
        "Records": [
            {
                "Data": base64.b64encode(b"x").decode(),
                "PartitionKey": "k",
                "SequenceNumber": "5",
                "ApproximateArrivalTimestamp": "2026-12-02T10:00:00.250Z",
            }
        ],
        "MillisBehindLatest": 0,
    }
    got = parse_answer(json.dumps(body).encode())
    assert got.data.to_pylist() == [b"x"]
    assert got.arrival.to_pylist() == [datetime(2026, 12, 2, 10, 0, 0, 250_000, tzinfo=UTC)]


def _no_slow_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(body: bytes) -> Any:
        raise AssertionError("a usual body went the slow way")

    monkeypatch.setattr(columnar, "_parse_slowly", refuse)


def test_a_body_with_escapes_extra_fields_and_number_forms_is_read_as_json_reads_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unicode and quote escapes, fields outside the answer's schema (AWS adds
    ``EncryptionType``), timestamps as integers and in exponent form: read as ``json``
    and ``base64`` read them, in Arrow's 32-bit ``string`` / ``binary`` types, without the
    slow path."""
    _no_slow_path(monkeypatch)
    body = (
        b'{"Records":[{"Data":"AAEC/w==","PartitionKey":"k\\u00e9\\"\\\\\\ud83d\\ude00",'
        b'"SequenceNumber":"49650000000000000000000000000000000000000000000000000001",'
        b'"ApproximateArrivalTimestamp":1.7647000001234E9,"EncryptionType":"NONE"},'
        b'{"PartitionKey":"p","Data":"","SequenceNumber":"2","ApproximateArrivalTimestamp":1764700000,'
        b'"Extra":{"nested":[1,2]}}],'
        b'"NextShardIterator":"AAA\\/B","MillisBehindLatest":12,"Unknown":[{"a":null}]}'
    )
    truth = json.loads(body)
    got = parse_answer(body)
    records = truth["Records"]
    assert got.data.to_pylist() == [base64.b64decode(r["Data"]) for r in records]
    assert got.partition_keys.to_pylist() == [r["PartitionKey"] for r in records]
    assert got.partition_keys.to_pylist()[0] == 'k\u00e9"\\\U0001f600'
    assert got.sequence_numbers.to_pylist() == [r["SequenceNumber"] for r in records]
    micros = [round(r["ApproximateArrivalTimestamp"] * 1_000_000) for r in records]
    assert got.arrival.cast(pa.int64()).to_pylist() == micros
    assert (got.data.type, got.partition_keys.type, got.sequence_numbers.type) == (
        pa.binary(), pa.string(), pa.string(),
    )  # fmt: skip
    assert (got.next_iterator, got.millis_behind_latest) == ("AAA/B", 12)
    assert (got.child_shard_ids, got.continuation) == ((), None)


def test_an_event_body_with_child_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    """A SubscribeToShardEvent payload: its continuation, and the children that carry
    parents and a hash range as shard descriptions (one without them left out)."""
    _no_slow_path(monkeypatch)
    children = [
        {
            "ShardId": "shardId-000000000002",
            "ParentShards": ["shardId-000000000000", "shardId-000000000001"],
            "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": str(2**128 - 1)},
        },
        {"ShardId": "shardId-000000000003", "ParentShards": []},
    ]
    body = {
        "Records": [],
        "ContinuationSequenceNumber": "77",
        "MillisBehindLatest": 0,
        "ChildShards": children,
    }
    got = parse_answer(json.dumps(body).encode(), event=True)
    assert (len(got), got.continuation, got.next_iterator) == (0, "77", None)
    assert got.child_shard_ids == ("shardId-000000000002", "shardId-000000000003")
    [info] = got.child_shards
    assert (info.shard_id, info.parent_shard_ids) == (
        "shardId-000000000002", ("shardId-000000000000", "shardId-000000000001"),
    )  # fmt: skip
    keys = info.hash_key_range
    assert (keys.starting_hash_key, keys.ending_hash_key) == (0, 2**128 - 1)


def test_an_answer_without_records_or_fields() -> None:
    """``{}`` and ``"Records": null`` are answers without records (nothing else set)."""
    for body in (b"{}", b'{"Records":null,"MillisBehindLatest":null}'):
        got = parse_answer(body)
        assert (len(got), got.next_iterator, got.millis_behind_latest) == (0, None, None)
        assert got.data.type == pa.binary()
