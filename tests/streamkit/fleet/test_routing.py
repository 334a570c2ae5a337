"""Routing is stable: pinned hashes computed with the reference C implementation of XXH64
(the ``xxhash`` package) over encodings written by hand with ``struct``, per key dtype
and with nulls; the vectorised hash agrees with the reference on random inputs."""

from __future__ import annotations

import random
import struct
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import numpy as np
import polars as pl
import pytest
import xxhash

from streamkit.errors import PlanError
from streamkit.fleet.routing import (
    check_join_routable,
    check_routable,
    key_hash,
    partition_ids,
    xxh64_rows,
)

# (frame of one row, xxh64 of the hand encoding, computed once with xxhash.xxh64_intdigest)
PINNED = [
    # ("a", 1): 0x01, len 1 (u32 LE), b"a", then 0x01, int64 LE 1
    (pl.DataFrame({"s": ["a"], "i": [1]}), 0xB06F7ED6680F2E03),
    # (null, -1): 0x00, then 0x01 and -1 as int64 LE
    (pl.DataFrame({"s": [None], "i": [-1]}, schema={"s": pl.String, "i": pl.Int64}),
     0xC8FCEC59147D2C76),
    (pl.DataFrame({"s": [""]}), 0xF3E5687AF1878726),  # 0x01, length 0
    (pl.DataFrame({"f": [1.5]}), 0x937FF86BCE045D70),  # 0x01, binary64 of 1.5 LE
    (pl.DataFrame({"f": [1.5]}, schema={"f": pl.Float32}), 0x937FF86BCE045D70),
    (pl.DataFrame({"b": [True]}), 0x52FC4823A13C997A),  # 0x01 0x01
    (pl.DataFrame({"t": [datetime(2026, 1, 1, tzinfo=UTC)]},
                  schema={"t": pl.Datetime("us", "UTC")}), 0x72968F9206B8A8E2),
    (pl.DataFrame({"d": [date(2026, 1, 1)]}), 0x7CC0D95850F15F67),  # day 20454
    (pl.DataFrame({"u": [2**64 - 1]}, schema={"u": pl.UInt64}), 0xE4A42358FE73E0B6),
    (pl.DataFrame({"s": ["x" * 40]}), 0xC6ED01C343AF4546),  # >= 32 bytes: the stripe loop
    # 0x01, 1_000_000 µs as int64
    (pl.DataFrame({"x": [timedelta(seconds=1)]}, schema={"x": pl.Duration("us")}),
     0x4FAD35E551ED10C6),
    (pl.DataFrame({"x": [time(1, 2, 3)]}), 0xDF65FE0B9C406926),  # 3723e9 ns as int64
    # decimals as their text: 0x01, length 4, b"1.50"
    (pl.DataFrame({"x": [Decimal("1.50")]}, schema={"x": pl.Decimal(10, 2)}),
     0xFB7F38FD5980E8DF),
    (pl.DataFrame({"x": [b"\x00\xff"]}), 0x4F9275781200AEB5),  # 0x01, length 2, the bytes
    (pl.DataFrame({"x": ["b"]}, schema={"x": pl.Enum(["a", "b"])}), 0x5FFFEBB71A6B7D38),
    (pl.DataFrame({"x": [-3]}, schema={"x": pl.Int8}), 0xEF9619BF618EFA41),  # two's compl.
    (pl.DataFrame({"x": [None]}, schema={"x": pl.Null}), 0xE934A84ADB052768),  # 0x00
]  # fmt: skip
INT_TYPES = [pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32]


@pytest.mark.parametrize(("frame", "expected"), PINNED)
def test_pinned_hashes(frame: pl.DataFrame, expected: int) -> None:
    assert int(key_hash(frame)[0]) == expected


@pytest.mark.parametrize("dtype", INT_TYPES)
def test_every_integer_width_hashes_as_int64(dtype: pl.DataType) -> None:
    frame = pl.DataFrame({"s": ["a"], "i": [1]}, schema={"s": pl.String, "i": dtype})
    assert int(key_hash(frame)[0]) == 0xB06F7ED6680F2E03


def test_categorical_hashes_as_its_text_and_zeros_and_nans_are_one_key() -> None:
    cat = pl.DataFrame({"s": ["a"], "i": [1]}).with_columns(pl.col("s").cast(pl.Categorical))
    assert int(key_hash(cat)[0]) == 0xB06F7ED6680F2E03
    floats = key_hash(pl.DataFrame({"f": [0.0, -0.0, float("nan"), -float("nan")]}))
    assert floats[0] == floats[1]
    assert floats[2] == floats[3]


