"""Chunks: the header and rows round-trip, parts fit the byte budget and keep the rows in
order, and damaged or foreign bytes are refused with ChunkError, never a crash."""

from __future__ import annotations

import io
import json
import random
from dataclasses import replace

import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamkit.errors import StreamkitError
from streamkit.fleet.chunk import ChunkError, ChunkHeader, decode_chunk, encode_chunk, split_parts

HEADER = ChunkHeader("q", "shardId-000000000001", "4955", "4977", 0, 1, 1_767_225_600_000, False, 0)


def _rows(n: int, seed: int = 0) -> pl.DataFrame:
    rng = random.Random(seed)
    return pl.DataFrame({
        "k": [rng.choice(["a", "b", None, "ccccccccccccccccccccc"]) for _ in range(n)],
        "__n": [rng.randint(1, 9) for _ in range(n)],
        "x": [rng.random() for _ in range(n)],
    })  # fmt: skip


def test_header_and_rows_round_trip() -> None:
    rows = _rows(50)
    header, back = decode_chunk(encode_chunk(HEADER, rows))
    assert header == ChunkHeader(**{**HEADER.__dict__, "rows": 50})
    assert back.equals(rows)
    meta = pa.ipc.open_stream(encode_chunk(HEADER, rows)).schema.metadata
    body = json.loads(meta[b"streamkit.chunk"])
    assert {"v", "query", "source", "first", "last", "part", "parts", "max_event",
            "ended", "rows", "crc32"} == set(body)  # fmt: skip


def test_parts_fit_the_budget_and_keep_the_rows_in_order() -> None:
    rows = _rows(3000, seed=1)
    parts = split_parts(HEADER, rows, budget=8 * 1024)
    assert len(parts) > 1
    assert all(len(p) <= 8 * 1024 for p in parts)
    decoded = [decode_chunk(p) for p in parts]
    assert [h.part for h, _ in decoded] == list(range(len(parts)))
    assert {h.parts for h, _ in decoded} == {len(parts)}
    assert pl.concat([f for _, f in decoded]).equals(rows)


def test_an_empty_partition_still_gets_one_chunk() -> None:
    (only,) = split_parts(HEADER, _rows(0))
    header, rows = decode_chunk(only)
    assert (header.part, header.parts, header.rows, rows.height) == (0, 1, 0, 0)


def test_a_row_larger_than_the_budget_is_refused() -> None:
    with pytest.raises(ChunkError, match="budget"):
        split_parts(HEADER, pl.DataFrame({"s": ["x" * 5000]}), budget=1024)


def _foreign_stream() -> bytes:
    sink = io.BytesIO()
    pl.DataFrame({"a": [1]}).write_ipc_stream(sink)
    return sink.getvalue()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a streamkit chunk"),
        (b"hello, world", "not a streamkit chunk"),
        (b'{"v": 1}', "not a streamkit chunk"),
        (_foreign_stream(), "without the streamkit.chunk header"),
    ],
)
def test_foreign_bytes_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(ChunkError, match=message):
        decode_chunk(data)


def test_a_cut_or_garbled_chunk_is_refused() -> None:
    good = encode_chunk(HEADER, _rows(40))
    with pytest.raises(ChunkError):
        decode_chunk(good[: len(good) // 2])
    garbled = bytearray(good)
    garbled[-100] ^= 0x10  # a value in the last buffer
    with pytest.raises(ChunkError, match="checksum"):
        decode_chunk(bytes(garbled))
    assert issubclass(ChunkError, StreamkitError)


@pytest.mark.parametrize("version", [0, 3, True])
def test_another_version_is_refused_with_the_fix(version: int) -> None:
    table = pl.DataFrame({"a": [1]}).to_arrow()
    meta = json.dumps({**HEADER.__dict__, "v": version}).encode()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema.with_metadata({b"streamkit.chunk": meta})) as w:
        w.write_table(table)
    with pytest.raises(ChunkError, match="one streamkit version"):
        decode_chunk(bytes(sink.getvalue()))


def test_version_2_is_written_and_a_version_1_chunk_is_still_read() -> None:
    """Version 1 (before ``__late_rows``) as an older worker wrote it, checksum included."""
    assert decode_chunk(encode_chunk(HEADER, _rows(3)))[0].v == 2
    old = ChunkHeader(**{**HEADER.__dict__, "v": 1})
    header, back = decode_chunk(encode_chunk(old, _rows(5)))
    assert header == replace(old, rows=5)
    assert back.equals(_rows(5))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.data())
def test_any_damage_is_refused_or_harmless(data: st.DataObject) -> None:
    good = encode_chunk(HEADER, _rows(20))
    damaged = bytearray(good)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(damaged) - 1))
        damaged[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(damaged)))
    try:
        header, rows = decode_chunk(bytes(damaged[:cut]))
    except ChunkError:
        return
    # accepted: only when the damage touched nothing the rows or header are made of
    assert header == decode_chunk(good)[0]
    assert rows.equals(decode_chunk(good)[1])


def test_a_stream_round_trips_and_is_part_of_the_shards_key() -> None:
    """A join's chunk names its stream; a one-stream chunk writes none (its bytes are
    those of before); a stream other than left or right is refused."""
    header, _ = decode_chunk(encode_chunk(replace(HEADER, stream="right"), _rows(3)))
    assert (header.stream, header.key) == ("right", "right/shardId-000000000001")
    assert HEADER.key == HEADER.source
    meta = pa.ipc.open_stream(encode_chunk(HEADER, _rows(3))).schema.metadata
    assert "stream" not in json.loads(meta[b"streamkit.chunk"])
    with pytest.raises(ChunkError, match="field 'stream' is 'middle'"):
        decode_chunk(encode_chunk(replace(HEADER, stream="middle"), _rows(3)))


def test_an_idle_marker_round_trips_and_other_chunks_write_no_idle_field() -> None:
    """An idle marker (no rows, ``first == last``, not ended) says ``idle``; every other
    chunk is the bytes it was (no ``idle`` field). ``idle`` is neither a start marker nor
    an end marker, and a chunk with rows or an end that says ``idle`` is refused."""
    marker = replace(HEADER, first="4977", last="4977", max_event=None, idle=True)
    header, rows = decode_chunk(encode_chunk(marker, pl.DataFrame()))
    assert (header.is_idle, header.is_start, header.is_end) == (True, False, False)
    assert rows.height == 0
    start = replace(marker, idle=False)
    assert decode_chunk(encode_chunk(start, pl.DataFrame()))[0].is_start
    meta = pa.ipc.open_stream(encode_chunk(HEADER, _rows(3))).schema.metadata
    assert "idle" not in json.loads(meta[b"streamkit.chunk"])
    with pytest.raises(ChunkError, match="damaged chunk header"):
        decode_chunk(encode_chunk(replace(HEADER, idle=True), _rows(3)))  # rows: not a marker
    with pytest.raises(ChunkError, match="damaged chunk header"):
        decode_chunk(encode_chunk(replace(marker, ended=True), pl.DataFrame()))
