"""The KPL aggregate encoder against hand-computed bytes and against the decoder.

The literal below is derived by hand from the KPL's ``messages.proto`` (field keys
``number << 3 | wire``), not from the encoder; the MD5 trailer is hashlib's over it.
"""

from __future__ import annotations

import hashlib
import random

import pytest
from streamkit_kinesis.kpl.deaggregate import MAGIC, is_aggregated
from streamkit_kinesis.kpl.encoder import AggregateBuilder, varint, varint_size
from streamkit_kinesis.kpl.protobuf import SubRecord, parse_aggregated

# AggregatedRecord { partition_key_table = ["k"], explicit_hash_key_table = ["5"],
#   records = [ {pk 0, data "a"}, {pk 0, ehk 0, data "bc"} ] }, tables first, then records
# (what protobuf writers and the KPL emit).
LITERAL = bytes.fromhex(
    "0a016b"  # field 1 (key table), length 1, "k"
    "120135"  # field 2 (hash key table), length 1, "5"
    "1a05" "0800" "1a0161"  # field 3 (record), length 5: pk index 0, data "a"
    "1a08" "0800" "1000" "1a026263"  # record, length 8: pk 0, ehk 0, data "bc"
)  # fmt: skip


def test_varint_literals() -> None:
    assert [varint(n) for n in (0, 1, 127, 128, 300, 16384)] == [
        b"\x00", b"\x01", b"\x7f", b"\x80\x01", b"\xac\x02", b"\x80\x80\x01",
    ]  # fmt: skip
    assert [varint_size(n) for n in (0, 127, 128, 16383, 16384, 2**64 - 1)] == [1, 1, 2, 2, 3, 10]


def test_tiny_aggregate_is_the_hand_computed_bytes() -> None:
    b = AggregateBuilder()
    b.add(b"a", "k", None)
    b.add(b"bc", "k", "5")
    assert b.build() == MAGIC + LITERAL + hashlib.md5(LITERAL).digest()
    assert b.size == len(b.build()) == 4 + len(LITERAL) + 16


def test_literal_decodes_to_the_records_put() -> None:
    agg = parse_aggregated(LITERAL)
    assert (agg.partition_keys, agg.explicit_hash_keys) == (["k"], ["5"])
    assert agg.records == [SubRecord(0, None, b"a"), SubRecord(0, 0, b"bc")]


@pytest.mark.parametrize("seed", range(5))
def test_encoder_round_trips_through_the_decoder(seed: int) -> None:
    rng = random.Random(seed)
    keys = [f"key-{i}" * rng.randint(1, 30) for i in range(rng.randint(1, 200))]
    hashes = [str(rng.randrange(2**128)) for _ in range(5)]
    put: list[tuple[bytes, str, str | None]] = []
    b = AggregateBuilder()
    for _ in range(rng.randint(1, 400)):
        data = rng.randbytes(rng.choice([0, 1, 100, 127, 128, 20_000]))
        pk, ehk = rng.choice(keys), rng.choice([None, *hashes])
        assert b.size_with(data, pk, ehk) >= b.size
        expected = b.size_with(data, pk, ehk)
        b.add(data, pk, ehk)
        assert b.size == expected
        put.append((data, pk, ehk))
    built = b.build()
    assert len(built) == b.size
    assert is_aggregated(built)
    assert built[-16:] == hashlib.md5(built[4:-16]).digest()
    agg = parse_aggregated(built[4:-16])
    table: list[str | None] = [None, *agg.explicit_hash_keys]
    got = [
        (r.data, agg.partition_keys[r.partition_key_index],
         table[0 if r.explicit_hash_key_index is None else r.explicit_hash_key_index + 1])
        for r in agg.records
    ]  # fmt: skip
    assert got == put
    assert len(agg.partition_keys) == len({p for _, p, _ in put})
    assert all(isinstance(r, SubRecord) for r in agg.records)