def _hand(values: list[tuple[str | None, int | None]]) -> list[bytes]:
    out = []
    for s, i in values:
        enc = b"\x00" if s is None else b"\x01" + struct.pack("<I", len(s.encode())) + s.encode()
        enc += b"\x00" if i is None else b"\x01" + struct.pack("<q", i)
        out.append(enc)
    return out


def test_random_keys_match_the_reference_over_hand_encodings() -> None:
    rng = random.Random(7)
    alphabet = "abcé☃ xyz0123"
    values = [
        (None if rng.random() < 0.1 else "".join(rng.choices(alphabet, k=rng.randint(0, 50))),
         None if rng.random() < 0.1 else rng.randint(-(2**63), 2**63 - 1))
        for _ in range(2000)
    ]  # fmt: skip
    frame = pl.DataFrame(values, schema={"s": pl.String, "i": pl.Int64}, orient="row")
    want = np.array([xxhash.xxh64_intdigest(b) for b in _hand(values)], np.uint64)
    assert (key_hash(frame) == want).all()


def test_the_vectorised_hash_is_xxh64_on_random_bytes() -> None:
    rng = random.Random(3)
    blobs = [rng.randbytes(rng.randint(0, 140)) for _ in range(3000)]
    offsets = np.zeros(len(blobs) + 1, np.int64)
    np.cumsum([len(b) for b in blobs], out=offsets[1:])
    got = xxh64_rows(np.frombuffer(b"".join(blobs), np.uint8), offsets)
    assert got.tolist() == [xxhash.xxh64_intdigest(b) for b in blobs]


def test_partitions_follow_the_key_only_and_keep_null_keys_together() -> None:
    frame = pl.DataFrame({"k": ["a", None, "a", None, "b"], "w": [1, 2, 3, 4, 5]})
    ids = partition_ids(frame, ["k"], 4)
    assert ids[0] == ids[2]
    assert ids[1] == ids[3]
    assert ids.tolist() == [int(h % np.uint64(4)) for h in key_hash(frame.select("k"))]
    # no group key: every row in the partition of the empty key, xxh64(b"") % 4
    assert partition_ids(frame, [], 4).tolist() == [0xEF46DB3751D8E999 % 4] * 5


def test_unroutable_key_types_are_refused_naming_the_column() -> None:
    with pytest.raises(PlanError, match="group key 'l' of type List"):
        check_routable(pl.Schema({"l": pl.List(pl.Int64)}))


def test_chunked_sliced_and_categorical_frames_hash_as_their_values() -> None:
    whole = pl.DataFrame({"k": ["x", None, "yy", "zzz"] * 50, "i": list(range(200))})
    chunked = pl.concat([whole.slice(0, 77), whole.slice(77)], rechunk=False)
    assert chunked.n_chunks() == 2
    assert (key_hash(chunked) == key_hash(whole)).all()
    assert (key_hash(whole.slice(13, 100)) == key_hash(whole)[13:113]).all()
    categorical = whole.with_columns(pl.col("k").cast(pl.Categorical))
    assert (key_hash(categorical) == key_hash(whole)).all()


def test_join_keys_of_both_sides_hash_equal_values_equally() -> None:
    """An Int32 key meets an Int64 (or UInt16) one, a Float32 a Float64 one: equal values
    land in one partition; types whose values the join cannot compare are refused per
    pair, naming both columns and the fix."""
    left = pl.DataFrame({"id": pl.Series([1, -7, None, 40000], dtype=pl.Int32),
                         "x": pl.Series([0.5, -2.0, 3.25, None], dtype=pl.Float32)})  # fmt: skip
    right = pl.DataFrame({"rid": pl.Series([1, -7, None, 40000], dtype=pl.Int64),
                          "rx": pl.Series([0.5, -2.0, 3.25, None], dtype=pl.Float64)})  # fmt: skip
    check_join_routable([("id", "rid"), ("x", "rx")], left.schema, right.schema)
    ids = partition_ids(left, ["id", "x"], 64)
    assert list(ids) == list(partition_ids(right, ["rid", "rx"], 64))
    check_join_routable([("id", "u")], left.schema, pl.Schema({"u": pl.UInt16()}))
    refused = [pl.Float64(), pl.String(), pl.Datetime("us")]
    for dtype in refused:
        with pytest.raises(PlanError, match=r"join key 'id' \(Int32, left side\) = 'r'"):
            check_join_routable([("id", "r")], left.schema, pl.Schema({"r": dtype}))
    with pytest.raises(PlanError, match=r"join key 'r' of type List\(Int64\) \(right side\)"):
        check_join_routable([("id", "r")], left.schema, pl.Schema({"r": pl.List(pl.Int64())}))
